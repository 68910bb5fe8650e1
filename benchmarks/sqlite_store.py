"""How fast the SQLite event store writes and restores sessions, threaded or on aiosqlite.

    python -m benchmarks.sqlite_store            # from the repository root
    python -m benchmarks.sqlite_store --quick    # fewer appends and runs, a smoke test
    python -m benchmarks.sqlite_store --rounds 5 # more rounds (default 3)

Every variant writes the same schema (``chatcore_adapters.sqlite.schema``) to a new file in a
temporary directory, on the event loop chatcore's processes use (uvloop when installed):

* ``thread``: :class:`SqliteEventStore` as shipped: one writer thread, group commit, reader
  threads that decode what they read (``synchronous=NORMAL``);
* ``thread, no group commit``: the same with ``max_batch=1`` (one transaction per append);
* ``thread, synchronous=FULL``: the same as ``thread``, with an ``fsync`` per commit;
* ``aiosqlite``: the same SQL through aiosqlite (a thread per connection, one call per
  statement): one writer connection, an ``asyncio.Lock`` around each append's transaction (a
  connection cannot interleave two), one reader connection, decoding on the event loop.
  aiosqlite is not in the locks; install it beside them to include this variant
  (``pip install --target DIR aiosqlite`` and ``PYTHONPATH=DIR``); without it, it is skipped;
* ``memory``: :class:`MemoryEventStore`, the reference of the embedded mode.

Measured: single-event appends per second by 1 task, and by 16 tasks on 16 sessions at once
(the in-process worker's shape: up to 16 replies appending); the process's CPU time per
append (every thread's); and restoring a 10,002-event session: ``store.read`` alone and
``ChatService.load`` from an empty cache (read, fold, and writing the view to the cache: the
threaded variants' SQLite cache, the memory cache for the others), median and p95, with the
start-up heap frozen as ``chatcore serve`` does. The variants take turns, round after round,
each in a process of its own on a new file, and the table shows each figure's median over the
rounds (every round is in ``benchmarks/results/sqlite_store.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from benchmarks.redis_store import (
    ROOT,
    append_all,
    realistic_session,
    restore_runs,
    stats,
    timed,
)
from chatcore.errors import ConcurrencyConflict
from chatcore.events import Event, Recorded, ReplyDelta
from chatcore.ports import AppendListener, EventStore, LiveSubscription, SessionCache
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.codec import decode_records, encode_event
from chatcore_adapters.memory import MemoryEventStore, MemorySessionCache
from chatcore_adapters.sqlite import (
    SqliteDatabase,
    SqliteEventStore,
    SqliteSessionCache,
    SqliteSettings,
)
from chatcore_adapters.sqlite import event_store as sql
from chatcore_adapters.system import RandomIds, SystemClock
from chatcore_api import loops
from chatcore_api.gc_tuning import freeze_startup_heap

RESULTS = ROOT / "benchmarks" / "results" / "sqlite_store.json"
WRITERS = 16


class AioSqliteStore:
    """The event store's appends and reads written the natural aiosqlite way (enough of the
    port for ``ChatService.load``)."""

    def __init__(self, writer: Any, reader: Any, clock: SystemClock) -> None:
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> AioSqliteStore:
        aiosqlite: Any = importlib.import_module("aiosqlite")
        writer = await aiosqlite.connect(path, isolation_level=None)
        await writer.execute("PRAGMA synchronous = NORMAL")
        reader = await aiosqlite.connect(path, isolation_level=None)
        return cls(writer, reader, SystemClock())

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        bodies = [encode_event(e) for e in events]
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                keys = await self._insert(session_id, bodies, expected_version)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")
        return [Recorded(f"{k[0]}-{k[1]}", e) for k, e in zip(keys, events, strict=True)]

    async def _insert(
        self, session_id: str, bodies: list[bytes], expected_version: str | None
    ) -> list[tuple[int, int]]:
        row = await (await self._writer.execute(sql._STREAM, (session_id,))).fetchone()
        actual = None if row is None else f"{row[1]}-{row[2]}"
        if actual != expected_version:
            raise ConcurrencyConflict(session_id, expected_version, actual)
        ms = int(self._clock.now().timestamp() * 1000)
        if row is None:
            cursor = await self._writer.execute(sql._NEW_STREAM, (session_id, 0, 0))
            stream, last = cursor.lastrowid, None
        else:
            stream, last = row[0], (row[1], row[2])
        keys = []
        for _ in bodies:
            last = (last[0], last[1] + 1) if last and ms <= last[0] else (ms, 0)
            keys.append(last)
        rows = [(stream, k[0], k[1], b) for k, b in zip(keys, bodies, strict=True)]
        await self._writer.executemany(sql._INSERT, rows)
        await self._writer.execute(sql._MOVE, (keys[-1][0], keys[-1][1], stream))
        return keys

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        assert after is None
        cursor = await self._reader.execute(sql._READ, (session_id, limit or -1))
        rows = await cursor.fetchall()
        return decode_records((f"{ms}-{seq}", body) for ms, seq, body in rows)

    async def last_position(self, session_id: str) -> str | None:
        row = await (await self._reader.execute(sql._LAST, (session_id,))).fetchone()
        return None if row is None else f"{row[0]}-{row[1]}"

    def subscribe(self, listener: AppendListener) -> LiveSubscription:
        raise NotImplementedError("the benchmark measures appends and reads only")


Closer = Callable[[], Awaitable[None]]
# A variant's store, its session cache (where the family keeps it) and how to close both.
Opened = tuple[EventStore, SessionCache, Closer]
Opener = Callable[[Path], Awaitable[Opened]]


@dataclass(frozen=True)
class Variant:
    name: str
    open: Opener


def threaded(settings: SqliteSettings) -> Opener:
    async def open_store(path: Path) -> Opened:
        db = SqliteDatabase.open(path, settings)
        return SqliteEventStore(db, SystemClock()), SqliteSessionCache(db, SystemClock()), db.close

    return open_store


async def open_aiosqlite(path: Path) -> Opened:
    await SqliteDatabase.open(path).close()  # the schema; aiosqlite works on the file
    store = await AioSqliteStore.open(path)
    # (appends, reads and ChatService.load: all of the port this benchmark uses)
    return cast(EventStore, store), MemorySessionCache(SystemClock()), store.close


async def open_memory(path: Path) -> Opened:
    async def nothing() -> None:
        return None

    return MemoryEventStore(SystemClock()), MemorySessionCache(SystemClock()), nothing


def variants() -> list[Variant]:
    out = [
        Variant("thread", threaded(SqliteSettings())),
        Variant("thread, no group commit", threaded(SqliteSettings(max_batch=1))),
        Variant("thread, synchronous=FULL", threaded(SqliteSettings(synchronous="full"))),
    ]
    try:
        importlib.import_module("aiosqlite")
    except ImportError:
        print("aiosqlite is not installed: its variant is skipped (see the module's docstring)")
    else:
        out.append(Variant("aiosqlite", open_aiosqlite))
    out.append(Variant("memory", open_memory))
    return out


def a_delta(n: int) -> list[Event]:
    text = f"token {n} "
    return [ReplyDelta(at=datetime.now(UTC), conversation_id="c1", reply_id="r1", text=text)]


async def appends(store: EventStore, tasks: int, total: int) -> dict[str, float]:
    """``tasks`` tasks, each appending ``total // tasks`` single events to its own session."""
    each = total // tasks

    async def one(sid: str) -> None:
        version = None
        for n in range(each):
            recorded = await store.append(sid, a_delta(n), expected_version=version)
            version = recorded[-1].position

    sids = [RandomIds().session_id() for _ in range(tasks)]
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*map(one, sids))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = each * tasks
    return {"appends_per_s": round(done / wall), "cpu_us_per_append": round(cpu / done * 1e6, 1)}


