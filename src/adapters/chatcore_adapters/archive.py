"""Moving a deployment's sessions between stores: an archive of every session's event log,
written from one store and read into another (``chatcore export`` / ``chatcore import``).

**The archive** is JSON lines, UTF-8:

* line 1, the header: ``{"format": "chatcore.sessions", "version": 1, "exported_at": ...,
  "source": "sqlite", "key_ids": [...]}``. ``key_ids`` are the public ids of the token keys
  of the deployment exported (the signing key's first; every token carries its key's id), never
  a key: an import compares them with its own keys and warns when tokens of the old deployment
  would not verify on the new one;
* one line per session: ``{"session_id": ..., "records": [[position, event], ...]}``, every
  event of its log, oldest first, at its position, as the store keeps it (the codec's JSON text
  with its schema version: an event of an older schema stays as it was written, and the codec
  upcasts it when it is read, as it would have in the old store);
* last, ``{"end": {"sessions": N, "events": M}}``: an archive without it, or whose counts
  differ, is incomplete (a copy cut short) and refused.

**Exporting** reads the sessions a :class:`LogSource` lists, each in one read (one moment of
that session: a read transaction on SQLite, one ``XRANGE`` on Redis). Sessions are read one
after the other, so the archive is not one moment of the whole deployment: a session created
after the listing is missing, one deleted before its read is left out.

**Importing** checks the whole archive first (every line: JSON, the header's format and
version, session ids, positions increasing, every event readable, a log that opens its own
session, the end line) and writes nothing when any line is wrong. It then hands each session
to a :class:`LogImport` of the target, which writes the log at its positions (cursors clients
hold stay valid) together with a work item for every turn still awaiting an answer (the worker
that takes it closes a reply cut off by the move as abandoned and answers again), and refuses a
session the target already has. A session whose last event is older than the target's
retention time is not written: the target would delete it at once.

Every storage family has its own :class:`LogImport` (``memory.archive``, ``sqlite.archive``,
``redis.archive``), and SQLite and Redis a :class:`LogSource`; :func:`log_import` picks the
one for a chatcore's store and queue.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatcore.errors import ChatcoreError, CorruptRecord, InvalidIdentifier
from chatcore.events import Recorded
from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import Clock, WorkItem
from chatcore.view import fold
from chatcore_adapters.codec import decode_records
from chatcore_adapters.settings import Storage

if TYPE_CHECKING:
    from chatcore_adapters.bootstrap import Chatcore

log = logging.getLogger(__name__)

ARCHIVE_FORMAT: Literal["chatcore.sessions"] = "chatcore.sessions"
ARCHIVE_VERSION = 1
# Positions every store can hold: SQLite keeps each part in a signed 64-bit integer, and Redis
# takes no stream id at or below 0-0.
_POSITION_LIMIT = 2**63
# How many problems a check of an archive reports before it stops looking.
MAX_PROBLEMS = 20

# One stored event: its position and the codec's bytes of it.
Entry = tuple[str, bytes]


class ArchiveHeader(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["chatcore.sessions"] = ARCHIVE_FORMAT
    version: int = ARCHIVE_VERSION
    exported_at: datetime
    source: Storage
    key_ids: list[str] = Field(default_factory=list)


class _Counts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sessions: int = Field(ge=0)
    events: int = Field(ge=0)


class _End(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    end: _Counts


class _SessionLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    records: list[tuple[str, str]] = Field(min_length=1)


class ArchiveError(ChatcoreError):
    """A line of an archive that cannot be imported (``line`` counts from 1; 0: the file)."""

    code = "archive_invalid"

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class LogProblem(ValueError):
    """A session's log that no store should hold (not a log of that session, unreadable)."""


# --- one session's log ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionLog:
    """One session's log as stored, checked: ``entries`` are the stored bytes at their
    positions, ``records`` the events they decode to."""

    session_id: str
    entries: list[Entry]
    records: list[Recorded]

    @property
    def last_position(self) -> str:
        return self.entries[-1][0]

    @property
    def last_ms(self) -> int:
        return parse_position(self.last_position)[0]

    def awaiting(self, now: datetime) -> list[WorkItem]:
        """A work item for every turn still awaiting its answer (none given yet, or one cut
        off): what a worker of the target must take up."""
        view = fold(self.records)
        return [
            WorkItem(
                session_id=self.session_id,
                conversation_id=conv.conversation_id,
                message_id=turn.message_id,
                enqueued_at=now,
            )
            for conv, turn in view.pending_turns()
        ]


