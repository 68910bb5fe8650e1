"""The SQLite file itself: its schema version and migrations, and what each way of failing
looks like through the ports (a clear error naming the file, never an ``sqlite3`` exception,
never a silent loss)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatcore.errors import ConcurrencyConflict, PortError, StoreUnavailable
from chatcore.events import Event, ReplyDelta
from chatcore.ports import WorkItem
from chatcore_adapters.sqlite import (
    SCHEMA_VERSION,
    CorruptDatabase,
    DatabaseUnusable,
    SchemaTooNew,
    SqliteDatabase,
    SqliteEventStore,
    SqliteSettings,
    SqliteWorkQueue,
)
from chatcore_adapters.sqlite.schema import APPLICATION_ID, MIGRATIONS, Migration
from chatcore_adapters.system import SystemClock
from tests.support.factories import EPOCH, delta, message, opening, session_id

ROOT = Path(__file__).resolve().parents[2]


def pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


async def fill(path: Path, sessions: int = 3, events: int = 200) -> dict[str, list[Event]]:
    """A database at ``path`` with a few sessions of events; what was appended."""
    db = SqliteDatabase.open(path)
    store = SqliteEventStore(db, SystemClock())
    written: dict[str, list[Event]] = {}
    try:
        for _ in range(sessions):
            sid = session_id()
            batch: list[Event] = [*opening(sid), *(delta(n) for n in range(events))]
            await store.append(sid, batch, expected_version=None)
            written[sid] = batch
    finally:
        await db.close()
    return written


# --- schema versions --------------------------------------------------------------------------


async def test_a_new_file_gets_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = SqliteDatabase.open(path)
    await db.close()
    assert pragma(path, "user_version") == SCHEMA_VERSION == len(MIGRATIONS)
    assert pragma(path, "application_id") == APPLICATION_ID
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    expected = {"streams", "events", "session_cache", "work_items", "dead_letters", "intents"}
    assert expected | {"leases", "heartbeats"} <= tables


async def test_reopening_a_file_keeps_its_events_and_migrates_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chatcore.db"
    written = await fill(path)
    caplog.set_level(logging.INFO, logger="chatcore_adapters.sqlite")
    caplog.clear()  # (the fill's own migration, when an earlier test left the level at INFO)
    db = SqliteDatabase.open(path)
    try:
        store = SqliteEventStore(db, SystemClock())
        for sid, events in written.items():
            assert [r.event for r in await store.read(sid)] == events
    finally:
        await db.close()
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert not [r for r in caplog.records if r.getMessage() == "sqlite schema migrated"]


async def test_a_file_of_a_newer_schema_is_refused_naming_the_file_and_both_versions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "future.db"
    await fill(path, sessions=1, events=1)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew) as caught:
        SqliteDatabase.open(path)
    assert str(path) in caught.value.message
    assert f"{SCHEMA_VERSION + 1}" in caught.value.message
    assert f"newer than {SCHEMA_VERSION}" in caught.value.message
    assert (caught.value.found, caught.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1  # left as it was


NEXT = Migration(
    SCHEMA_VERSION + 1,
    "a test step: a table and a column",
    (
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",
        "ALTER TABLE streams ADD COLUMN note TEXT",
    ),
)


async def test_an_older_file_is_migrated_on_open_and_keeps_its_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    written = await fill(path)
    caplog.set_level(logging.INFO, logger="chatcore_adapters.sqlite")
    caplog.clear()  # (the fill's own migration, when an earlier test left the level at INFO)
    db = SqliteDatabase.open(path, migrations=(*MIGRATIONS, NEXT))
    try:
        store = SqliteEventStore(db, SystemClock())
        for sid, events in written.items():
            assert [r.event for r in await store.read(sid)] == events
    finally:
        await db.close()
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1
    conn = sqlite3.connect(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(streams)")}
        assert "note" in columns
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
    finally:
        conn.close()
    (line,) = [r for r in caplog.records if r.getMessage() == "sqlite schema migrated"]
    assert (line.from_version, line.to_version) == (SCHEMA_VERSION, SCHEMA_VERSION + 1)  # type: ignore[attr-defined]
    # And this code (one version behind now) refuses the migrated file.
    with pytest.raises(SchemaTooNew):
        SqliteDatabase.open(path)


async def test_an_empty_file_is_migrated_from_version_0(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    db = SqliteDatabase.open(path)
    await db.close()
    assert pragma(path, "user_version") == SCHEMA_VERSION


async def test_a_failing_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "chatcore.db"
    written = await fill(path, sessions=1)
    broken = Migration(
        SCHEMA_VERSION + 1, "breaks half-way", ("CREATE TABLE notes (id INTEGER)", "NOT SQL")
    )
    with pytest.raises(DatabaseUnusable) as caught:
        SqliteDatabase.open(path, migrations=(*MIGRATIONS, broken))
    assert str(path) in caught.value.message
    assert pragma(path, "user_version") == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchall()
    finally:
        conn.close()
    db = SqliteDatabase.open(path)
    try:
        (sid,) = written
        assert len(await SqliteEventStore(db, SystemClock()).read(sid)) == len(written[sid])
    finally:
        await db.close()


def test_migrations_are_numbered_from_1_without_gaps(tmp_path: Path) -> None:
    skipping = Migration(SCHEMA_VERSION + 2, "skips one", ("SELECT 1",))
    with pytest.raises(ValueError, match="numbered"):
        SqliteDatabase.open(tmp_path / "x.db", migrations=(*MIGRATIONS, skipping))


def test_a_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(DatabaseUnusable, match="not a chatcore database") as caught:
        SqliteDatabase.open(path)
    assert str(path) in caught.value.message
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 42")
    conn.close()
    with pytest.raises(DatabaseUnusable, match="application id 0x2a"):
        SqliteDatabase.open(path)


# --- a file that cannot be used -----------------------------------------------------------------


def test_random_bytes_are_refused_at_open_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "random.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(CorruptDatabase) as caught:
        SqliteDatabase.open(path)
    assert str(path) in caught.value.message
    # The same with a valid-looking header in front of the noise: SQLite itself finds it.
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    with pytest.raises(CorruptDatabase) as caught:
        SqliteDatabase.open(path)
    assert str(path) in caught.value.message


@pytest.mark.parametrize("keep", [0.5, 0.1])
async def test_a_truncated_database_is_refused_at_open_naming_the_file(
    tmp_path: Path, keep: float
) -> None:
    path = tmp_path / "cut.db"
    await fill(path, sessions=5, events=300)
    size = path.stat().st_size
    assert size > 64 * 1024
    with path.open("r+b") as file:
        file.truncate(int(size * keep))
    with pytest.raises(CorruptDatabase) as caught:
        SqliteDatabase.open(path)
    assert str(path) in caught.value.message


async def test_damage_found_after_open_is_a_port_error_of_the_operation_that_met_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "damaged.db"
    written = await fill(path, sessions=2, events=400)
    page = pragma(path, "page_size")
    pages = path.stat().st_size // page
    with path.open("r+b") as file:  # every page but the first two (schema): garbage
        file.seek(2 * page)
        file.write(b"\xa5" * ((pages - 2) * page))
    db = SqliteDatabase.open(path)  # the header and the schema are intact
    try:
        store = SqliteEventStore(db, SystemClock())

        async def read_all() -> None:
            for sid in written:
                await store.read(sid)

        with pytest.raises(PortError) as caught:
            await read_all()
        assert isinstance(caught.value, CorruptDatabase)
        assert str(path) in caught.value.message
        assert not isinstance(caught.value, sqlite3.Error)
    finally:
        await db.close()


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "chatcore.db"
    with pytest.raises(DatabaseUnusable, match="does not exist") as caught:
        SqliteDatabase.open(path)
    assert str(path) in caught.value.message
    assert not path.parent.exists()  # nothing was created


def test_a_directory_in_place_of_the_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "chatcore.db").mkdir()
    with pytest.raises(DatabaseUnusable, match="not a regular file"):
        SqliteDatabase.open(tmp_path / "chatcore.db")


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for this process: by its mode, or, for root (whom modes do
    not stop), with the immutable attribute."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & 0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_unwritable_directory_is_a_clear_error_at_open(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    with unwritable(directory):
        with pytest.raises(DatabaseUnusable, match="not writable") as caught:
            SqliteDatabase.open(directory / "chatcore.db")
        assert str(directory) in caught.value.message
    assert list(directory.iterdir()) == []


async def test_an_unwritable_file_is_a_clear_error_at_open(tmp_path: Path) -> None:
    path = tmp_path / "chatcore.db"
    await fill(path, sessions=1, events=1)
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    with unwritable(path):
        with pytest.raises(DatabaseUnusable, match="not writable") as caught:
            SqliteDatabase.open(path)
        assert str(path) in caught.value.message


_LOCKER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM heartbeats")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    conn.close()
    """
)


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the file's write lock until the block ends."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        yield locker
    finally:
        if locker.stdin is not None:
            locker.stdin.write("\n")
            locker.stdin.close()
        locker.wait(timeout=10)
        if locker.stdout is not None:
            locker.stdout.close()


