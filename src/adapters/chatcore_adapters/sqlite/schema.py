"""The tables of a chatcore SQLite file, and the migrations that bring any older file up to
date when it is opened.

The file records two numbers in its header: ``PRAGMA application_id`` (:data:`APPLICATION_ID`,
"this is a chatcore database") and ``PRAGMA user_version`` (the schema version: the number of
migrations applied; 0 is an empty file). Opening runs every migration above the file's version,
in order, in ONE write transaction with the version bump, so a migration that fails leaves the
file as it was. A file whose version is above :data:`SCHEMA_VERSION` was written by a newer
chatcore and is refused (:class:`SchemaTooNew`): this code cannot know what the newer tables
mean.

A new migration is appended to :data:`MIGRATIONS`, never edited in place once released.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chatcore_adapters.sqlite.errors import DatabaseUnusable, SchemaTooNew

# "chcr": marks the file as chatcore's (shown by `file` and `sqlite3 <file> .dbinfo`).
APPLICATION_ID = 0x63686372


@dataclass(frozen=True, slots=True)
class Migration:
    """The step from schema version ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


_V1 = Migration(
    1,
    "event log, session cache, work queue, intents, leases, heartbeats",
    (
        # One row per session: its integer key and the position of its newest event (the
        # version an append is checked against).
        """CREATE TABLE streams (
            stream INTEGER PRIMARY KEY,
            session_id TEXT NOT NULL UNIQUE,
            last_ms INTEGER NOT NULL,
            last_seq INTEGER NOT NULL
        )""",
        # The log: position <ms>-<seq> per session, clustered by (stream, ms, seq) so reading a
        # session is one range scan of neighbouring pages.
        """CREATE TABLE events (
            stream INTEGER NOT NULL,
            ms INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            body BLOB NOT NULL,
            PRIMARY KEY (stream, ms, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE session_cache (
            session_id TEXT PRIMARY KEY,
            expires_ms INTEGER NOT NULL,
            view BLOB NOT NULL
        )""",
        "CREATE INDEX session_cache_expiry ON session_cache (expires_ms)",
        # consumer IS NULL: queued, not delivered yet. Otherwise pending at that consumer
        # since delivered_ms. AUTOINCREMENT: an id is never reused, so neither is a delivery id.
        """CREATE TABLE work_items (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            item BLOB NOT NULL,
            enqueued_ms INTEGER NOT NULL,
            consumer TEXT,
            delivered_ms INTEGER,
            deliveries INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX work_items_new ON work_items (queue, id) WHERE consumer IS NULL",
        """CREATE INDEX work_items_pending ON work_items (queue, delivered_ms)
            WHERE consumer IS NOT NULL""",
        """CREATE INDEX work_items_consumer ON work_items (queue, consumer)
            WHERE consumer IS NOT NULL""",
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            item BLOB NOT NULL,
            reason TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX dead_letters_queue ON dead_letters (queue, id)",
        """CREATE TABLE intents (
            queue TEXT NOT NULL,
            session_id TEXT NOT NULL,
            client_message_id TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (queue, session_id, client_message_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX intents_age ON intents (queue, at_ms)",
        """CREATE TABLE leases (
            key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            expires_ms INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE heartbeats (
            worker_id TEXT PRIMARY KEY,
            status BLOB NOT NULL,
            expires_ms INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
)

_V2 = Migration(
    2,
    "retention and deletion: streams by age, cached views with their version",
    (
        # A log's age is its newest position's milliseconds (the time of its last append):
        # the retention sweep walks this index from the oldest.
        "CREATE INDEX streams_age ON streams (last_ms)",
        # The version of the cached view (NULL: none or unknown), so a put never replaces a
        # newer view by an older one. A zero-length view marks a forgotten session.
        "ALTER TABLE session_cache ADD COLUMN version_ms INTEGER",
        "ALTER TABLE session_cache ADD COLUMN version_seq INTEGER",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


def check_migrations(migrations: Sequence[Migration]) -> None:
    for number, migration in enumerate(migrations, start=1):
        if migration.version != number:
            raise ValueError(f"migration {number} is numbered {migration.version}")


def migrate(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the file of ``conn`` (in autocommit mode) to the newest version of
    ``migrations``; return the version it had before. Raises :class:`SchemaTooNew` for a file
    of a newer chatcore, :class:`DatabaseUnusable` for a database of something else.
    ``sqlite3`` errors propagate (the caller translates them)."""
    check_migrations(migrations)
    newest = len(migrations)
    # IMMEDIATE: the write lock first, so two processes opening one new file do not both
    # create the tables; the version is read again under the lock.
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version_to_migrate(conn, path, newest)
        for migration in migrations[found:]:
            for statement in migration.statements:
                conn.execute(statement)
        # Written even when unchanged: a file opened read-only fails here, at open.
        conn.execute(f"PRAGMA user_version = {newest}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _version_to_migrate(conn: sqlite3.Connection, path: Path, newest: int) -> int:
    """The file's schema version, once it is known to be a chatcore file this code can read
    (a new file is marked as chatcore's here)."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if found > newest:
        raise SchemaTooNew(path, found, newest)
    if found == 0:
        _refuse_foreign(conn, path, application_id)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    elif application_id != APPLICATION_ID:
        raise DatabaseUnusable(
            path, f"it is not a chatcore database (application id {application_id:#x})"
        )
    return found


def _refuse_foreign(conn: sqlite3.Connection, path: Path, application_id: int) -> None:
    """Version 0 must be an empty file: tables of someone else's are never mixed with ours."""
    if application_id not in (0, APPLICATION_ID):
        raise DatabaseUnusable(
            path, f"it is not a chatcore database (application id {application_id:#x})"
        )
    tables = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name LIMIT 3"
    ).fetchall()
    if tables:
        names = ", ".join(row[0] for row in tables)
        raise DatabaseUnusable(
            path, f"it is not a chatcore database (it has schema version 0 and tables: {names})"
        )
