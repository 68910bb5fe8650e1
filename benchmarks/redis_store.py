"""How fast the Redis event store writes and restores sessions.

    python -m benchmarks.redis_store          # from the repository root
    python -m benchmarks.redis_store --quick  # fewer runs, for a smoke test

Starts its own ``redis-server`` on a free loopback port (nothing else is touched), prints a
table and writes ``benchmarks/results/redis_store.json``. Measured in one run:

* appends per second through the adapter, one event per append and batches of 50;
* raw redis-py baselines on the same server: pipelined ``XADD`` and paged ``XRANGE``;
* restoring a 10,000-event session with ``ChatService.load``, from an empty cache and from a
  warm one (median and p95), with a breakdown of the cold path (Redis, decoding, fold, cache).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "src", ROOT / "src" / "adapters"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import redis  # noqa: E402
import redis.asyncio  # noqa: E402

from chatcore.events import (  # noqa: E402
    ConversationStarted,
    Event,
    MessageSubmitted,
    ReplyCompleted,
    ReplyDelta,
    ReplyStarted,
    SessionOpened,
    Usage,
)
from chatcore.ports import EventStore, SessionCache  # noqa: E402
from chatcore.service import ChatService  # noqa: E402
from chatcore.view import SessionView, project  # noqa: E402
from chatcore_adapters.bootstrap import bootstrap  # noqa: E402
from chatcore_adapters.codec import decode_records, encode_event, encode_view  # noqa: E402
from chatcore_adapters.redis import (  # noqa: E402
    RedisConnection,
    RedisEventStore,
    RedisSessionCache,
    RedisSettings,
    connect,
)
from chatcore_adapters.system import RandomIds  # noqa: E402
from chatcore_api.gc_tuning import freeze_startup_heap  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "redis_store.json"
TARGET_COLD_MS = 150.0
_TEXT = (
    "the quick brown fox jumps over a lazy dog while streams of tokens arrive from the model "
    "and every delta is an event in the session log folded into the view"
)
WORDS = tuple(_TEXT.split())


# --- machine and server ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "redis_server": server,
        "redis_py": redis.__version__,
        "platform": platform.platform(),
    }


def start_server() -> Any:
    from tests.support.redis_server import RedisServer

    server = RedisServer()
    server.start()
    return server


# --- workloads --------------------------------------------------------------------------------


def realistic_session(sid: str, turns: int = 500, deltas: int = 17) -> list[Event]:
    """Opening events, then ``turns`` x (message, reply started, deltas, reply completed)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[Event] = [
        SessionOpened(at=t0, session_id=sid),
        ConversationStarted(at=t0, conversation_id="c1", title="New chat"),
    ]
    for n in range(turns):
        at = t0 + timedelta(seconds=n * 30)
        text = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(18))
        events.append(
            MessageSubmitted(
                at=at,
                conversation_id="c1",
                message_id=f"msg_{n:06d}",
                client_message_id=f"cm_{n:06d}",
                text=text,
            )
        )
        reply = f"rep_{n:06d}"
        events.append(
            ReplyStarted(
                at=at,
                conversation_id="c1",
                reply_id=reply,
                in_reply_to=f"msg_{n:06d}",
                model="demo-model",
            )
        )
        for k in range(deltas):
            chunk = " ".join(WORDS[(n * 7 + k * 3 + j) % len(WORDS)] for j in range(4)) + " "
            events.append(ReplyDelta(at=at, conversation_id="c1", reply_id=reply, text=chunk))
        events.append(
            ReplyCompleted(
                at=at,
                conversation_id="c1",
                reply_id=reply,
                in_reply_to=f"msg_{n:06d}",
                model="demo-model",
                usage=Usage(prompt_tokens=120 + n, completion_tokens=60, cost_usd=0.0004),
            )
        )
    return events


async def append_all(store: EventStore, sid: str, events: Sequence[Event], batch: int) -> None:
    version: str | None = None
    for start in range(0, len(events), batch):
        recorded = await store.append(sid, events[start : start + batch], expected_version=version)
        version = recorded[-1].position


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
        "runs": len(ordered),
    }


