"""What one append costs the writing process, layer by layer (CPU microseconds per call).

    python -m benchmarks.append_cost [--calls N]

One task appends one small ``reply_delta`` at a time to a private redis-server, on the event loop
chatcore's processes use (uvloop when installed), and measures this process's CPU time per call:

* ``PING`` through redis-py: what any command costs, whatever it does;
* ``XADD`` of an equivalent JSON entry through redis-py (what the bare-bones worker does);
* the append script by ``EVALSHA`` (the version check, the ``XADD``, the ``PUBLISH``);
* :meth:`RedisEventStore.append` (the script, its deadline guard, encoding, the result);
* :meth:`ChatService.execute` with the core's ``append_text`` decision (what the worker does).

CPU time, not wall time: it is what limits a saturated worker, and it barely moves when the
machine is busy.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable

import orjson

from benchmarks.stack import start_redis
from chatcore import decisions
from chatcore.events import ReplyDelta
from chatcore.view import project
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.codec import encode_event
from chatcore_adapters.redis import RedisEventStore, RedisSettings, connect
from chatcore_api import loops

TEXT = "hello world " * 3


async def measure(url: str, calls: int) -> dict[str, float]:
    conn = connect(RedisSettings(url=url, client_name="chatcore-bench"))
    store = RedisEventStore(conn)
    core = bootstrap(store=store, redis=conn)
    clock, service = core.clock, core.service
    try:
        opened = await service.open_session()
        sid, conv = opened.session_id, opened.conversation_id
        sent = await service.submit_message(
            sid, conversation_id=conv, client_message_id="c1", text="hi"
        )
        view = await service.load(sid)
        mid = sent.message_id
        await service.execute(
            sid,
            view,
            lambda v: decisions.start_reply(
                v, clock.now(), message_id=mid, reply_id="rep_bench", model="bench"
            ),
        )
        script = store._append_script
        keys = conn.keys
        counter = iter(range(10**9))

        async def ping() -> None:
            await conn.client.ping()

        async def xadd() -> None:
            entry = {"type": "reply_delta", "reply_id": "r", "text": TEXT, "at": time.time()}
            await conn.client.xadd(keys.prefix + "bench:plain", {"e": orjson.dumps(entry)})

        async def evalsha() -> None:
            event = ReplyDelta(at=clock.now(), conversation_id=conv, reply_id="x", text=TEXT)
            reply = await script(
                keys=[keys.events(sid)],
                args=[
                    view.version or "",
                    f"t{next(counter)}",
                    keys.live(sid),
                    "0",  # no retention
                    encode_event(event),
                ],
            )
            view.version = reply[1].decode()

        async def append() -> None:
            event = ReplyDelta(at=clock.now(), conversation_id=conv, reply_id="x", text=TEXT)
            project(view, await store.append(sid, [event], expected_version=view.version))

        async def execute() -> None:
            now = clock.now()
            await service.execute(
                sid,
                view,
                lambda v: decisions.append_text(
                    v, now, message_id=mid, reply_id="rep_bench", text=TEXT
                ),
            )

        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("redis-py PING (any command's floor)", ping),
            ("redis-py XADD (bare-bones)", xadd),
            ("append script by EVALSHA", evalsha),
            ("RedisEventStore.append", append),
            ("ChatService.execute(append_text)", execute),
        ]
        out: dict[str, float] = {}
        for name, step in steps:
            for _ in range(min(500, calls)):
                await step()  # warm-up
            started = time.process_time()
            for _ in range(calls):
                await step()
            out[name] = round((time.process_time() - started) / calls * 1e6, 1)
        return out
    finally:
        await conn.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args(argv)
    server = start_redis()
    try:
        result = loops.run(measure(server.url, args.calls))
    finally:
        server.close()
    print(f"CPU per call ({loops.loop_name()} loop, {args.calls:,} calls each):")
    for name, micros in result.items():
        print(f"  {name:<36} {micros:>7.1f} µs")


if __name__ == "__main__":
    main()
