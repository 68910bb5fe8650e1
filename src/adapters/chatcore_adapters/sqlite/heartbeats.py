"""Worker heartbeats in SQLite (``heartbeats``): each worker's last status and when it
expires (the clock's wall time). A listing shows only the records that have not expired;
every beat deletes the expired ones, so the table never grows past the live workers and the
few that died since the last beat.
"""

from __future__ import annotations

import logging
import sqlite3

from pydantic import ValidationError

from chatcore.ports import Clock, WorkerStatus
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms, statement

log = logging.getLogger(__name__)

_BEAT = (
    "INSERT INTO heartbeats (worker_id, status, expires_ms) VALUES (?, ?, ?) "
    "ON CONFLICT (worker_id) DO UPDATE SET status = excluded.status, "
    "expires_ms = excluded.expires_ms"
)
_PRUNE = "DELETE FROM heartbeats WHERE expires_ms <= ?"
_LIVE = "SELECT status FROM heartbeats WHERE expires_ms > ? ORDER BY expires_ms"
_REMOVE = "DELETE FROM heartbeats WHERE worker_id = ?"


class SqliteHeartbeats:
    """The :class:`chatcore.ports.Heartbeats` on an SQLite file."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self.db = db
        self._clock = clock

    async def beat(self, status: WorkerStatus, *, ttl: float) -> None:
        now = epoch_ms(self._clock)
        payload = status.model_dump_json().encode()
        expires = now + max(1, int(ttl * 1000))

        def beat(conn: sqlite3.Connection) -> None:
            conn.execute(_PRUNE, (now,))
            conn.execute(_BEAT, (status.worker_id, payload, expires))

        await self.db.write(beat, operation="heartbeat")

    async def workers(self) -> list[WorkerStatus]:
        now = epoch_ms(self._clock)

        def live(conn: sqlite3.Connection) -> list[WorkerStatus]:
            out: list[WorkerStatus] = []
            for (raw,) in conn.execute(_LIVE, (now,)).fetchall():
                try:
                    out.append(WorkerStatus.model_validate_json(raw))
                except ValidationError:
                    log.warning("skipping an unreadable worker heartbeat")
            return out

        return await self.db.read(live, operation="list workers")

    async def remove(self, worker_id: str) -> None:
        await self.db.write(statement(_REMOVE, (worker_id,)), operation="remove heartbeat")