async def timed(runs: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


# --- the measurements -------------------------------------------------------------------------


async def bench_appends(conn: RedisConnection, quick: bool) -> dict[str, Any]:
    store = RedisEventStore(conn)
    clock_events = realistic_session("x" * 22, turns=20 if quick else 200)
    deltas = [e for e in clock_events if isinstance(e, ReplyDelta)]
    single_n = min(len(deltas), 500 if quick else 3000)

    sid = RandomIds().session_id()
    t = time.perf_counter()
    await append_all(store, sid, deltas[:single_n], batch=1)
    single_s = time.perf_counter() - t

    sid = RandomIds().session_id()
    t = time.perf_counter()
    await append_all(store, sid, deltas, batch=50)
    batch_s = time.perf_counter() - t
    return {
        "single_event_appends_per_s": round(single_n / single_s),
        "batched_50_appends_per_s": round(len(deltas) / 50 / batch_s),
        "batched_50_events_per_s": round(len(deltas) / batch_s),
    }


async def bench_raw(client: redis.asyncio.Redis, quick: bool) -> dict[str, Any]:
    payload = encode_event(realistic_session("x" * 22, turns=1)[5])
    key = "bench:raw"
    total, chunk = (5_000 if quick else 20_000), 1000
    t = time.perf_counter()
    for _ in range(total // chunk):
        pipe = client.pipeline(transaction=False)
        for _ in range(chunk):
            pipe.xadd(key, {"e": payload})
        await pipe.execute()
    xadd_s = time.perf_counter() - t

    async def read_all() -> int:
        start, count = "-", 0
        while True:
            page: Any = await client.xrange(key, start, "+", count=1000)
            count += len(page)
            if len(page) < 1000:
                return count
            start = "(" + page[-1][0].decode()

    runs = await timed(3 if quick else 10, read_all)
    await client.delete(key)
    return {
        "raw_pipelined_xadd_per_s": round(total / xadd_s),
        "raw_xrange_entries_per_s": round(total / statistics.median(runs)),
    }


async def restore_runs(
    service: ChatService, cache: SessionCache, sid: str, runs: int
) -> tuple[dict[str, Any], Callable[[], Awaitable[None]]]:
    """``ChatService.load`` of ``sid``, ``runs`` times from an empty cache (its view deleted
    before each load) after two such loads to warm up, then ``runs`` times from a warm one:
    the medians, the collector's time per empty-cache load, and the empty-cache load itself
    (to run again)."""

    async def cold() -> None:
        await cache.delete(sid)
        await service.load(sid)

    async def warm() -> None:
        await service.load(sid)

    for _ in range(2):  # warm-up (imports, script load, allocator)
        await cold()
    with GcTimer() as gc_timer:
        cold_runs = await timed(runs, cold)
    await service.load(sid)
    warm_runs = await timed(runs, warm)
    measured = {
        "events": len(await service.store.read(sid)),
        "view_bytes": len(encode_view(await service.load(sid))),
        "cold_cache": stats(cold_runs),
        "cold_cache_gc_ms_per_load": round(gc_timer.seconds / runs * 1000, 2),
        "warm_cache": stats(warm_runs),
    }
    return measured, cold


async def bench_restore(conn: RedisConnection, quick: bool) -> dict[str, Any]:
    store = RedisEventStore(conn)
    cache = RedisSessionCache(conn, ttl=600)
    service = bootstrap(store=store, cache=cache).service
    sid = RandomIds().session_id()
    await append_all(store, sid, realistic_session(sid), batch=500)
    runs = 5 if quick else 25
    measured, cold = await restore_runs(service, cache, sid, runs)
    steps = await cold_path_steps(conn, store, cache, sid, runs)
    # The same cold load as `chatcore serve` and `chatcore worker` run it: with the start-up
    # heap frozen out of the collector's way (last, as the freeze is undone only roughly).
    freeze_startup_heap()
    frozen_runs = await timed(runs, cold)
    gc.unfreeze()
    return {
        **measured,
        "cold_cache_after_gc_freeze": stats(frozen_runs),
        "cold_breakdown_gc_paused_median_ms": steps,
    }


async def cold_path_steps(
    conn: RedisConnection, store: RedisEventStore, cache: RedisSessionCache, sid: str, runs: int
) -> dict[str, float]:
    """Where an empty-cache load's time goes: each step alone, medians in ms."""
    key = conn.keys.events(sid)

    async def raw_read() -> list[Any]:
        out: list[Any] = []
        start = "-"
        while True:
            page: Any = await conn.client.xrange(key, start, "+", count=1000)
            out.extend(page)
            if len(page) < 1000:
                return out
            start = "(" + page[-1][0].decode()

    raw_entries = await raw_read()
    records = await store.read(sid)
    view = project(SessionView(), records)
    # Pure CPU and I/O per step: the collector is paused here, its share is reported apart.
    gc.collect()
    gc.disable()
    breakdown = {
        "xrange_10k_ms": await timed(runs, raw_read),
        "decode_10k_ms": [
            _clock(lambda: decode_records((i.decode(), f[b"e"]) for i, f in raw_entries))
            for _ in range(runs)
        ],
        "store_read_10k_ms": await timed(runs, lambda: store.read(sid)),
        "fold_10k_ms": [_clock(lambda: project(SessionView(), records)) for _ in range(runs)],
        "encode_view_ms": [_clock(lambda: encode_view(view)) for _ in range(runs)],
        "cache_put_ms": await timed(runs, lambda: cache.put(sid, view)),
        "cache_get_ms": await timed(runs, lambda: cache.get(sid)),
    }
    gc.enable()
    return {name: round(statistics.median(v) * 1000, 2) for name, v in breakdown.items()}


class GcTimer:
    """Adds up the time the cyclic garbage collector runs while the block runs."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def _clock(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- output ---------------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"machine: {m['cores']} cores, {m['cpu']}; Python {m['python']}; redis-py {m['redis_py']}"
    )
    print(f"server:  {m['redis_server']}")
    print()
    print(f"{'writes':<44}{'rate':>14}")
    w = result["writes"]
    rows = [
        ("adapter append, 1 event per append", w["single_event_appends_per_s"], "appends/s"),
        ("adapter append, 50 events per append", w["batched_50_appends_per_s"], "appends/s"),
        ("adapter append, 50 events per append", w["batched_50_events_per_s"], "events/s"),
        ("raw redis-py XADD, pipelined x1000", w["raw_pipelined_xadd_per_s"], "entries/s"),
        ("raw redis-py XRANGE, pages of 1000", w["raw_xrange_entries_per_s"], "entries/s"),
    ]
    for name, value, unit in rows:
        print(f"  {name:<42}{value:>10,} {unit}")
    r = result["restore"]
    print()
    print(f"restore a session of {r['events']:,} events ({r['view_bytes']:,} bytes of view)")
    print(f"  {'ChatService.load':<28}{'median':>10}{'p95':>10}{'min':>10}{'runs':>6}")
    labels = (
        ("empty cache, default GC", "cold_cache"),
        ("empty cache, as served", "cold_cache_after_gc_freeze"),
        ("warm cache", "warm_cache"),
    )
    for label, key in labels:
        s = r[key]
        print(
            f"  {label:<28}{s['median_ms']:>8.1f}ms{s['p95_ms']:>8.1f}ms"
            f"{s['min_ms']:>8.1f}ms{s['runs']:>6}"
        )
    # `chatcore serve` and `chatcore worker` freeze their start-up heap: judge that setting.
    served = r["cold_cache_after_gc_freeze"]["median_ms"]
    verdict = "met" if served < TARGET_COLD_MS else "MISSED"
    print(f"  target: empty cache (as served) < {TARGET_COLD_MS:.0f} ms median: {verdict}")
    print(f"  cyclic GC during an empty-cache load: {r['cold_cache_gc_ms_per_load']:.1f} ms")
    print()
    print("  where the empty-cache time goes (each step alone, GC paused, median):")
    for name, value in r["cold_breakdown_gc_paused_median_ms"].items():
        print(f"    {name:<26}{value:>8.1f}ms")


async def main(quick: bool) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: nothing to benchmark")
    server = start_server()
    try:
        settings = RedisSettings(url=server.url, prefix="bench:", client_name="chatcore-bench")
        conn = connect(settings)
        raw = redis.asyncio.Redis.from_url(server.url)
        try:
            writes = await bench_appends(conn, quick)
            writes.update(await bench_raw(raw, quick))
            restore = await bench_restore(conn, quick)
        finally:
            await conn.aclose()
            await raw.aclose()
    finally:
        server.close()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "writes": writes,
        "restore": restore,
        "target_cold_median_ms": TARGET_COLD_MS,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    report(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    cli()
