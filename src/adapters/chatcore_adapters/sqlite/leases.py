"""Leases in SQLite (``leases``): who generates the reply to a message right now.

Each operation is one write transaction that reads the holder and changes it, so two
claimants never both win. Expiry is the clock's wall time, stored in the file, so a lease held
by a process that died expires for the process started after it. A lease that expired is
deleted when it is next taken, and every ``prune_every`` acquisitions all expired rows go.
"""

from __future__ import annotations

import sqlite3

from chatcore.ports import Clock
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms

_HOLDER = "SELECT owner FROM leases WHERE key = ? AND expires_ms > ?"
_SET = (
    "INSERT INTO leases (key, owner, expires_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms"
)
_RELEASE = "DELETE FROM leases WHERE key = ? AND owner = ?"
_PRUNE = "DELETE FROM leases WHERE expires_ms <= ?"


def _ttl_ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class SqliteLeases:
    """The :class:`chatcore.ports.Leases` on an SQLite file."""

    def __init__(self, db: SqliteDatabase, clock: Clock, *, prune_every: int = 1000) -> None:
        if prune_every < 1:
            raise ValueError("prune_every must be at least 1")
        self.db = db
        self._clock = clock
        self._prune_every = prune_every
        self._acquired = 0

    async def acquire(self, key: str, owner: str, ttl: float) -> str | None:
        now = epoch_ms(self._clock)
        self._acquired += 1
        prune = self._acquired % self._prune_every == 0

        def acquire(conn: sqlite3.Connection) -> str | None:
            if prune:
                conn.execute(_PRUNE, (now,))
            held = conn.execute(_HOLDER, (key, now)).fetchone()
            if held is not None:
                return str(held[0])
            conn.execute(_SET, (key, owner, now + _ttl_ms(ttl)))
            return None

        return await self.db.write(acquire, operation="lease acquire")

    async def replace(self, key: str, expected_owner: str, owner: str, ttl: float) -> bool:
        now = epoch_ms(self._clock)

        def replace(conn: sqlite3.Connection) -> bool:
            held = conn.execute(_HOLDER, (key, now)).fetchone()
            if held is None or held[0] != expected_owner:
                return False
            conn.execute(_SET, (key, owner, now + _ttl_ms(ttl)))
            return True

        return await self.db.write(replace, operation="lease replace")

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        return await self.replace(key, owner, owner, ttl)

    async def release(self, key: str, owner: str) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(_RELEASE, (key, owner))

        await self.db.write(release, operation="lease release")
