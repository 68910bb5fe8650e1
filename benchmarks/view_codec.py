"""What writing and reading a cached view costs, the codec's way beside orjson's.

    python -m benchmarks.view_codec [--turns 5,50,200]

A session of N answered turns (the demo model's answers) is folded into a
:class:`SessionView`; then, for each size, the best of 7 runs of 20 calls, in microseconds:

* the codec's :func:`encode_view` and :func:`decode_view` (pydantic writes and reads the
  view's JSON itself);
* the same bytes through orjson: ``orjson.dumps`` of ``model_dump(mode="json")``, and
  ``model_validate`` of ``orjson.loads`` (how the codec did it before; orjson is in the server
  extra, not in the base install).

It is why the codec does not need orjson (``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from chatcore.view import SessionView
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.codec import decode_view, encode_view
from chatcore_adapters.llm import DemoLLM


async def answered_session(turns: int) -> SessionView:
    core = bootstrap(llm=DemoLLM(delay=0))
    chat, replies, queue = core.service, core.generator, core.queue
    session = await chat.open_session(display_name="Ada")
    for n in range(turns):
        await chat.submit_message(
            session.session_id,
            conversation_id=session.conversation_id,
            client_message_id=f"m{n}",
            text=f"Question {n}: what is an event log?",
        )
        (work,) = await queue.claim("bench", count=1, block=1)
        await replies.generate(work.item, delivery_id=work.delivery_id, owner="bench")
        await queue.ack(work)
    return await chat.load(session.session_id)


def best_us(call: Callable[[], Any]) -> float:
    return min(timeit.repeat(call, number=20, repeat=7)) / 20 * 1e6


def measure(view: SessionView) -> dict[str, float]:
    stored = encode_view(view)
    snapshot = SessionView.SNAPSHOT_VERSION
    through_orjson = orjson.dumps({"snapshot": snapshot, "view": view.model_dump(mode="json")})
    assert through_orjson == stored, "the codec no longer writes what orjson writes"
    assert decode_view(stored) == view
    return {
        "kb": len(stored) / 1000,
        "encode_view_us": best_us(lambda: encode_view(view)),
        "orjson_encode_us": best_us(
            lambda: orjson.dumps({"snapshot": snapshot, "view": view.model_dump(mode="json")})
        ),
        "decode_view_us": best_us(lambda: decode_view(stored)),
        "orjson_decode_us": best_us(
            lambda: SessionView.model_validate(orjson.loads(stored)["view"])
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.view_codec")
    parser.add_argument("--turns", default="5,50,200", help="comma-separated session sizes")
    args = parser.parse_args()
    print(f"{'turns':>6} {'KB':>6}  {'encode':>8} {'orjson':>8}  {'decode':>8} {'orjson':>8}")
    for turns in (int(t) for t in args.turns.split(",")):
        row = measure(asyncio.run(answered_session(turns)))
        print(
            f"{turns:>6} {row['kb']:>6.0f}  {row['encode_view_us']:>8.0f} "
            f"{row['orjson_encode_us']:>8.0f}  {row['decode_view_us']:>8.0f} "
            f"{row['orjson_decode_us']:>8.0f}"
        )


if __name__ == "__main__":
    main()
