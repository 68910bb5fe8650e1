"""The event log in SQLite: the ``events`` table, one row per event, keyed by
``(stream, ms, seq)``; ``streams`` maps a session id to its stream number and keeps the
position of its newest event.

Positions are made by the rule of Redis stream ids and of the in-memory store: the clock's
milliseconds, a sequence within one millisecond, and never backwards even when the clock is
(a clock behind the newest event continues its millisecond: ``last_ms-(last_seq+1)``). So
positions are canonical ``<ms>-<seq>`` strings, strictly increasing per session, and a cursor
means the same thing whatever stores the log.

An append is one job of the writer thread: read the session's newest position, compare it
with the expected version, insert every event and move the newest position, all in the
writer's transaction, so a batch is all-or-nothing and two appends at one version cannot both
succeed (I3). Appends queued together share one commit (see :mod:`.database`).

Erasing deletes the rows (``secure_delete`` zeroes what they held) and appends the tombstone
after the newest position, which ``streams`` keeps whatever was erased; deleting a session
deletes its rows and its ``streams`` row. Both then :meth:`~.database.SqliteDatabase.scrub`
the write-ahead log, so the text is in neither file.

With a retention time, a log whose newest position is older than that reads as gone at
once; an append to it starts a new log (the old rows are deleted in the same transaction),
and a sweep during appends (at most every tenth of the retention time, and every minute)
deletes up to :data:`SWEEP_BATCH` such logs at a time, oldest first.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chatcore.errors import ConcurrencyConflict
from chatcore.events import Event, Recorded
from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import Appended, AppendListener, Clock
from chatcore_adapters.codec import decode_records, encode_event
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms
from chatcore_adapters.sqlite.live import LocalPushes, SqliteLiveSubscription

log = logging.getLogger(__name__)

# SQLite integers are signed 64-bit; a position may name up to 2**64 - 1 (parse_position).
# No stored event is beyond this bound, so clamping a cursor to it changes no answer.
_MAX = 2**63 - 1

_STREAM = "SELECT stream, last_ms, last_seq FROM streams WHERE session_id = ?"
_NEW_STREAM = "INSERT INTO streams (session_id, last_ms, last_seq) VALUES (?, ?, ?)"
_MOVE = "UPDATE streams SET last_ms = ?, last_seq = ? WHERE stream = ?"
_INSERT = "INSERT INTO events (stream, ms, seq, body) VALUES (?, ?, ?, ?)"
_READ = (
    "SELECT ms, seq, body FROM events "
    "WHERE stream = (SELECT stream FROM streams WHERE session_id = ? AND last_ms > ?) "
    "ORDER BY ms, seq LIMIT ?"
)
_READ_AFTER = (
    "SELECT ms, seq, body FROM events "
    "WHERE stream = (SELECT stream FROM streams WHERE session_id = ? AND last_ms > ?) "
    "AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT ?"
)
_LAST = "SELECT last_ms, last_seq FROM streams WHERE session_id = ? AND last_ms > ?"
_DROP_EVENTS = "DELETE FROM events WHERE stream = ?"
_DROP_STREAM = "DELETE FROM streams WHERE stream = ?"
_ERASE_ONE = "DELETE FROM events WHERE stream = ? AND ms = ? AND seq = ?"
_EXPIRED = "SELECT stream FROM streams WHERE last_ms <= ? ORDER BY last_ms LIMIT ?"
_REMAINING = "SELECT 1 FROM events WHERE stream = ? LIMIT 1"

# The most expired logs one sweep deletes (one write transaction).
SWEEP_BATCH = 50


@dataclass(frozen=True, slots=True)
class Committed:
    records: list[Recorded]
    appended: Appended


def _select(
    conn: sqlite3.Connection,
    session_id: str,
    after: tuple[int, int] | None,
    limit: int,
    expired: int,
) -> list[Recorded]:
    if after is None:
        rows = conn.execute(_READ, (session_id, expired, limit)).fetchall()
    else:
        ms, seq = min(after[0], _MAX), min(after[1], _MAX)
        rows = conn.execute(_READ_AFTER, (session_id, expired, ms, seq, limit)).fetchall()
    return decode_records((f"{ms}-{seq}", body) for ms, seq, body in rows)


def _drop(conn: sqlite3.Connection, stream: int) -> None:
    conn.execute(_DROP_EVENTS, (stream,))
    conn.execute(_DROP_STREAM, (stream,))


def _next_key(ms: int, last: tuple[int, int] | None) -> tuple[int, int]:
    return (last[0], last[1] + 1) if last is not None and ms <= last[0] else (ms, 0)


def _insert(
    conn: sqlite3.Connection,
    stream: int,
    last: tuple[int, int] | None,
    events: Sequence[Event],
    bodies: list[bytes],
    now_ms: int,
) -> list[Recorded]:
    """Insert ``events`` after ``last`` and make the newest of them the stream's position."""
    ms = max(0, now_ms)
    keys: list[tuple[int, int]] = []
    for _ in events:
        last = _next_key(ms, last)
        keys.append(last)
    conn.executemany(
        _INSERT, [(stream, k[0], k[1], body) for k, body in zip(keys, bodies, strict=True)]
    )
    conn.execute(_MOVE, (keys[-1][0], keys[-1][1], stream))
    return [
        Recorded(position=f"{k[0]}-{k[1]}", event=event)
        for k, event in zip(keys, events, strict=True)
    ]


