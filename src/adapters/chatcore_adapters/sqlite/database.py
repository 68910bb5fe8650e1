"""One SQLite file shared by every SQLite adapter of a process: how it is opened, written and
read without blocking the event loop.

**Threads.** ``sqlite3`` calls block, so none runs on the event loop. One *writer thread* owns
the only connection that writes; every write of every adapter is a job on its queue. A pool of
*reader threads* (``SqliteSettings.readers``), each with its own read-only connection, runs the
reads; in WAL mode they never wait for the writer, nor it for them. A job is a plain function
of a connection, so a read decodes its rows in the reader thread too and the loop receives
finished objects (a 10,000-event restore does not hold the loop for its decoding).

**Group commit.** The writer takes every job queued while it was busy (up to
``max_batch``) and runs them in ONE transaction, each inside its own savepoint: one commit,
one WAL write for many appends of many replies. A job that raises is rolled back to its
savepoint alone and its caller gets the error; the others commit. An SQLite error (busy, full,
I/O) fails the whole transaction, which is rolled back: every job of it gets
:class:`~chatcore.errors.StoreUnavailable` and none of them happened. A caller is answered
only after the commit returned.

**Durability.** The file is in WAL mode (``journal_mode=WAL``). With the default
``synchronous="normal"`` a commit has written its WAL frames to the operating system before
the writer answers, without waiting for the disk (``fsync`` runs at checkpoints):

* killing the process (``kill -9``, a crash, an OOM kill) loses nothing that was answered:
  the frames are in the OS's page cache and the next open replays them;
* a power loss or an OS crash may lose the last transactions answered before it: those since
  the last checkpoint's ``fsync`` (SQLite checkpoints when the WAL reaches 1,000 pages, about
  4 MB, so on a quiet server that can be minutes of conversation). The file is not damaged by
  it, on a disk that honours ``fsync``: it comes back exactly as it was after some earlier
  commit, so each session's log is a prefix of what it was, with no gap and no half-written
  append. A client may have seen events that are gone; its cursor is then ahead of the log,
  and it reads nothing until new events come (with later positions).

``synchronous="full"`` makes every commit wait for an ``fsync`` of the WAL: an answered append
then survives a power loss too, on a disk that honours ``fsync``, at the cost of one ``fsync``
per transaction (group commit shares it between the appends waiting together;
``docs/benchmarks.md`` has the figures).

**Deleted content.** ``secure_delete`` is on: SQLite overwrites with zeros what a delete or an
update frees, instead of leaving it in free pages. The write-ahead log still holds the pages
as they were written, text included, until it is reset; :meth:`SqliteDatabase.scrub` (after
a conversation or a session is deleted) checkpoints it into the file and truncates it, so
the deleted text is in neither file afterwards.

**Errors.** No ``sqlite3`` exception leaves this module: see
:mod:`chatcore_adapters.sqlite.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from chatcore.errors import PortError, StoreUnavailable
from chatcore.ports import Clock
from chatcore_adapters.sqlite.errors import (
    CorruptDatabase,
    DatabaseUnusable,
    error_name,
    log_failure,
    port_error,
    primary_code,
    translate,
)
from chatcore_adapters.sqlite.schema import MIGRATIONS, Migration, migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

_HEADER = b"SQLite format 3\x00"
# Primary result codes, from sqlite3.h.
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_AUTH = 23


def epoch_ms(clock: Clock) -> int:
    """The clock's wall time in milliseconds since the epoch: the one clock every process
    sharing a file agrees on, stored for expiries and idle times (a restart keeps them)."""
    return int(clock.now().timestamp() * 1000)


def statement(sql: str, params: Sequence[object] = ()) -> Callable[[sqlite3.Connection], int]:
    """A job that runs one statement and returns the number of rows it changed."""

    def run(conn: sqlite3.Connection) -> int:
        return conn.execute(sql, params).rowcount

    return run


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    """How the file is used. Times are in seconds."""

    # "normal": durable against a crash of the process; "full": against a power loss too.
    synchronous: Literal["normal", "full"] = "normal"
    # How long a statement waits for a lock held by another process before it fails with
    # StoreUnavailable.
    busy_timeout: float = 5.0
    # Reader threads (each with its own connection).
    readers: int = 2
    # The most jobs one write transaction takes (1: no group commit).
    max_batch: int = 256
    # A cap on the file's size; a write that would pass it fails with StoreUnavailable
    # (SQLITE_FULL) and does not happen. None: no cap but the disk's.
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.synchronous not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        if self.busy_timeout < 0:
            raise ValueError("busy_timeout must not be negative")
        if self.readers < 1 or self.max_batch < 1:
            raise ValueError("readers and max_batch must be at least 1")
        if self.max_bytes is not None and self.max_bytes < 65536:
            raise ValueError("max_bytes must be at least 64 KiB")


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    operation: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    on_commit: Callable[[Any], None] | None
    # Run by the writer alone, outside any transaction (a checkpoint).
    bare: bool = False


# (job, succeeded, its value or its exception)
_Outcome = tuple[_Job, bool, Any]


class SqliteDatabase:
    """The open file: one writer thread, a pool of reader threads. Build it with
    :meth:`open`, hand it to each adapter, and :meth:`close` it when the process stops."""

    def __init__(self, path: Path, settings: SqliteSettings, writer: sqlite3.Connection) -> None:
        self.path = path
        self.settings = settings
        self._closed = False
        self._stopping = False  # the writer met close()'s marker
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer_conn = writer
        self._writer = threading.Thread(
            target=self._write_loop, name="chatcore-sqlite-writer", daemon=True
        )
        self._reads: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._readers = [
            threading.Thread(
                target=self._read_loop, name=f"chatcore-sqlite-reader-{n}", daemon=True
            )
            for n in range(settings.readers)
        ]
        # Counters for tests and benchmarks: write transactions, and jobs they carried.
        self.transactions = 0
        self.jobs = 0
        self._scrub_later: asyncio.Task[None] | None = None
        self._writer.start()
        for reader in self._readers:
            reader.start()

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        settings: SqliteSettings | None = None,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> SqliteDatabase:
        """Open (or create) the database at ``path`` and bring its schema up to date.

        Blocking: call it at start-up (or through ``asyncio.to_thread``). Raises
        :class:`DatabaseUnusable` (a corrupt file, a file of a newer chatcore, a file or
        directory that cannot be written) or :class:`StoreUnavailable` (the file is locked by
        another process beyond the busy timeout), each naming the file."""
        settings = settings or SqliteSettings()
        if os.fspath(path) in ("", ":memory:") or os.fspath(path).startswith("file:"):
            raise ValueError("the SQLite adapters need a file path (several connections use it)")
        where = Path(path).absolute()
        _check_location(where)
        try:
            conn = _connect(where, settings)
        except sqlite3.Error as exc:
            raise _open_error(exc, where) from None
        try:
            _configure_writer(conn, where, settings)
            before = migrate(conn, where, migrations)
        except sqlite3.Error as exc:
            conn.close()
            raise _open_error(exc, where) from None
        except BaseException:
            conn.close()
            raise
        if before != len(migrations):
            log.info(
                "sqlite schema migrated",
                extra={"path": str(where), "from_version": before, "to_version": len(migrations)},
            )
        return cls(where, settings, conn)

    # --- writing ------------------------------------------------------------------------------

    async def write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        operation: str,
        on_commit: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn`` in the writer thread inside a write transaction (shared with the jobs
        queued beside it) and return its value once that transaction committed.

        ``on_commit`` is called with the value on the event loop, right after the commit and
        before the caller resumes, in commit order, even if the caller was cancelled
        meanwhile (live pushes rely on it). An exception ``fn`` raises reaches the caller, and
        ``fn``'s writes are undone."""
        if self._closed:
            raise StoreUnavailable(f"sqlite {operation} failed on {self.path}: it is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(_Job(fn, operation, loop, future, cast(Any, on_commit)))
        return cast(T, await future)

    def _write_loop(self) -> None:
        conn = self._writer_conn
        try:
            while (batch := self._next_batch()) is not None:
                for part in _split_bare(batch):
                    if part[0].bare:
                        self._deliver([self._run_bare(conn, part[0])])
                    else:
                        self._deliver(self._run_guarded(conn, part))
                del part
                # Hold nothing of a delivered batch while waiting for the next one: a job
                # leads to its future, and so to its result (10,000 events, a whole view).
                del batch
        finally:
            conn.close()

    def _next_batch(self) -> list[_Job] | None:
        """The next job and every job queued behind it (up to ``max_batch``); ``None`` once
        :meth:`close` asked to stop and the jobs queued before it are done."""
        if self._stopping:
            return None
        first = self._jobs.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.settings.max_batch:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stopping = True
                break
            batch.append(job)
        return batch

    def _run_bare(self, conn: sqlite3.Connection, job: _Job) -> _Outcome:
        try:
            return (job, True, job.fn(conn))
        except sqlite3.Error as exc:
            return (job, False, translate(exc, self.path, job.operation))
        except Exception as exc:  # noqa: BLE001 - the job's own failure, for its caller
            return (job, False, exc)

    def _run_guarded(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[_Outcome]:
        try:
            return self._run_batch(conn, batch)
        except Exception:  # a bug here: answer the callers, never leave them waiting
            log.exception("sqlite writer failed", extra={"path": str(self.path)})
            failed = f"sqlite write failed on {self.path}"
            return [(job, False, StoreUnavailable(failed)) for job in batch]

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        shared = len(batch) > 1  # a job alone needs no savepoint: its failure undoes all
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                if shared:
                    conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except sqlite3.Error:
                    raise
                except Exception as exc:  # noqa: BLE001 - the job's own failure, for its caller
                    # Undo this job alone; the others of the transaction go on.
                    conn.execute("ROLLBACK TO job" if shared else "ROLLBACK")
                    outcomes.append((job, False, exc))
                else:
                    outcomes.append((job, True, value))
                if shared:
                    conn.execute("RELEASE job")
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("sqlite rollback failed", extra={"path": str(self.path)})
            log_failure(exc, self.path, f"write of {len(batch)} jobs")
            return [(job, False, port_error(exc, self.path, job.operation)) for job in batch]
        self.transactions += 1
        self.jobs += len(batch)
        return outcomes

    def _deliver(self, outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, mine in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, mine)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                log.debug("sqlite results for a closed event loop dropped")

    # --- reading ------------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, operation: str) -> T:
        """Run ``fn`` in a reader thread with that thread's read-only connection (each
        statement sees every transaction committed before it started)."""
        if self._closed:
            raise StoreUnavailable(f"sqlite {operation} failed on {self.path}: it is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._reads.put(_Job(fn, operation, loop, future, None))
        return cast(T, await future)

    def _read_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                job = self._reads.get()
                if job is None:
                    break
                try:
                    if conn is None:
                        conn = _connect(self.path, self.settings)
                        conn.execute("PRAGMA query_only = ON")
                    outcome: _Outcome = (job, True, job.fn(conn))
                except sqlite3.Error as exc:
                    outcome = (job, False, translate(exc, self.path, job.operation))
                except Exception as exc:  # noqa: BLE001 - the job's own failure, for its caller
                    outcome = (job, False, exc)
                self._deliver([outcome])
                del job, outcome  # hold no result while waiting (see _write_loop)
        finally:
            if conn is not None:
                conn.close()

    # --- maintenance --------------------------------------------------------------------------

    async def scrub(self) -> bool:
        """Move the write-ahead log into the file and truncate it (a ``TRUNCATE`` checkpoint,
        by the writer between transactions), so no page of it keeps deleted content; then
        again about a second later, for the writes that follow a deletion (the cache's new
        view). ``False`` when a reader kept the checkpoint from finishing (the log is then
        reset by a later scrub or checkpoint)."""
        done = await self._checkpoint()
        loop = asyncio.get_running_loop()
        if self._scrub_later is None or self._scrub_later.done():
            self._scrub_later = loop.create_task(self._scrub_again(), name="chatcore-sqlite-scrub")
        return done

    async def _scrub_again(self) -> None:
        await asyncio.sleep(1.0)
        if not self._closed:
            try:
                await self._checkpoint()
            except StoreUnavailable:
                log.warning("sqlite scrub failed", extra={"path": str(self.path)}, exc_info=True)

    async def _checkpoint(self) -> bool:
        if self._closed:
            raise StoreUnavailable(f"sqlite checkpoint failed on {self.path}: it is closed")

        def checkpoint(conn: sqlite3.Connection) -> bool:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return not busy

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(_Job(checkpoint, "checkpoint", loop, future, None, bare=True))
        done = bool(await future)
        if not done:
            log.warning(
                "sqlite checkpoint could not finish: a reader held the log",
                extra={"path": str(self.path)},
            )
        return done

    async def backup(self, target: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the database to ``target`` (a new file) while it is in
        use, with ``VACUUM INTO``: a snapshot as of one moment, compacted; writers go on
        meanwhile (in WAL mode a reader blocks nobody)."""

        def copy() -> None:
            where = Path(target).absolute()
            if where.exists():
                raise FileExistsError(f"the backup target {where} already exists")
            conn = _connect(self.path, self.settings)
            try:
                conn.execute("VACUUM INTO ?", (str(where),))
            finally:
                conn.close()

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, copy)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "backup") from None

    async def close(self) -> None:
        """Finish the queued writes, stop the threads and close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._scrub_later is not None:
            self._scrub_later.cancel()
        self._jobs.put(None)
        for _ in self._readers:
            self._reads.put(None)
        loop = asyncio.get_running_loop()
        for thread in (self._writer, *self._readers):
            await loop.run_in_executor(None, thread.join)


def _split_bare(batch: list[_Job]) -> list[list[_Job]]:
    """The batch in order, as runs of transactional jobs and bare jobs one by one."""
    parts: list[list[_Job]] = []
    for job in batch:
        if job.bare or not parts or parts[-1][0].bare:
            parts.append([job])
        else:
            parts[-1].append(job)
    return parts


def _settle(outcomes: list[_Outcome]) -> None:
    """On the loop: run the commit hooks in commit order, then answer the callers."""
    for job, ok, value in outcomes:
        if ok and job.on_commit is not None:
            try:
                job.on_commit(value)
            except Exception:
                log.exception("sqlite commit hook failed", extra={"op": job.operation})
        if job.future.done():
            continue  # the caller gave up (cancelled); a write that committed stands
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


# --- opening, step by step ------------------------------------------------------------------


def _connect(path: Path, settings: SqliteSettings) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        timeout=settings.busy_timeout,
        isolation_level=None,  # autocommit: transactions are begun and ended explicitly
        check_same_thread=False,  # each connection is used by one thread at a time
    )
    conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout * 1000)}")
    return conn


def _configure_writer(conn: sqlite3.Connection, path: Path, settings: SqliteSettings) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise DatabaseUnusable(path, f"it cannot be switched to WAL mode (it stays {mode!r})")
    conn.execute(f"PRAGMA synchronous = {settings.synchronous.upper()}")
    # What a delete frees is overwritten with zeros (a deleted conversation leaves no text).
    conn.execute("PRAGMA secure_delete = ON")
    if settings.max_bytes is not None:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {max(1, settings.max_bytes // page_size)}")


def _check_location(path: Path) -> None:
    """Clear errors for what SQLite would only call "unable to open database file"."""
    parent = path.parent
    if not parent.is_dir():
        raise DatabaseUnusable(path, f"its directory {parent} does not exist")
    if path.exists() and not path.is_file():
        raise DatabaseUnusable(path, "it is not a regular file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DatabaseUnusable(
            path,
            f"its directory {parent} is not writable (SQLite creates the -wal and -shm files "
            "beside the database)",
        )
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if name.exists() and not os.access(name, os.R_OK | os.W_OK):
            raise DatabaseUnusable(path, f"{name.name} is not writable")
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as file:
            header = file.read(len(_HEADER))
        if header != _HEADER:
            raise CorruptDatabase(path, "it is not an SQLite database (no SQLite header)")


def _open_error(exc: sqlite3.Error, path: Path) -> PortError:
    code = primary_code(exc)
    detail = f"{exc} ({error_name(exc)})"
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StoreUnavailable(
            f"the database {path} is locked by another process: {detail}; try again"
        )
    if code in (_SQLITE_FULL, _SQLITE_IOERR):
        return StoreUnavailable(f"the database {path} cannot be written now: {detail}")
    if code in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_AUTH, _SQLITE_CANTOPEN):
        return DatabaseUnusable(path, f"it cannot be opened for writing: {detail}")
    unusable = translate(exc, path, "open")
    if isinstance(unusable, CorruptDatabase):
        return CorruptDatabase(path, f"it is not an SQLite database or is damaged: {detail}")
    return DatabaseUnusable(path, detail)
