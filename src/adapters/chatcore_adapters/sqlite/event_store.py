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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from chatcore.errors import ConcurrencyConflict
from chatcore.events import Event, Recorded
from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import Appended, AppendListener, Clock
from chatcore_adapters.codec import decode_records, encode_event
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms
from chatcore_adapters.sqlite.live import LocalPushes, SqliteLiveSubscription

# SQLite integers are signed 64-bit; a position may name up to 2**64 - 1 (parse_position).
# No stored event is beyond this bound, so clamping a cursor to it changes no answer.
_MAX = 2**63 - 1

_STREAM = "SELECT stream, last_ms, last_seq FROM streams WHERE session_id = ?"
_NEW_STREAM = "INSERT INTO streams (session_id, last_ms, last_seq) VALUES (?, ?, ?)"
_MOVE = "UPDATE streams SET last_ms = ?, last_seq = ? WHERE stream = ?"
_INSERT = "INSERT INTO events (stream, ms, seq, body) VALUES (?, ?, ?, ?)"
_READ = (
    "SELECT ms, seq, body FROM events "
    "WHERE stream = (SELECT stream FROM streams WHERE session_id = ?) "
    "ORDER BY ms, seq LIMIT ?"
)
_READ_AFTER = (
    "SELECT ms, seq, body FROM events "
    "WHERE stream = (SELECT stream FROM streams WHERE session_id = ?) AND (ms, seq) > (?, ?) "
    "ORDER BY ms, seq LIMIT ?"
)
_LAST = "SELECT last_ms, last_seq FROM streams WHERE session_id = ?"


@dataclass(frozen=True, slots=True)
class _Committed:
    records: list[Recorded]
    appended: Appended


def _select(
    conn: sqlite3.Connection, session_id: str, after: tuple[int, int] | None, limit: int
) -> list[Recorded]:
    if after is None:
        rows = conn.execute(_READ, (session_id, limit)).fetchall()
    else:
        ms, seq = min(after[0], _MAX), min(after[1], _MAX)
        rows = conn.execute(_READ_AFTER, (session_id, ms, seq, limit)).fetchall()
    return decode_records((f"{ms}-{seq}", body) for ms, seq, body in rows)


class SqliteEventStore:
    """The :class:`chatcore.ports.EventStore` on an SQLite file."""

    def __init__(self, db: SqliteDatabase, clock: Clock) -> None:
        self.db = db
        self._clock = clock
        self._pushes = LocalPushes()

    def subscribe(self, listener: AppendListener) -> SqliteLiveSubscription:
        return self._pushes.subscribe(listener)

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        if not events:
            raise ValueError("nothing to append")
        batch = tuple(events)
        bodies = [encode_event(event) for event in batch]
        clock = self._clock

        def append(conn: sqlite3.Connection) -> _Committed:
            row = conn.execute(_STREAM, (session_id,)).fetchone()
            actual = None if row is None else f"{row[1]}-{row[2]}"
            if actual != expected_version:
                raise ConcurrencyConflict(session_id, expected_version, actual)
            ms = max(0, epoch_ms(clock))
            if row is None:
                last: tuple[int, int] | None = None
                stream = conn.execute(_NEW_STREAM, (session_id, 0, 0)).lastrowid
            else:
                stream, last = row[0], (row[1], row[2])
            keys: list[tuple[int, int]] = []
            for _ in batch:
                key = (last[0], last[1] + 1) if last is not None and ms <= last[0] else (ms, 0)
                keys.append(key)
                last = key
            conn.executemany(
                _INSERT,
                [(stream, k[0], k[1], body) for k, body in zip(keys, bodies, strict=True)],
            )
            conn.execute(_MOVE, (keys[-1][0], keys[-1][1], stream))
            records = [
                Recorded(position=f"{k[0]}-{k[1]}", event=event)
                for k, event in zip(keys, batch, strict=True)
            ]
            return _Committed(records, Appended(session_id, actual, records))

        committed = await self.db.write(append, operation="append", on_commit=self._announce)
        return committed.records

    def _announce(self, committed: _Committed) -> None:
        self._pushes.publish(committed.appended)

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        key = None if after is None else parse_position(after)
        if limit is not None and limit <= 0:
            return []
        want = -1 if limit is None else limit  # LIMIT -1: no limit

        def read(conn: sqlite3.Connection) -> list[Recorded]:
            return _select(conn, session_id, key, want)

        return await self.db.read(read, operation="read")

    async def last_position(self, session_id: str) -> str | None:
        validate_session_id(session_id)

        def last(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(_LAST, (session_id,)).fetchone()
            return None if row is None else f"{row[0]}-{row[1]}"

        return await self.db.read(last, operation="last_position")
