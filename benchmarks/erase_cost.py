"""How long deleting a conversation holds Redis, by the size of the session's log.

    python -m benchmarks.erase_cost [--sizes 1000,10000,100000] [--repeats 3]

For each size, a session on a private redis-server gets two conversations whose events
alternate (one reply_delta of ~200 bytes each, half in each), and the first conversation is
deleted through :meth:`ChatService.delete_conversation`: the log is read, folded, and the erase
script rewrites the stream without the conversation's entries. Reported: the wall time of the
whole call, and of the script alone (Redis's own ``SLOWLOG`` duration, which is how long Redis
served nothing else), median of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.stack import start_redis
from chatcore.events import ConversationStarted, Event, ReplyDelta
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.redis import RedisEventStore, RedisSettings, connect
from chatcore_api import loops

TEXT = "lorem ipsum dolor sit amet " * 7  # ~190 characters


async def one(url: str, size: int) -> tuple[float, float]:
    conn = connect(RedisSettings(url=url, client_name="chatcore-bench", operation_timeout=60))
    core = bootstrap(store=RedisEventStore(conn), redis=conn)
    try:
        opened = await core.service.open_session()
        sid, first = opened.session_id, opened.conversation_id
        now = core.clock.now()
        version = (await core.store.read(sid))[-1].position
        started = ConversationStarted(at=now, conversation_id="other", title="other")
        version = (await core.store.append(sid, [started], expected_version=version))[-1].position
        batch: list[Event] = []
        for n in range(size):
            conv = first if n % 2 == 0 else "other"
            batch.append(ReplyDelta(at=now, conversation_id=conv, reply_id="r", text=TEXT))
            if len(batch) == 1000:
                version = (await core.store.append(sid, batch, expected_version=version))[
                    -1
                ].position
                batch = []
        if batch:
            await core.store.append(sid, batch, expected_version=version)
        await conn.client.config_set("slowlog-log-slower-than", "0")
        await conn.client.slowlog_reset()
        began = time.perf_counter()
        await core.service.delete_conversation(sid, conversation_id=first)
        wall = time.perf_counter() - began
        slow = await conn.client.slowlog_get(128)
        script = max(
            (e["duration"] for e in slow if bytes(e["command"]).upper().startswith(b"EVAL")),
            default=0,
        )
        await core.service.delete_session(sid)
        return wall, script / 1e6
    finally:
        await conn.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    server = start_redis()
    try:
        print("events in the log   whole delete (ms)   erase script in Redis (ms)")
        for size in (int(s) for s in args.sizes.split(",")):
            runs = [loops.run(one(server.url, size)) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs) * 1000
            script = statistics.median(r[1] for r in runs) * 1000
            print(f"{size:>17,}   {wall:>17.1f}   {script:>26.1f}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