async def test_a_database_locked_by_another_process_makes_writes_unavailable_not_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chatcore.db"
    db = SqliteDatabase.open(path, SqliteSettings(busy_timeout=0.2))
    try:
        store = SqliteEventStore(db, SystemClock())
        queue = SqliteWorkQueue(db, SystemClock())
        sid = session_id()
        work = WorkItem(session_id=sid, conversation_id="c1", message_id="m", enqueued_at=EPOCH)
        first = await store.append(sid, opening(sid), expected_version=None)
        version = first[-1].position
        with write_locked(path):
            # Several appends queued together: every one fails, none is half-done.
            outcomes = await asyncio.gather(
                store.append(sid, [message(1)], expected_version=version),
                store.append(session_id(), [delta(1)], expected_version=None),
                queue.enqueue(work),
                return_exceptions=True,
            )
            for outcome in outcomes:
                assert isinstance(outcome, StoreUnavailable), outcome
                assert "locked" in outcome.message and str(path) in outcome.message
            assert await store.read(sid) == first  # readers are not blocked by the lock
        assert await store.read(sid) == first  # nothing of the failed appends was written
        assert await queue.claim("a", count=1, block=0) == []
        after = await store.append(sid, [message(1)], expected_version=version)
        assert await store.read(sid) == [*first, *after]
    finally:
        await db.close()