class SqliteEventStore:
    """The :class:`chatcore.ports.EventStore` on an SQLite file."""

    def __init__(self, db: SqliteDatabase, clock: Clock, *, retention: float | None = None) -> None:
        if retention is not None and retention <= 0:
            raise ValueError("retention must be positive")
        self.db = db
        self.retention = retention
        self._clock = clock
        self._pushes = LocalPushes()
        self._retention_ms = None if retention is None else max(1, int(retention * 1000))
        self._next_sweep = 0.0

    def subscribe(self, listener: AppendListener) -> SqliteLiveSubscription:
        return self._pushes.subscribe(listener)

    def _expired_before(self) -> int:
        """Logs whose newest position is at or before this are gone (-1: none is)."""
        if self._retention_ms is None:
            return -1
        return epoch_ms(self._clock) - self._retention_ms

    def _live(self, conn: sqlite3.Connection, session_id: str, expired: int) -> Any:
        """The session's ``streams`` row, or ``None``; an expired log is deleted here."""
        row = conn.execute(_STREAM, (session_id,)).fetchone()
        if row is not None and row[1] <= expired:
            _drop(conn, row[0])
            return None
        return row

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        job = self.append_job(session_id, events, expected_version=expected_version)
        committed = await self.db.write(job, operation="append", on_commit=self.announce)
        await self.sweep_if_due()
        return committed.records

    def append_job(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> Callable[[sqlite3.Connection], Committed]:
        """The writer's job of :meth:`append` (for :class:`SqliteIntake` to run beside
        another in one transaction); hand its value to :meth:`announce` once committed."""
        validate_session_id(session_id)
        if not events:
            raise ValueError("nothing to append")
        batch = tuple(events)
        bodies = [encode_event(event) for event in batch]
        clock = self._clock
        expired = self._expired_before()

        def append(conn: sqlite3.Connection) -> Committed:
            row = self._live(conn, session_id, expired)
            actual = None if row is None else f"{row[1]}-{row[2]}"
            if actual != expected_version:
                raise ConcurrencyConflict(session_id, expected_version, actual)
            last: tuple[int, int] | None = None
            if row is None:
                stream = int(conn.execute(_NEW_STREAM, (session_id, 0, 0)).lastrowid or 0)
            else:
                stream, last = row[0], (row[1], row[2])
            records = _insert(conn, stream, last, batch, bodies, epoch_ms(clock))
            return Committed(records, Appended(session_id, actual, records))

        return append

    def put_log_job(
        self, session_id: str, entries: Sequence[tuple[str, bytes]]
    ) -> Callable[[sqlite3.Connection], bool]:
        """The writer's job that stores ``entries`` (positions strictly increasing, the codec's
        bytes) as the whole log of a session the file does not have, at their positions; it
        returns ``False``, writing nothing, when the file has the session (an expired log
        counts as none and is deleted). For moving sessions between stores
        (:mod:`chatcore_adapters.archive`): nothing is pushed to subscribers."""
        validate_session_id(session_id)
        if not entries:
            raise ValueError("a log has at least one event")
        rows = [(*parse_position(position), body) for position, body in entries]
        if any(ms > _MAX or seq > _MAX for ms, seq, _ in rows):
            raise ValueError("a position is beyond what SQLite holds")
        if any(a[:2] >= b[:2] for a, b in itertools.pairwise(rows)):
            raise ValueError("positions must be strictly increasing")
        expired = self._expired_before()
        last_ms, last_seq, _ = rows[-1]

        def put(conn: sqlite3.Connection) -> bool:
            if self._live(conn, session_id, expired) is not None:
                return False
            stream = int(conn.execute(_NEW_STREAM, (session_id, last_ms, last_seq)).lastrowid or 0)
            conn.executemany(_INSERT, [(stream, ms, seq, body) for ms, seq, body in rows])
            return True

        return put

    def announce(self, committed: Committed) -> None:
        """Hand a committed append to the live subscribers."""
        self._pushes.publish(committed.appended)

    async def erase(
        self,
        session_id: str,
        positions: Sequence[str],
        *,
        tombstone: Sequence[Event],
        expected_version: str,
    ) -> list[Recorded]:
        validate_session_id(session_id)
        if not tombstone:
            raise ValueError("an erase appends at least one event")
        gone = sorted({parse_position(p) for p in positions})
        batch = tuple(tombstone)
        bodies = [encode_event(event) for event in batch]
        clock = self._clock
        expired = self._expired_before()

        def erase(conn: sqlite3.Connection) -> Committed:
            row = self._live(conn, session_id, expired)
            actual = None if row is None else f"{row[1]}-{row[2]}"
            if row is None or actual != expected_version:
                raise ConcurrencyConflict(session_id, expected_version, actual)
            stream = row[0]
            conn.executemany(
                _ERASE_ONE,
                [(stream, ms, seq) for ms, seq in gone if ms <= _MAX and seq <= _MAX],
            )
            if conn.execute(_REMAINING, (stream,)).fetchone() is None:
                # (rolled back with this job: nothing was erased)
                raise ValueError("erasing every event of a log is refused; delete the session")
            records = _insert(conn, stream, (row[1], row[2]), batch, bodies, epoch_ms(clock))
            return Committed(records, Appended(session_id, actual, records))

        committed = await self.db.write(erase, operation="erase", on_commit=self.announce)
        await self.db.scrub()
        return committed.records

    async def delete_session(self, session_id: str, *, farewell: Event | None = None) -> bool:
        validate_session_id(session_id)
        clock = self._clock
        expired = self._expired_before()

        def delete(conn: sqlite3.Connection) -> Committed | None:
            row = self._live(conn, session_id, expired)
            if row is None:
                return None
            _drop(conn, row[0])
            if farewell is None:
                return Committed([], Appended(session_id, None, []))
            key = _next_key(max(0, epoch_ms(clock)), (row[1], row[2]))
            record = Recorded(position=f"{key[0]}-{key[1]}", event=farewell)
            return Committed([record], Appended(session_id, f"{row[1]}-{row[2]}", [record]))

        def announce(committed: Committed | None) -> None:
            if committed is not None and committed.records:
                self._pushes.publish(committed.appended)

        deleted = await self.db.write(delete, operation="delete session", on_commit=announce)
        if deleted is None:
            return False
        await self.db.scrub()
        return True

    async def sweep_if_due(self) -> None:
        """Delete logs past their retention time, a batch at a time (see the module)."""
        if self._retention_ms is None:
            return
        now = self._clock.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(self._retention_ms / 10_000, 60.0)
        expired = self._expired_before()

        def sweep(conn: sqlite3.Connection) -> int:
            streams = [r[0] for r in conn.execute(_EXPIRED, (expired, SWEEP_BATCH)).fetchall()]
            for stream in streams:
                _drop(conn, stream)
            return len(streams)

        swept = await self.db.write(sweep, operation="retention sweep")
        if swept:
            log.info("expired sessions deleted", extra={"sessions": swept})

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        key = None if after is None else parse_position(after)
        if limit is not None and limit <= 0:
            return []
        want = -1 if limit is None else limit  # LIMIT -1: no limit
        expired = self._expired_before()

        def read(conn: sqlite3.Connection) -> list[Recorded]:
            return _select(conn, session_id, key, want, expired)

        return await self.db.read(read, operation="read")

    async def last_position(self, session_id: str) -> str | None:
        validate_session_id(session_id)
        expired = self._expired_before()

        def last(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(_LAST, (session_id, expired)).fetchone()
            return None if row is None else f"{row[0]}-{row[1]}"

        return await self.db.read(last, operation="last_position")
