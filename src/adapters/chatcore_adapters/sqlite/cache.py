"""The session cache in SQLite: ``session_cache`` holds each session's encoded view (the bytes
the Redis and in-memory caches keep) and when it expires.

An entry expires ``ttl`` seconds after it was last written or read. A read that finds the
entry older than a quarter of the ttl moves its expiry (a write); one that finds it fresher
does not, so loading a busy session costs no write at all. An entry therefore lives between
three quarters of the ttl and the ttl after its last use: the cache is disposable (I2), and
an entry gone early only costs a replay of the log. Expired rows are deleted every
``prune_every`` writes.
"""

from __future__ import annotations

import sqlite3

from chatcore.ids import validate_session_id
from chatcore.ports import CachedView, Clock
from chatcore.view import SessionView
from chatcore_adapters.codec import decode_view, encode_view
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms, statement

_GET = "SELECT expires_ms, view FROM session_cache WHERE session_id = ?"
_PUT = (
    "INSERT INTO session_cache (session_id, expires_ms, view) VALUES (?, ?, ?) "
    "ON CONFLICT (session_id) DO UPDATE SET expires_ms = excluded.expires_ms, "
    "view = excluded.view"
)
_TOUCH = "UPDATE session_cache SET expires_ms = ? WHERE session_id = ? AND expires_ms > ?"
_DELETE = "DELETE FROM session_cache WHERE session_id = ?"
_PRUNE = "DELETE FROM session_cache WHERE expires_ms <= ?"


class SqliteSessionCache:
    """The :class:`chatcore.ports.SessionCache` on an SQLite file."""

    def __init__(
        self,
        db: SqliteDatabase,
        clock: Clock,
        *,
        ttl: float = 3600.0,
        prune_every: int = 1000,
    ) -> None:
        if ttl <= 0 or prune_every < 1:
            raise ValueError("ttl must be positive and prune_every at least 1")
        self.db = db
        self.ttl = ttl
        self._clock = clock
        self._ttl_ms = max(1, int(ttl * 1000))
        self._prune_every = prune_every
        self._writes = 0

    async def get(self, session_id: str) -> CachedView | None:
        validate_session_id(session_id)
        now = epoch_ms(self._clock)

        def get(conn: sqlite3.Connection) -> tuple[int, SessionView | None] | None:
            row = conn.execute(_GET, (session_id,)).fetchone()
            if row is None or row[0] <= now:
                return None
            return row[0], decode_view(row[1])  # decoded here, off the event loop

        found = await self.db.read(get, operation="cache get")
        if found is None:
            return None
        expires, view = found
        if view is None:
            return None
        if expires - now < self._ttl_ms * 3 // 4:
            touch = statement(_TOUCH, (now + self._ttl_ms, session_id, now))
            await self.db.write(touch, operation="cache touch")
        return CachedView(view)

    async def put(self, session_id: str, view: SessionView) -> None:
        validate_session_id(session_id)
        raw = encode_view(view)
        now = epoch_ms(self._clock)
        self._writes += 1
        prune = self._writes % self._prune_every == 0

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(_PUT, (session_id, now + self._ttl_ms, raw))
            if prune:
                conn.execute(_PRUNE, (now,))

        await self.db.write(put, operation="cache put")

    async def delete(self, session_id: str) -> None:
        validate_session_id(session_id)
        await self.db.write(statement(_DELETE, (session_id,)), operation="cache delete")