async def test_opening_a_database_locked_beyond_the_busy_timeout_is_unavailable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chatcore.db"
    await fill(path, sessions=1, events=1)
    with write_locked(path), pytest.raises(StoreUnavailable, match="locked") as caught:
        SqliteDatabase.open(path, SqliteSettings(busy_timeout=0.2))
    assert str(path) in caught.value.message
    db = SqliteDatabase.open(path)  # and once the lock is gone it opens
    await db.close()


async def test_a_full_disk_fails_the_append_which_did_not_happen(tmp_path: Path) -> None:
    """SQLITE_FULL, with the file capped at 256 KiB (what a full disk looks like to SQLite)."""
    path = tmp_path / "chatcore.db"
    db = SqliteDatabase.open(path, SqliteSettings(max_bytes=256 * 1024))
    sid = session_id()
    big = "x" * 1500
    try:
        store = SqliteEventStore(db, SystemClock())
        acknowledged = await store.append(sid, opening(sid), expected_version=None)
        error: StoreUnavailable | None = None
        for n in range(1000):
            batch = [ReplyDelta(at=EPOCH, conversation_id="c1", reply_id="r1", text=big + str(n))]
            try:
                acknowledged += await store.append(
                    sid, batch * 4, expected_version=acknowledged[-1].position
                )
            except StoreUnavailable as exc:
                error = exc
                break
        assert error is not None, "the cap was never reached"
        assert "full" in error.message and str(path) in error.message
        assert await store.read(sid) == acknowledged
        assert await store.last_position(sid) == acknowledged[-1].position
    finally:
        await db.close()
    db = SqliteDatabase.open(path)  # room again (no cap): the log goes on where it was
    try:
        store = SqliteEventStore(db, SystemClock())
        assert await store.read(sid) == acknowledged
        more = await store.append(sid, [message(1)], expected_version=acknowledged[-1].position)
        assert await store.read(sid) == [*acknowledged, *more]
    finally:
        await db.close()


async def test_a_closed_database_is_unavailable(tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "chatcore.db")
    store = SqliteEventStore(db, SystemClock())
    await db.close()
    sid = session_id()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.append(sid, opening(sid), expected_version=None)
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.read(sid)
    await db.close()  # twice is fine


def test_a_memory_database_is_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        SqliteDatabase.open(":memory:")


# --- durability -------------------------------------------------------------------------------

_APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from chatcore_adapters.sqlite import SqliteDatabase, SqliteEventStore
    from chatcore_adapters.system import SystemClock
    from tests.support.factories import delta, opening

    async def main() -> None:
        db = SqliteDatabase.open(sys.argv[1])
        store = SqliteEventStore(db, SystemClock())
        sid = sys.argv[2]
        version = None
        for n in range(100_000):
            events = opening(sid) if version is None else [delta(n)]
            version = (await store.append(sid, events, expected_version=version))[-1].position
            print(version, flush=True)

    asyncio.run(main())
    """
)


async def test_an_append_that_returned_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "chatcore.db"
    await SqliteDatabase.open(path).close()  # created here, so the child only appends
    sid = session_id()
    paths = [str(ROOT), str(ROOT / "src"), str(ROOT / "src" / "adapters")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _APPENDER, str(path), sid, stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    answered = [(await child.stdout.readline()).decode().strip() for _ in range(300)]
    os.kill(child.pid, signal.SIGKILL)  # in the middle of its next appends
    rest, _ = await asyncio.wait_for(child.communicate(), timeout=10)
    answered += [line for line in rest.decode().split() if line]
    assert child.returncode == -signal.SIGKILL
    db = SqliteDatabase.open(path)
    try:
        positions = [r.position for r in await SqliteEventStore(db, SystemClock()).read(sid)]
    finally:
        await db.close()
    # Every answered append is there, in order (after the opening's first event); at most
    # the one in flight when the process died comes on top.
    assert positions[1 : 1 + len(answered)] == answered
    assert len(positions) - 1 - len(answered) in (0, 1)


# --- backup -----------------------------------------------------------------------------------


async def test_a_backup_taken_while_appending_is_a_consistent_database(tmp_path: Path) -> None:
    path = tmp_path / "chatcore.db"
    db = SqliteDatabase.open(path)
    try:
        store = SqliteEventStore(db, SystemClock())
        sid = session_id()
        version = (await store.append(sid, opening(sid), expected_version=None))[-1].position
        stop = asyncio.Event()

        async def writer() -> int:
            nonlocal version
            n = 0
            while not stop.is_set():
                n += 1
                version = (await store.append(sid, [delta(n)], expected_version=version))[
                    -1
                ].position
            return n

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.05)
        await db.backup(tmp_path / "backup.db")
        stop.set()
        assert await task > 0
        with pytest.raises(FileExistsError):
            await db.backup(tmp_path / "backup.db")
        live = await store.read(sid)
    finally:
        await db.close()
    copy = SqliteDatabase.open(tmp_path / "backup.db")
    try:
        saved = await SqliteEventStore(copy, SystemClock()).read(sid)
    finally:
        await copy.close()
    assert 2 <= len(saved) <= len(live)
    assert saved == live[: len(saved)]  # a prefix of the log: one moment's snapshot


async def test_a_conflict_is_the_port_s_error_also_inside_a_shared_transaction(
    tmp_path: Path,
) -> None:
    db = SqliteDatabase.open(tmp_path / "chatcore.db")
    try:
        store = SqliteEventStore(db, SystemClock())
        sid = session_id()
        base = await store.append(sid, opening(sid), expected_version=None)
        outcomes = await asyncio.gather(
            *(
                store.append(sid, [message(n)], expected_version=base[-1].position)
                for n in range(8)
            ),
            return_exceptions=True,
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
        assert all(isinstance(o, ConcurrencyConflict) for o in outcomes[1:])
        assert db.transactions < db.jobs  # they shared transactions
    finally:
        await db.close()


class _Result:
    """Something a job returns that a weak reference can watch."""


async def test_no_thread_keeps_a_result_once_its_caller_dropped_it(tmp_path: Path) -> None:
    """A reader or the writer waiting for its next job holds nothing of the last one: a
    10,000-event read or a whole cached view is freed when its caller lets go of it."""
    db = SqliteDatabase.open(tmp_path / "chatcore.db", SqliteSettings(readers=1))
    try:
        read = await db.read(lambda conn: _Result(), operation="test read")
        written = await db.write(lambda conn: _Result(), operation="test write")
        watched = [weakref.ref(read), weakref.ref(written)]
        del read, written
        # One more job each: once it is answered, its thread has finished with the first.
        await db.read(lambda conn: None, operation="test read")
        await db.write(lambda conn: None, operation="test write")
        gc.collect()
        assert [ref() for ref in watched] == [None, None]
    finally:
        await db.close()
