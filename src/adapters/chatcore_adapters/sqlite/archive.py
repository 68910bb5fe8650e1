"""Moving sessions out of and into an SQLite file (see :mod:`chatcore_adapters.archive`).

:class:`SqliteLogReader` reads the file with a connection of its own that never writes, and
takes no lock of the data directory: it exports while ``chatcore serve`` runs on the file. In
WAL mode a reader and the server's writer never wait for each other; each session is read in
one read transaction (the session as of one moment).

:class:`SqliteLogImport` writes through the file's :class:`SqliteDatabase` (the process holding
the data directory, so not beside a running server): each session in one write transaction
with its queued work and the removal of any cached view it had, so a session is imported whole
with its work, or not at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from chatcore.ports import Clock, WorkItem
from chatcore_adapters.archive import Entry, SessionLog, Written
from chatcore_adapters.sqlite.database import epoch_ms
from chatcore_adapters.sqlite.errors import DatabaseUnusable, SchemaTooNew, translate
from chatcore_adapters.sqlite.event_store import SqliteEventStore
from chatcore_adapters.sqlite.queue import SqliteWorkQueue
from chatcore_adapters.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION

T = TypeVar("T")

_PAGE = 500
_LIST = (
    "SELECT stream, session_id FROM streams WHERE stream > ? AND last_ms > ? "
    "ORDER BY stream LIMIT ?"
)
_LOG = (
    "SELECT ms, seq, body FROM events "
    "WHERE stream = (SELECT stream FROM streams WHERE session_id = ? AND last_ms > ?) "
    "ORDER BY ms, seq"
)
_UNCACHE = "DELETE FROM session_cache WHERE session_id = ?"


class SqliteLogReader:
    """A :class:`~chatcore_adapters.archive.LogSource` over the file at ``path``. With
    ``retention`` (seconds), sessions idle longer than that are left out, as the store would
    (they read as gone there). Build it with :meth:`open`; :meth:`close` it."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, *, clock: Clock, retention: float | None
    ) -> None:
        self.path = path
        self._conn = conn
        self._clock = clock
        self._retention_ms = None if retention is None else max(1, int(retention * 1000))

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Clock,
        retention: float | None = None,
        busy_timeout: float = 5.0,
    ) -> SqliteLogReader:
        """Open ``path`` read-only (blocking). :class:`DatabaseUnusable` for a file that is
        missing, is not a chatcore database, or is of a newer schema."""
        where = path.absolute()
        if not where.is_file():
            raise DatabaseUnusable(where, "there is no such file")
        try:
            conn = sqlite3.connect(
                f"file:{quote(str(where))}?mode=ro",
                uri=True,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # used by one thread at a time (to_thread)
            )
        except sqlite3.Error as exc:
            raise DatabaseUnusable(where, f"it cannot be opened: {exc}") from None
        try:
            _check_schema(conn, where)
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, where, "open for export") from None
        except BaseException:
            conn.close()
            raise
        return cls(where, conn, clock=clock, retention=retention)

    def _expired_before(self) -> int:
        if self._retention_ms is None:
            return -1
        return epoch_ms(self._clock) - self._retention_ms

    async def _run(self, fn: Callable[[sqlite3.Connection], T], operation: str) -> T:
        def guarded() -> T:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise translate(exc, self.path, operation) from None

        return await asyncio.to_thread(guarded)

    async def session_ids(self) -> AsyncIterator[str]:
        after = 0
        expired = self._expired_before()
        while True:
            rows = await self._run(_page(after, expired), "list sessions")
            for _, session_id in rows:
                yield str(session_id)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    async def read_log(self, session_id: str) -> list[Entry]:
        expired = self._expired_before()

        def read(conn: sqlite3.Connection) -> list[Entry]:
            conn.execute("BEGIN")  # (one statement, and still one snapshot said out loud)
            try:
                rows = conn.execute(_LOG, (session_id, expired)).fetchall()
            finally:
                conn.execute("COMMIT")
            return [(f"{ms}-{seq}", bytes(body)) for ms, seq, body in rows]

        return await self._run(read, "export read")

    async def close(self) -> None:
        await asyncio.to_thread(self._conn.close)


def _page(after: int, expired: int) -> Callable[[sqlite3.Connection], list[Any]]:
    """The next page of ``(stream, session id)`` rows after stream ``after``."""

    def page(conn: sqlite3.Connection) -> list[Any]:
        return conn.execute(_LIST, (after, expired, _PAGE)).fetchall()

    return page


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if application_id != APPLICATION_ID or version == 0:
        raise DatabaseUnusable(path, "it is not a chatcore database")
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(path, version, SCHEMA_VERSION)


class SqliteLogImport:
    """The :class:`~chatcore_adapters.archive.LogImport` of a :class:`SqliteEventStore` and
    the :class:`SqliteWorkQueue` on its database."""

    def __init__(self, store: SqliteEventStore, queue: SqliteWorkQueue) -> None:
        if store.db is not queue.db:
            raise ValueError("the store and the queue must share one database")
        self.store, self.queue = store, queue

    async def import_log(
        self, log: SessionLog, *, work: Sequence[WorkItem], expire_at_ms: int | None
    ) -> Written:
        # (expire_at_ms follows from the log's last position and the store's retention: the
        # file keeps no expiry of its own.)
        put = self.store.put_log_job(log.session_id, log.entries)
        enqueue = [self.queue.enqueue_job(item) for item in work]
        session_id = log.session_id

        def write(conn: sqlite3.Connection) -> bool:
            if not put(conn):
                return False
            conn.execute(_UNCACHE, (session_id,))
            for job in enqueue:
                job(conn)
            return True

        written = await self.store.db.write(
            write, operation="import session", on_commit=self.queue.wake
        )
        return Written.IMPORTED if written else Written.EXISTS
