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
from chatcore.ports import EventStore, Heartbeats, Leases, SessionCache, WorkItem, WorkQueue
from chatcore_adapters.sqlite import (
    SqliteDatabase,
    SqliteEventStore,
    SqliteHeartbeats,
    SqliteLeases,
    SqliteSessionCache,
    SqliteSettings,
    SqliteWorkQueue,
)
from chatcore_adapters.system import SystemClock
from tests.contract.event_store_contract import EventStoreContract
from tests.contract.heartbeats_contract import HeartbeatsContract, status
from tests.contract.leases_contract import LeasesContract
from tests.contract.session_cache_contract import SessionCacheContract, sample_view
from tests.contract.work_queue_contract import WorkQueueContract
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
    async def make_store(self) -> EventStore:
        return SqliteEventStore(self.open_db(), SystemClock())

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
    async def make_queue(self, *, reclaim_after: float) -> WorkQueue:
        return SqliteWorkQueue(self.open_db(), SystemClock(), reclaim_after=reclaim_after)

    async def close_queue(self, queue: WorkQueue) -> None:
        assert isinstance(queue, SqliteWorkQueue)
        await queue.db.close()


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