def checked_log(session_id: str, entries: Sequence[Entry]) -> SessionLog:
    """``entries`` as the log of ``session_id``, or :class:`LogProblem` saying why not:
    positions valid and strictly increasing, every event readable, and a log that opens this
    session."""
    try:
        validate_session_id(session_id)
    except InvalidIdentifier:
        raise LogProblem(f"{session_id!r} is not a session id") from None
    if not entries:
        raise LogProblem(f"session {session_id} has no events")
    previous: tuple[int, int] = (0, 0)
    for position, _ in entries:
        try:
            key = parse_position(position)
        except InvalidIdentifier:
            raise LogProblem(f"{position!r} is not a position") from None
        if key[0] >= _POSITION_LIMIT or key[1] >= _POSITION_LIMIT:
            raise LogProblem(f"position {position} is beyond what a store holds")
        if key <= previous:
            after = "0-0" if previous == (0, 0) else f"{previous[0]}-{previous[1]}"
            raise LogProblem(f"position {position} does not come after {after}")
        previous = key
    try:
        records = decode_records(entries)
    except CorruptRecord as exc:
        raise LogProblem(exc.message) from None
    view = fold(records)
    if not view.opened or view.session_id != session_id:
        raise LogProblem(f"the log does not open session {session_id} (its first event)")
    return SessionLog(session_id, list(entries), records)


# --- the capabilities a storage family offers ----------------------------------------------


@runtime_checkable
class LogSource(Protocol):
    """Where an export reads sessions from."""

    def session_ids(self) -> AsyncIterator[str]:
        """Every session of the store (each once), in no particular order."""
        ...

    async def read_log(self, session_id: str) -> list[Entry]:
        """The session's whole log as stored, read at one moment (empty: gone meanwhile)."""
        ...


class Written(enum.Enum):
    """What a :class:`LogImport` did with one session."""

    IMPORTED = "imported"  # the log and its work were written
    EXISTS = "exists"  # the target has the session: nothing was written
    # The target has the session from an earlier import that stopped before it queued the
    # session's work: that work was queued now.
    RESUMED = "resumed"


class LogImport(Protocol):
    """Where an import writes sessions to."""

    async def import_log(
        self, log: SessionLog, *, work: Sequence[WorkItem], expire_at_ms: int | None
    ) -> Written:
        """Write ``log`` at its positions and queue ``work``, unless the store already has
        the session. The log appears whole or not at all, its cached view (if any) is dropped,
        and it expires at ``expire_at_ms`` (Unix ms; ``None``: only by the store's own
        rule). Where the store and the queue share a transaction, the work is queued in it."""
        ...


# --- writing an archive ---------------------------------------------------------------------


@dataclass(slots=True)
class ExportSummary:
    sessions: int = 0
    events: int = 0
    # Sessions left out: (session id, why).
    left_out: list[tuple[str, str]] = field(default_factory=list)


