"""A worker's memory while the sessions it answers keep growing: does it stay flat?

    python -m benchmarks.worker_memory                  # 6 minutes
    python -m benchmarks.worker_memory --minutes 15 --json out.json

Two set-ups run side by side, each a private ``redis-server`` and one ``chatcore worker``
process with the benchmark model (30 tokens per reply, 30 ms apart, about one second a reply):

* ``growing``: every session chats for the whole run, a message every 12-24 s, so the history a
  reply belongs to grows all the time (as in the fault run, ``benchmarks.faults``);
* ``bounded``: the baseline: a session is replaced by a new one after 5 turns, so every reply
  belongs to a short session.

The messages come from this process, through :class:`~chatcore.service.ChatService` straight on
Redis (no API process: only the worker's memory is read). Every 15 s it samples each worker's
RSS. Over the steady window (from ``--settle`` seconds to the end) it prints the growth per
minute and fails a worker whose RSS grew by 5% or more. A worker whose memory followed the size
of the sessions it answers would pass ``bounded`` and fail ``growing``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import stack
from benchmarks.procs import Processes, rss_growth, rss_kib, terminate_as_interrupt
from benchmarks.stack import Model
from chatcore.errors import DomainError, PortError
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.redis import (
    RedisHeartbeats,
    RedisSettings,
    connect,
)

SAMPLE_EVERY = 15.0
MODEL = Model(tokens=30, delay=0.03)


@dataclass
class Side:
    """One set-up: its Redis, its worker, what its sessions did, its RSS over time."""

    name: str
    turns_per_session: int | None  # None: sessions live for the whole run
    redis: Any = None
    worker_pid: int = 0
    sent: int = 0
    refused: int = 0
    errors: int = 0
    sessions_opened: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)


async def chat(side: Side, sessions: int, think: tuple[float, float], until: float) -> None:
    """``sessions`` users, each sending a message every ``think`` seconds until ``until``."""
    conn = connect(RedisSettings(url=side.redis.url, client_name="chatcore-bench"))
    service = bootstrap(redis=conn).service
    rand = random.Random(f"{side.name}:7")

    async def user() -> None:
        await asyncio.sleep(rand.uniform(0, think[1]))
        while time.monotonic() < until:
            opened = await service.open_session()
            side.sessions_opened += 1
            turn = 0
            while time.monotonic() < until and (
                side.turns_per_session is None or turn < side.turns_per_session
            ):
                turn += 1
                try:
                    await service.submit_message(
                        opened.session_id,
                        conversation_id=opened.conversation_id,
                        client_message_id=f"m{turn}",
                        text=f"message {turn}: " + "a little context for the model " * 4,
                    )
                    side.sent += 1
                except DomainError:
                    side.refused += 1  # the previous reply is still streaming
                except PortError:
                    side.errors += 1
                await asyncio.sleep(rand.uniform(*think))

    try:
        await asyncio.gather(*(user() for _ in range(sessions)))
    finally:
        await conn.aclose()


async def sample(sides: list[Side], started: float, until: float) -> None:
    while time.monotonic() < until:
        for side in sides:
            kib = rss_kib(side.worker_pid)
            if kib is not None:
                side.samples.append((round(time.monotonic() - started, 1), kib))
        await asyncio.sleep(SAMPLE_EVERY)


def steady(side: Side, settle: float) -> dict[str, Any]:
    points = [(at, kib) for at, kib in side.samples if at >= settle]
    if len(points) < 2:
        return {"flat": False, "error": "too few samples in the steady window"}
    return rss_growth(points)


def run(minutes: float, sessions: int, settle: float, log_dir: Path) -> dict[str, Any]:
    sides = [Side("growing", None), Side("bounded", 5)]
    try:
        with Processes() as procs:
            for side in sides:
                side.redis = stack.start_redis()
                env = stack.chatcore_env(
                    MODEL, flush=0.015, concurrency=64, redis_url=side.redis.url
                )
                worker = procs.start(
                    stack.chatcore_proc(f"worker-{side.name}", ["worker"], env, log_dir, None)
                )
                side.worker_pid = worker.pid
            asyncio.run(drive(sides, sessions, minutes))
    finally:
        for side in sides:
            if side.redis is not None:
                side.redis.close()
    return {
        "minutes": minutes,
        "sessions_per_side": sessions,
        "settle_s": settle,
        "model": {"tokens": MODEL.tokens, "delay": MODEL.delay},
        "sides": {
            side.name: {
                "turns_per_session": side.turns_per_session,
                "messages_sent": side.sent,
                "refused_while_busy": side.refused,
                "errors": side.errors,
                "sessions_opened": side.sessions_opened,
                "rss_kib": side.samples,
                "steady": steady(side, settle),
            }
            for side in sides
        },
        "logs": str(log_dir),
    }


async def drive(sides: list[Side], sessions: int, minutes: float) -> None:
    for side in sides:
        await wait_for_worker(side.redis.url)
    started = time.monotonic()
    until = started + minutes * 60
    await asyncio.gather(
        sample(sides, started, until),
        *(chat(side, sessions, (12.0, 24.0), until) for side in sides),
    )


async def wait_for_worker(url: str, timeout: float = 60.0) -> None:
    conn = connect(RedisSettings(url=url, client_name="chatcore-bench"))
    try:
        async with asyncio.timeout(timeout):
            while not await RedisHeartbeats(conn).workers():  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.2)
    finally:
        await conn.aclose()


def render(result: dict[str, Any]) -> str:
    lines = [
        f"worker memory, {result['sessions_per_side']} sessions per side, "
        f"{result['minutes']:g} min (steady window from {result['settle_s']:g} s)",
        f"{'side':<10} {'messages':>9} {'sessions':>9} {'RSS first':>10} {'RSS last':>9} "
        f"{'KiB/min':>8} {'growth':>7}  flat",
    ]
    for name, side in result["sides"].items():
        s = side["steady"]
        if "error" in s:
            lines.append(f"{name:<10} {s['error']}")
            continue
        lines.append(
            f"{name:<10} {side['messages_sent']:>9,} {side['sessions_opened']:>9,} "
            f"{s['rss_kib_first'] / 1024:>8.1f}MB {s['rss_kib_last'] / 1024:>7.1f}MB "
            f"{s['kib_per_min']:>8.1f} {s['growth'] * 100:>6.1f}%  {'yes' if s['flat'] else 'NO'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--sessions", type=int, default=360, help="per side (about 20 msg/s)")
    parser.add_argument("--settle", type=float, default=120.0, help="seconds before the window")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    if args.minutes * 60 <= args.settle + 2 * SAMPLE_EVERY:
        parser.error("the run must last longer than --settle plus two samples")
    log_dir = Path(tempfile.mkdtemp(prefix="chatcore-worker-memory-"))
    with terminate_as_interrupt():
        result = run(args.minutes, args.sessions, args.settle, log_dir)
    print(render(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    flat = all(side["steady"].get("flat") for side in result["sides"].values())
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
