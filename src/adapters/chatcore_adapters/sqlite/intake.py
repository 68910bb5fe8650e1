"""Appending and queueing in one SQLite transaction: the append's job and the enqueue's job
run in the same write transaction of the writer thread, so both are committed or neither is."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from chatcore.events import Event, Recorded
from chatcore.ports import WorkItem
from chatcore_adapters.sqlite.event_store import Committed, SqliteEventStore
from chatcore_adapters.sqlite.queue import SqliteWorkQueue


class SqliteIntake:
    """The :class:`chatcore.ports.Intake` of a :class:`SqliteEventStore` and a
    :class:`SqliteWorkQueue` on the same database."""

    def __init__(self, store: SqliteEventStore, queue: SqliteWorkQueue) -> None:
        if store.db is not queue.db:
            raise ValueError("the store and the queue must share one database")
        self.store = store
        self.queue = queue

    async def append_and_enqueue(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_version: str | None,
        item: WorkItem,
    ) -> list[Recorded]:
        append = self.store.append_job(session_id, events, expected_version=expected_version)
        enqueue = self.queue.enqueue_job(item)

        def both(conn: sqlite3.Connection) -> Committed:
            committed = append(conn)  # a conflict raises here: nothing is queued
            enqueue(conn)
            return committed

        def committed(done: Committed) -> None:
            self.store.announce(done)
            self.queue.wake()

        done = await self.store.db.write(both, operation="append and enqueue", on_commit=committed)
        await self.store.sweep_if_due()
        return done.records
