"""The intents journal in SQLite (``intents``): an intent is written before a message is
appended and cleared once its work is queued, so a crash between the two steps is found by a
sweeper (:meth:`chatcore.service.ChatService.sweep_intents`). Times are the clock's wall time,
so an intent left by a process that died is still "old" for the process started after it.

Its own class, used by :class:`~chatcore_adapters.sqlite.queue.SqliteWorkQueue` today, so the
journal can become a port of its own without touching the queue's tables."""

from __future__ import annotations

import sqlite3

from chatcore.ids import validate_session_id
from chatcore.ports import Clock
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms, statement

_RECORD = (
    "INSERT INTO intents (queue, session_id, client_message_id, at_ms) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (queue, session_id, client_message_id) DO UPDATE SET at_ms = excluded.at_ms"
)
_CLEAR = "DELETE FROM intents WHERE queue = ? AND session_id = ? AND client_message_id = ?"
_STALE = (
    "SELECT session_id, client_message_id FROM intents WHERE queue = ? AND at_ms <= ? "
    "ORDER BY at_ms LIMIT ?"
)


class SqliteIntentJournal:
    def __init__(
        self, db: SqliteDatabase, clock: Clock, *, queue: str = "chatcore:work", limit: int = 1000
    ) -> None:
        self.db = db
        self.queue = queue
        self.limit = limit
        self._clock = clock

    async def record(self, session_id: str, client_message_id: str) -> None:
        validate_session_id(session_id)
        params = (self.queue, session_id, client_message_id, epoch_ms(self._clock))
        await self.db.write(statement(_RECORD, params), operation="record_intent")

    async def clear(self, session_id: str, client_message_id: str) -> None:
        validate_session_id(session_id)
        params = (self.queue, session_id, client_message_id)
        await self.db.write(statement(_CLEAR, params), operation="clear_intent")

    async def stale(self, older_than: float) -> list[tuple[str, str]]:
        """Intents at least ``older_than`` seconds old, oldest first (at most ``limit``)."""
        before = epoch_ms(self._clock) - max(0, int(older_than * 1000))

        def stale(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(_STALE, (self.queue, before, self.limit)).fetchall()
            return [(row[0], row[1]) for row in rows]

        return await self.db.read(stale, operation="stale_intents")
