"""The contract suites, run against the SQLite adapters, each test on a new database file in
``tmp_path``; then what only SQLite has: the file outlives the process's objects, many tasks
share one writer, appends queued together share one transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatcore.errors import ConcurrencyConflict, CorruptRecord
from chatcore.ids import parse_position
from chatcore.ports import EventStore, Heartbeats, IntentJournal, Leases, SessionCache, WorkItem
from chatcore_adapters.sqlite import (
    SqliteDatabase,
    SqliteEventStore,
    SqliteHeartbeats,
    SqliteIntake,
    SqliteIntentJournal,
    SqliteLeases,
    SqliteSessionCache,
    SqliteSettings,
    SqliteWorkQueue,
)
from chatcore_adapters.system import SystemClock
from tests.contract.event_store_contract import EventStoreContract, Pushes
from tests.contract.heartbeats_contract import HeartbeatsContract, status
from tests.contract.intake_contract import IntakeContract, Parts
from tests.contract.intent_journal_contract import IntentJournalContract
from tests.contract.leases_contract import LeasesContract
from tests.contract.session_cache_contract import SessionCacheContract, sample_view
from tests.contract.work_queue_contract import DeadLetteringQueue, WorkQueueContract
from tests.support.factories import EPOCH, ManualClock, delta, message, opening, session_id


class _OnSqlite:
    """Where the adapters of a test class keep their data: a new file per database."""

    directory: Path
    opened: list[SqliteDatabase]

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path
        self.opened = []

    def open_db(self, settings: SqliteSettings | None = None) -> SqliteDatabase:
        # A new file for every database (the hypothesis machine opens several per test).
        db = SqliteDatabase.open(self.directory / f"chatcore-{len(self.opened)}.db", settings)
        self.opened.append(db)
        return db


class TestSqliteEventStore(_OnSqlite, EventStoreContract):
    async def make_store(self, *, retention: float | None = None) -> EventStore:
        return SqliteEventStore(self.open_db(), SystemClock(), retention=retention)

    async def stored_bytes(self, store: EventStore, session_id: str) -> bytes:
        # Every byte of the database's files as they are on disk now (the file and its
        # write-ahead log), whatever session or table it belongs to.
        assert isinstance(store, SqliteEventStore)
        path = store.db.path
        files = [path, path.with_name(path.name + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())

    async def close_store(self, store: EventStore) -> None:
        assert isinstance(store, SqliteEventStore)
        await store.db.close()


class TestSqliteSessionCache(_OnSqlite, SessionCacheContract):
    async def make_cache(self, *, ttl: float) -> SessionCache:
        return SqliteSessionCache(self.open_db(), SystemClock(), ttl=ttl)

    async def close_cache(self, cache: SessionCache) -> None:
        assert isinstance(cache, SqliteSessionCache)
        await cache.db.close()

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        """Written by another connection, as any program with the file could."""
        assert isinstance(cache, SqliteSessionCache)
        with sqlite3.connect(cache.db.path) as conn:
            conn.execute(
                "INSERT INTO session_cache (session_id, expires_ms, view) VALUES (?, ?, ?)",
                (session_id, int(time.time() * 1000) + 60_000, raw),
            )
        conn.close()


class TestSqliteWorkQueue(_OnSqlite, WorkQueueContract):
    async def make_queue(self, *, reclaim_after: float) -> DeadLetteringQueue:
        return SqliteWorkQueue(self.open_db(), SystemClock(), reclaim_after=reclaim_after)

    async def close_queue(self, queue: DeadLetteringQueue) -> None:
        assert isinstance(queue, SqliteWorkQueue)
        await queue.db.close()


class TestSqliteIntentJournal(_OnSqlite, IntentJournalContract):
    async def make_journal(self) -> IntentJournal:
        return SqliteIntentJournal(self.open_db(), SystemClock())

    async def close_journal(self, journal: IntentJournal) -> None:
        assert isinstance(journal, SqliteIntentJournal)
        await journal.db.close()


class TestSqliteLeases(_OnSqlite, LeasesContract):
    async def make_leases(self) -> Leases:
        return SqliteLeases(self.open_db(), SystemClock())

    async def close_leases(self, leases: Leases) -> None:
        assert isinstance(leases, SqliteLeases)
        await leases.db.close()


class TestSqliteHeartbeats(_OnSqlite, HeartbeatsContract):
    async def make_heartbeats(self) -> Heartbeats:
        return SqliteHeartbeats(self.open_db(), SystemClock())

    async def close_heartbeats(self, heartbeats: Heartbeats) -> None:
        assert isinstance(heartbeats, SqliteHeartbeats)
        await heartbeats.db.close()


class TestSqliteIntake(_OnSqlite, IntakeContract):
    async def make_intake(self) -> Parts:
        db = self.open_db()
        store, queue = SqliteEventStore(db, SystemClock()), SqliteWorkQueue(db, SystemClock())
        return Parts(SqliteIntake(store, queue), store, queue)

    async def close_intake(self, parts: Parts) -> None:
        assert isinstance(parts.store, SqliteEventStore)
        await parts.store.db.close()


# --- SQLite specifics, beyond the contracts ---------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    db = SqliteDatabase.open(tmp_path / "chatcore.db")
    try:
        yield db
    finally:
        await db.close()


def _item(n: int, sid: str) -> WorkItem:
    return WorkItem(session_id=sid, conversation_id="c1", message_id=f"m{n}", enqueued_at=EPOCH)


async def test_sixteen_writers_and_readers_at_once_lose_nothing_and_share_transactions(
    db: SqliteDatabase,
) -> None:
    """The worker's shape: 16 replies, each appending a delta every few ms, while readers
    read; every acknowledged event is read back once, in order."""
    store = SqliteEventStore(db, SystemClock())
    sids = [session_id() for _ in range(16)]

    async def reply(sid: str) -> list[str]:
        version = (await store.append(sid, opening(sid), expected_version=None))[-1].position
        texts = []
        for n in range(40):
            await asyncio.sleep(0.002)
            version = (await store.append(sid, [delta(n)], expected_version=version))[-1].position
            texts.append(f"t{n} ")
        return texts

    async def reader(sid: str) -> None:
        for _ in range(20):
            await asyncio.sleep(0.003)
            read = await store.read(sid)
            keys = [parse_position(r.position) for r in read]
            assert keys == sorted(set(keys))

    results = await asyncio.gather(*map(reply, sids), *map(reader, sids))
    for sid, texts in zip(sids, results, strict=False):
        read = await store.read(sid)
        assert [r.event.text for r in read[2:]] == texts  # type: ignore[attr-defined]
    assert db.jobs >= 16 * 41
    assert db.transactions < db.jobs  # appends queued together were committed together


async def test_positions_never_go_back_with_the_clock_nor_across_a_restart(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    db = SqliteDatabase.open(tmp_path / "chatcore.db")
    sid = session_id()
    try:
        store = SqliteEventStore(db, clock)
        first = await store.append(sid, opening(sid), expected_version=None)
        ms = int(clock.now().timestamp() * 1000)
        assert [r.position for r in first] == [f"{ms}-0", f"{ms}-1"]
        clock.advance(-10)  # the clock jumps back: the millisecond of the newest event goes on
        second = await store.append(sid, [message(1)], expected_version=first[-1].position)
        assert second[0].position == f"{ms}-2"
    finally:
        await db.close()
    db = SqliteDatabase.open(tmp_path / "chatcore.db")
    try:
        store = SqliteEventStore(db, clock)
        third = await store.append(sid, [delta(1)], expected_version=second[0].position)
        assert third[0].position == f"{ms}-3"
        clock.advance(20)
        fourth = await store.append(sid, [delta(2)], expected_version=third[0].position)
        assert fourth[0].position == f"{ms + 10_000}-0"
        assert await store.read(sid) == [*first, *second, *third, *fourth]
    finally:
        await db.close()


async def test_cursors_beyond_what_sqlite_integers_hold_read_correctly(
    db: SqliteDatabase,
) -> None:
    store = SqliteEventStore(db, SystemClock())
    sid = session_id()
    recorded = await store.append(sid, [*opening(sid), message(1)], expected_version=None)
    ms = parse_position(recorded[0].position)[0]
    top = 2**64 - 1
    assert await store.read(sid, after=f"{top}-0") == []
    assert await store.read(sid, after=f"{top}-{top}") == []
    assert await store.read(sid, after=f"{ms - 1}-{top}") == recorded
    assert await store.read(sid, after=f"{ms}-{top}") == []
    with pytest.raises(ConcurrencyConflict):
        await store.append(sid, [delta(1)], expected_version=f"{top}-0")


async def test_an_unreadable_stored_event_is_a_corrupt_record(db: SqliteDatabase) -> None:
    store = SqliteEventStore(db, SystemClock())
    sid = session_id()
    await store.append(sid, opening(sid), expected_version=None)
    conn = sqlite3.connect(db.path)
    with conn:
        conn.execute("UPDATE events SET body = ? WHERE seq = 1", (b'{"v":1,"type":"nope"}',))
    conn.close()
    with pytest.raises(CorruptRecord):
        await store.read(sid)


async def test_an_append_whose_caller_was_cancelled_is_still_pushed_once_committed(
    db: SqliteDatabase,
) -> None:
    store = SqliteEventStore(db, SystemClock())
    sid = session_id()
    heard = Pushes()
    sub = store.subscribe(heard)
    try:
        await sub.follow(sid)
        task = asyncio.create_task(store.append(sid, opening(sid), expected_version=None))
        await asyncio.sleep(0)  # the job is queued at the writer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        got = await heard.until(2)  # the push comes with the commit
        stored = await store.read(sid)
        assert [r.event for r in stored] == opening(sid)
        assert [(a.after, list(a.records)) for a in got] == [(None, stored)]
    finally:
        await sub.close()


async def test_the_queue_outlives_the_process_and_a_dead_process_s_work_is_reclaimed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chatcore.db"
    sid = session_id()
    db = SqliteDatabase.open(path)
    try:
        queue = SqliteWorkQueue(db, SystemClock())
        for n in range(3):
            await queue.enqueue(_item(n, sid))
        (taken,) = await queue.claim("old-process", count=1, block=1)
        (buried,) = await queue.claim("old-process", count=1, block=1)
        await queue.dead_letter(buried, "failed 5 times")
        await SqliteIntentJournal(db, SystemClock()).record(sid, "cm1")
    finally:
        await db.close()
    db = SqliteDatabase.open(path)  # a new process, a new worker name
    try:
        queue = SqliteWorkQueue(db, SystemClock(), reclaim_after=0.2)
        (fresh,) = await queue.claim("new-process", count=5, block=1)
        assert fresh.item == _item(2, sid) and fresh.attempt == 1
        await queue.ack(fresh)
        await asyncio.sleep(0.3)
        (again,) = await queue.claim("new-process", count=5, block=1)
        assert (again.item, again.delivery_id, again.attempt) == (
            taken.item,
            taken.delivery_id,
            2,
        )
        assert await queue.touch(taken) is False  # the old process's delivery is gone
        assert [(d.item, d.reason) for d in await queue.dead_letters()] == [
            (_item(1, sid), "failed 5 times")
        ]
        assert (sid, "cm1") in await SqliteIntentJournal(db, SystemClock()).stale(older_than=0)
    finally:
        await db.close()


async def test_an_unreadable_work_item_becomes_a_dead_letter(db: SqliteDatabase) -> None:
    queue = SqliteWorkQueue(db, SystemClock())
    sid = session_id()
    conn = sqlite3.connect(db.path)
    with conn:
        conn.execute(
            "INSERT INTO work_items (queue, item, enqueued_ms) VALUES (?, ?, 1)",
            (queue.name, b"{not an item"),
        )
    await queue.enqueue(_item(1, sid))
    got = await queue.claim("a", count=10, block=1)
    assert [d.item for d in got] == [_item(1, sid)]
    assert conn.execute("SELECT reason FROM dead_letters").fetchall() == [("unreadable work item",)]
    conn.close()
    assert await queue.dead_letters() == []  # listed only when it reads back as an item
    assert await queue.claim("b", count=10, block=0.05) == []


async def test_queues_of_different_names_share_a_file_without_mixing(
    db: SqliteDatabase,
) -> None:
    first = SqliteWorkQueue(db, SystemClock(), name="one")
    second = SqliteWorkQueue(db, SystemClock(), name="two")
    sid = session_id()
    await first.enqueue(_item(1, sid))
    await SqliteIntentJournal(db, SystemClock(), queue="two").record(sid, "cm")
    assert await second.claim("a", count=5, block=0.05) == []
    assert [d.item for d in await first.claim("a", count=5, block=1)] == [_item(1, sid)]
    assert await SqliteIntentJournal(db, SystemClock(), queue="one").stale(older_than=0) == []


async def test_leases_heartbeats_and_cached_views_outlive_the_process(tmp_path: Path) -> None:
    path = tmp_path / "chatcore.db"
    sid = session_id()
    db = SqliteDatabase.open(path)
    try:
        await SqliteLeases(db, SystemClock()).acquire("reply:x", "alice", 30)
        await SqliteHeartbeats(db, SystemClock()).beat(status("w1", completed=3), ttl=30)
        await SqliteSessionCache(db, SystemClock()).put(sid, sample_view(sid))
    finally:
        await db.close()
    db = SqliteDatabase.open(path)
    try:
        assert await SqliteLeases(db, SystemClock()).acquire("reply:x", "bob", 30) == "alice"
        assert [w.completed for w in await SqliteHeartbeats(db, SystemClock()).workers()] == [3]
        cached = await SqliteSessionCache(db, SystemClock()).get(sid)
        assert cached is not None and cached.view == sample_view(sid)
    finally:
        await db.close()


async def test_expired_rows_are_deleted_not_only_hidden(db: SqliteDatabase) -> None:
    clock = ManualClock()
    cache = SqliteSessionCache(db, clock, ttl=10, prune_every=2)
    leases = SqliteLeases(db, clock, prune_every=2)
    heartbeats = SqliteHeartbeats(db, clock)
    old, new = session_id(), session_id()
    await cache.put(old, sample_view(old))
    await leases.acquire("k-old", "a", 10)
    await heartbeats.beat(status("w-old"), ttl=10)
    clock.advance(11)
    await cache.put(new, sample_view(new))
    await leases.acquire("k-new", "a", 10)
    await heartbeats.beat(status("w-new"), ttl=10)
    conn = sqlite3.connect(db.path)
    try:
        assert conn.execute("SELECT session_id FROM session_cache").fetchall() == [(new,)]
        assert conn.execute("SELECT key FROM leases").fetchall() == [("k-new",)]
        assert conn.execute("SELECT worker_id FROM heartbeats").fetchall() == [("w-new",)]
    finally:
        conn.close()


async def test_a_cached_view_is_kept_alive_by_reads_without_a_write_per_read(
    db: SqliteDatabase,
) -> None:
    clock = ManualClock()
    cache = SqliteSessionCache(db, clock, ttl=100)
    sid = session_id()
    await cache.put(sid, sample_view(sid))
    writes = db.jobs
    for _ in range(10):  # fresher than a quarter of the ttl: reads only
        clock.advance(2)
        assert await cache.get(sid) is not None
    assert db.jobs == writes
    clock.advance(10)  # 30 s since the write: this read moves the expiry
    assert await cache.get(sid) is not None
    assert db.jobs == writes + 1
    clock.advance(99)  # alive 99 s after its last use, gone after 100
    assert await cache.get(sid) is not None
    clock.advance(100.001)
    assert await cache.get(sid) is None