async def restore(store: EventStore, cache: SessionCache, runs: int) -> dict[str, Any]:
    service = bootstrap(store=store, cache=cache).service
    sid = RandomIds().session_id()
    await append_all(store, sid, realistic_session(sid), batch=500)

    async def cold_load() -> None:
        await cache.delete(sid)
        await service.load(sid)

    for _ in range(2):  # warm-up
        await cold_load()
    freeze_startup_heap()
    try:
        read_cpu, read_runs = await cpu_and_wall(runs, lambda: store.read(sid))
        load_cpu, load_runs = await cpu_and_wall(runs, cold_load)
    finally:
        gc.unfreeze()  # the next variant starts from the same heap
    return {
        "events": len(await store.read(sid)),
        "read": stats(read_runs) | {"cpu_median_ms": read_cpu},
        "load_empty_cache": stats(load_runs) | {"cpu_median_ms": load_cpu},
    }


async def cpu_and_wall(runs: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, list[float]]:
    """The median CPU time of the process (every thread) in ms, and each run's wall time."""
    cpu: list[float] = []

    async def one() -> None:
        started = time.process_time()
        await call()
        cpu.append(time.process_time() - started)

    wall = await timed(runs, one)
    return round(statistics.median(cpu) * 1000, 1), wall


async def measure(variant: Variant, quick: bool) -> dict[str, Any]:
    gc.collect()
    directory = Path(tempfile.mkdtemp(prefix="chatcore-bench-"))
    try:
        store, cache, close = await variant.open(directory / "chatcore.db")
        try:
            total = 800 if quick else 4000
            await appends(store, WRITERS, WRITERS * 20)  # warm-up: threads, statements, pages
            return {
                "one_writer": await appends(store, 1, total),
                "sixteen_writers": await appends(store, WRITERS, total * 2),
                "restore": await restore(store, cache, 5 if quick else 15),
            }
        finally:
            await close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def restore_figure(quick: bool) -> dict[str, Any]:
    """Figure 5 of ``python -m benchmarks`` on SQLite: the 10,002-event session of the Redis
    figure in a new file (as shipped: writer thread, reader threads, the view cached in the
    same file), restored with ``ChatService.load`` as the Redis figure does it: from an empty
    cache and a warm one, with the collector as it is by default. Besides, ``cold_reopened``:
    each load on a database opened anew (new connections and threads, so SQLite's own page
    cache is empty too, and the view deleted): the first load after a restart. Only the load is
    timed; the file stays in the operating system's cache."""
    clock = SystemClock()
    runs = 5 if quick else 25
    directory = Path(tempfile.mkdtemp(prefix="chatcore-bench-"))
    path = directory / "chatcore.db"
    try:
        db = SqliteDatabase.open(path)
        try:
            store, cache = SqliteEventStore(db, clock), SqliteSessionCache(db, clock)
            sid = RandomIds().session_id()
            await append_all(store, sid, realistic_session(sid), batch=500)
            service = bootstrap(store=store, cache=cache).service
            measured, _ = await restore_runs(service, cache, sid, runs)
        finally:
            await db.close()

        async def reopened() -> float:
            db = SqliteDatabase.open(path)
            try:
                cache = SqliteSessionCache(db, clock)
                await cache.delete(sid)
                service = bootstrap(store=SqliteEventStore(db, clock), cache=cache).service
                started = time.perf_counter()
                await service.load(sid)
                return time.perf_counter() - started
            finally:
                await db.close()

        reopened_runs = [await reopened() for _ in range(runs)]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {**measured, "cold_reopened": stats(reopened_runs), "sqlite": sqlite3.sqlite_version}


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number across rounds, keeping the shape of one round."""
    first = rounds[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = median_of([r[key] for r in rounds])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in rounds)
        else:
            out[key] = value
    return out


def report(result: dict[str, Any]) -> None:
    print(
        f"SQLite {result['sqlite']}, Python sqlite3, {result['loop']} loop, "
        f"{result['cores']} cores; medians of {result['rounds']} rounds, load average "
        f"{result['load_average'][0]:.2f} -> {result['load_average'][1]:.2f}"
    )
    print(
        f"{'':<26}{'1 writer':>19}{'16 writers':>20}{'read 10k events':>20}"
        f"{'load 10k, empty cache':>27}"
    )
    print(
        f"{'variant':<26}{'appends/s':>11}{'µs CPU':>8}{'appends/s':>12}{'µs CPU':>8}"
        f"{'median':>10}{'CPU':>10}{'median':>10}{'p95':>8}{'CPU':>9}"
    )
    for name, r in result["variants"].items():
        one, many = r["one_writer"], r["sixteen_writers"]
        read, load = r["restore"]["read"], r["restore"]["load_empty_cache"]
        print(
            f"{name:<26}{one['appends_per_s']:>11,.0f}{one['cpu_us_per_append']:>8.1f}"
            f"{many['appends_per_s']:>12,.0f}{many['cpu_us_per_append']:>8.1f}"
            f"{read['median_ms']:>8.1f}ms{read['cpu_median_ms']:>8.1f}ms"
            f"{load['median_ms']:>8.1f}ms{load['p95_ms']:>6.1f}ms{load['cpu_median_ms']:>7.1f}ms"
        )


def measure_apart(name: str, quick: bool) -> dict[str, Any]:
    """One variant measured in a process of its own (no heap, thread or allocator state left
    over from another variant)."""
    command = [sys.executable, "-m", "benchmarks.sqlite_store", "--variant", name]
    done = subprocess.run(
        [*command, *(["--quick"] if quick else [])],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


def main(quick: bool, rounds: int) -> dict[str, Any]:
    names = [v.name for v in variants()]
    load_before = os.getloadavg()[0]
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for n in range(rounds):  # variants take turns, so a busy moment of the machine is shared
        for name in names:
            measured[name].append(measure_apart(name, quick))
            print(f"  round {n + 1}/{rounds}: measured {name}", flush=True)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "rounds": rounds,
        "sqlite": sqlite3.sqlite_version,
        "loop": loops.loop_name(),
        "cores": os.cpu_count(),
        "load_average": [load_before, os.getloadavg()[0]],
        "variants": {name: median_of(runs) for name, runs in measured.items()},
        "every_round": measured,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer appends and runs")
    parser.add_argument("--rounds", type=int, help="rounds of every variant (default 3; quick 1)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, JSON on stdout
    args = parser.parse_args()
    if args.variant is not None:
        (chosen,) = [v for v in variants() if v.name == args.variant]
        print(json.dumps(loops.run(measure(chosen, args.quick))))
        return
    rounds = args.rounds or (1 if args.quick else 3)
    result = main(args.quick, rounds)
    print()
    report(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    cli()