def _line(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def export_archive(
    out: IO[bytes],
    source: LogSource,
    *,
    kind: Storage,
    exported_at: datetime,
    key_ids: Sequence[str] = (),
) -> ExportSummary:
    """Write every session of ``source`` to ``out`` as an archive (see the module). A
    session whose log does not check (:func:`checked_log`) is left out and named in the
    summary; the others are written."""
    header = ArchiveHeader(exported_at=exported_at, source=kind, key_ids=list(key_ids))
    out.write(header.model_dump_json().encode() + b"\n")
    summary = ExportSummary()
    async for session_id in source.session_ids():
        entries = await source.read_log(session_id)
        if not entries:
            continue  # deleted (or expired) since it was listed
        try:
            checked = checked_log(session_id, entries)
        except LogProblem as exc:
            summary.left_out.append((session_id, str(exc)))
            continue
        records = [[position, raw.decode()] for position, raw in checked.entries]
        out.write(_line({"session_id": session_id, "records": records}))
        summary.sessions += 1
        summary.events += len(records)
    for session_id, why in summary.left_out:
        log.error("session left out of the archive", extra={"session_id": session_id, "error": why})
    out.write(_line({"end": {"sessions": summary.sessions, "events": summary.events}}))
    out.flush()
    return summary


# --- reading an archive ---------------------------------------------------------------------


class ArchiveReader:
    """An archive file, read line by line (a session's log at a time in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self, file: IO[bytes]) -> Iterator[tuple[int, Any]]:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                raise ArchiveError(number, "an empty line")
            try:
                yield number, json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise ArchiveError(number, f"not JSON ({str(exc)[:120]})") from None

    def header(self) -> ArchiveHeader:
        """The header, or :class:`ArchiveError` for a file that is not an archive this code
        reads."""
        with self._open() as file:
            for number, data in self._lines(file):
                return _header(number, data)
        raise ArchiveError(0, f"{self.path} is empty")

    def _open(self) -> IO[bytes]:
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise ArchiveError(0, f"cannot read {self.path}: {exc.strerror}") from None

    def sessions(self) -> Iterator[tuple[int, SessionLog]]:
        """Every session with its line number, checked; :class:`ArchiveError` at the first
        line that is wrong (the end line included)."""
        for item in self._walk(stop_at_first=True):
            if isinstance(item, ArchiveError):
                raise item
            yield item

    def check(self, max_problems: int = MAX_PROBLEMS) -> tuple[_Counts, list[ArchiveError]]:
        """Read the whole archive: its counts and its problems (the first ``max_problems``).
        A problem with the header or the end stops the check there."""
        sessions = events = 0
        problems: list[ArchiveError] = []
        for item in self._walk(stop_at_first=False):
            if isinstance(item, ArchiveError):
                problems.append(item)
                if len(problems) >= max_problems:
                    break
                continue
            sessions += 1
            events += len(item[1].entries)
        return _Counts(sessions=sessions, events=events), problems

    def _walk(self, *, stop_at_first: bool) -> Iterator[tuple[int, SessionLog] | ArchiveError]:
        """The sessions in order, and an :class:`ArchiveError` for each bad line (after a bad
        header, JSON that does not parse or a bad end, nothing more)."""
        seen: set[str] = set()
        counted = _Counts(sessions=0, events=0)
        try:
            opened = self._open()
        except ArchiveError as exc:
            yield exc
            return
        with opened as file:
            lines = self._lines(file)
            try:
                number, data = next(lines)
            except StopIteration:
                yield ArchiveError(0, f"{self.path} is empty")
                return
            except ArchiveError as exc:
                yield exc
                return
            try:
                _header(number, data)
            except ArchiveError as exc:
                yield exc
                return
            end: int | None = None
            bad = False
            try:
                for number, data in lines:
                    if end is not None:
                        yield ArchiveError(number, f"a line after the end line (line {end})")
                        return
                    if isinstance(data, dict) and "end" in data:
                        end = number
                        # (after a bad session line the counts cannot agree: that line said so)
                        problem = _end_problem(number, data, None if bad else counted)
                        if problem is not None:
                            yield problem
                            return
                        continue
                    try:
                        checked = _session(number, data, seen)
                    except ArchiveError as exc:
                        yield exc
                        if stop_at_first:
                            return
                        bad = True
                        continue
                    seen.add(checked.session_id)
                    counted = _Counts(
                        sessions=counted.sessions + 1,
                        events=counted.events + len(checked.entries),
                    )
                    yield number, checked
            except ArchiveError as exc:  # a line that is not JSON
                yield exc
                return
            if end is None:
                yield ArchiveError(
                    0,
                    f"{self.path} ends without its end line: the archive is incomplete "
                    "(cut short while written or copied)",
                )


def _header(number: int, data: Any) -> ArchiveHeader:
    if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(number, f"not a chatcore session archive (no {ARCHIVE_FORMAT} header)")
    version = data.get("version")
    if version != ARCHIVE_VERSION:
        raise ArchiveError(
            number,
            f"archive format version {version!r} is not one this chatcore reads "
            f"({ARCHIVE_VERSION}); import it with the chatcore that wrote it or a newer one",
        )
    try:
        return ArchiveHeader.model_validate(data)
    except ValidationError as exc:
        raise ArchiveError(number, f"a bad header: {_first_error(exc)}") from None


def _end_problem(number: int, data: Any, counted: _Counts | None) -> ArchiveError | None:
    """What is wrong with the end line (``counted``: what it must count, if known)."""
    try:
        end = _End.model_validate(data).end
    except ValidationError as exc:
        return ArchiveError(number, f"a bad end line: {_first_error(exc)}")
    if counted is not None and end != counted:
        return ArchiveError(
            number,
            f"the end line counts {end.sessions} sessions and {end.events} events, the archive "
            f"holds {counted.sessions} and {counted.events}: it is incomplete or was edited",
        )
    return None


def _session(number: int, data: Any, seen: set[str]) -> SessionLog:
    try:
        line = _SessionLine.model_validate(data)
    except ValidationError as exc:
        raise ArchiveError(number, f"not a session line: {_first_error(exc)}") from None
    if line.session_id in seen:
        raise ArchiveError(number, f"session {line.session_id} is in the archive twice")
    try:
        return checked_log(
            line.session_id, [(position, event.encode()) for position, event in line.records]
        )
    except LogProblem as exc:
        raise ArchiveError(number, str(exc)) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "the line"
    return f"{where}: {error['msg']}"


# --- importing ------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportSummary:
    sessions: int = 0
    events: int = 0
    # Work items queued for turns awaiting their answer.
    queued: int = 0
    # Sessions the target already had (nothing written): their ids.
    existing: list[str] = field(default_factory=list)
    # Sessions an earlier, interrupted import had written, whose work was queued now.
    resumed: int = 0
    # Sessions older than the target's retention time (not written).
    expired: int = 0

    @property
    def skipped(self) -> int:
        return len(self.existing) + self.expired


class ArchiveInvalid(ChatcoreError):
    """An archive with problems: nothing of it was imported."""

    code = "archive_invalid"

    def __init__(self, path: Path, problems: Sequence[ArchiveError]) -> None:
        super().__init__(f"{path} cannot be imported: " + "; ".join(p.message for p in problems))
        self.problems = list(problems)


async def import_archive(
    path: Path,
    target: LogImport,
    *,
    clock: Clock,
    retention: float | None,
) -> ImportSummary:
    """Import the archive at ``path`` into ``target`` (see the module). Raises
    :class:`ArchiveInvalid` before writing anything when a line is wrong. ``retention`` is
    the target's (its sessions' idle time, seconds)."""
    reader = ArchiveReader(path)
    _, problems = reader.check()
    if problems:
        raise ArchiveInvalid(path, problems)
    summary = ImportSummary()
    retention_ms = None if retention is None else int(retention * 1000)
    for _, checked in reader.sessions():
        now = clock.now()
        expire_at = None if retention_ms is None else checked.last_ms + retention_ms
        if expire_at is not None and expire_at <= int(now.timestamp() * 1000):
            summary.expired += 1
            continue
        work = checked.awaiting(now)
        written = await target.import_log(checked, work=work, expire_at_ms=expire_at)
        if written is Written.EXISTS:
            summary.existing.append(checked.session_id)
            log.info(
                "session not imported: the target has it", extra={"session_id": checked.session_id}
            )
            continue
        summary.queued += len(work)
        if written is Written.RESUMED:
            summary.resumed += 1
            continue
        summary.sessions += 1
        summary.events += len(checked.entries)
    return summary


def log_import(chat: Chatcore) -> LogImport:
    """The :class:`LogImport` of ``chat``'s store, writing work to its queue (a store and a
    queue of one family). ``TypeError`` for any other pair."""
    from chatcore_adapters.memory import MemoryEventStore, MemoryWorkQueue

    store, queue = chat.store, chat.queue
    if isinstance(store, MemoryEventStore) and isinstance(queue, MemoryWorkQueue):
        from chatcore_adapters.memory.archive import MemoryLogArchive

        return MemoryLogArchive(store, queue, chat.clock)
    # (A family whose module was never imported has no store here: importing it would need
    # its extra installed.)
    if "chatcore_adapters.sqlite" in sys.modules:
        from chatcore_adapters.sqlite import SqliteEventStore, SqliteWorkQueue

        if isinstance(store, SqliteEventStore) and isinstance(queue, SqliteWorkQueue):
            from chatcore_adapters.sqlite.archive import SqliteLogImport

            return SqliteLogImport(store, queue)
    if "chatcore_adapters.redis" in sys.modules:
        from chatcore_adapters.redis import RedisEventStore, RedisWorkQueue

        if isinstance(store, RedisEventStore) and isinstance(queue, RedisWorkQueue):
            from chatcore_adapters.redis.archive import RedisLogArchive

            return RedisLogArchive(store, queue)
    raise TypeError(f"no archive import for a {type(store).__name__} with a {type(queue).__name__}")


def log_source(chat: Chatcore) -> LogSource:
    """The :class:`LogSource` of ``chat``'s store, for the families read through a running
    chatcore (memory, Redis). An SQLite file is read by
    :class:`~chatcore_adapters.sqlite.archive.SqliteLogReader` instead, beside the process
    that holds it. ``TypeError`` for any other store."""
    source = log_import(chat)
    if not isinstance(source, LogSource):
        raise TypeError(
            f"a {type(chat.store).__name__} is exported with its own reader, not through "
            "a running chatcore"
        )
    return source
