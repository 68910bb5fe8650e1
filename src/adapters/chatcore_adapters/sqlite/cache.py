"""The session cache in SQLite: ``session_cache`` holds each session's encoded view (the bytes
the Redis and in-memory caches keep) and when it expires.

An entry expires ``ttl`` seconds after it was last written or read. A read that finds the
entry older than a quarter of the ttl moves its expiry (a write); one that finds it fresher
does not, so loading a busy session costs no write at all. An entry therefore lives between
three quarters of the ttl and the ttl after its last use: the cache is disposable (I2), and
an entry gone early only costs a replay of the log. Expired rows are deleted every
``prune_every`` writes.

Each row also keeps its view's version (``version_ms``, ``version_seq``): a put replaces a
live row only with a view at the same or a newer version, compared as positions, in the
statement itself. A forgotten session (a deleted one) is a row with a zero-length view until
the ttl: it reads as missing and refuses every put, so a reader that folded the log before the
deletion cannot cache its content afterwards.
"""

from __future__ import annotations

import sqlite3

from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import CachedView, Clock
from chatcore.view import SessionView
from chatcore_adapters.codec import decode_view, encode_view
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms, statement

_GET = "SELECT expires_ms, view FROM session_cache WHERE session_id = ?"
# The update happens when the row has expired, or is not forgotten and holds no version or
# one at or before the new view's.
_PUT = (
    "INSERT INTO session_cache (session_id, expires_ms, view, version_ms, version_seq) "
    "VALUES (:sid, :expires, :view, :ms, :seq) "
    "ON CONFLICT (session_id) DO UPDATE SET expires_ms = excluded.expires_ms, "
    "view = excluded.view, version_ms = excluded.version_ms, version_seq = excluded.version_seq "
    "WHERE session_cache.expires_ms <= :now OR (length(session_cache.view) > 0 AND ("
    "session_cache.version_ms IS NULL OR (excluded.version_ms IS NOT NULL AND "
    "(excluded.version_ms, excluded.version_seq) >= "
    "(session_cache.version_ms, session_cache.version_seq))))"
)
_FORGET = (
    "INSERT INTO session_cache (session_id, expires_ms, view, version_ms, version_seq) "
    "VALUES (?, ?, X'', NULL, NULL) "
    "ON CONFLICT (session_id) DO UPDATE SET expires_ms = excluded.expires_ms, view = X'', "
    "version_ms = NULL, version_seq = NULL"
)
# SQLite integers are signed 64-bit; a position's parts may reach 2**64 - 1.
_MAX = 2**63 - 1
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
            if row is None or row[0] <= now or not row[1]:
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
        ms: int | None = None
        seq: int | None = None
        if view.version is not None:
            ms, seq = (min(part, _MAX) for part in parse_position(view.version))
        now = epoch_ms(self._clock)
        self._writes += 1
        prune = self._writes % self._prune_every == 0
        values = {
            "sid": session_id,
            "expires": now + self._ttl_ms,
            "view": raw,
            "ms": ms,
            "seq": seq,
            "now": now,
        }

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(_PUT, values)
            if prune:
                conn.execute(_PRUNE, (now,))

        await self.db.write(put, operation="cache put")

    async def delete(self, session_id: str) -> None:
        validate_session_id(session_id)
        await self.db.write(statement(_DELETE, (session_id,)), operation="cache delete")

    async def forget(self, session_id: str) -> None:
        validate_session_id(session_id)
        expires = epoch_ms(self._clock) + self._ttl_ms
        await self.db.write(statement(_FORGET, (session_id, expires)), operation="cache forget")
        await self.db.scrub()
