"""SQLite adapters: every storage port in one file, for one process (the embedded default).

Open the file once per process with :meth:`SqliteDatabase.open` and hand it to each adapter::

    db = SqliteDatabase.open("data/chatcore.db")
    clock = SystemClock()
    store, cache = SqliteEventStore(db, clock), SqliteSessionCache(db, clock, ttl=3600)
    queue, leases = SqliteWorkQueue(db, clock, reclaim_after=30), SqliteLeases(db, clock)
    intents, heartbeats = SqliteIntentJournal(db, clock), SqliteHeartbeats(db, clock)
    ...
    await db.close()

``docs/sqlite.md`` describes the file, its durability and its errors.
"""

from chatcore_adapters.sqlite.cache import SqliteSessionCache
from chatcore_adapters.sqlite.database import SqliteDatabase, SqliteSettings
from chatcore_adapters.sqlite.errors import CorruptDatabase, DatabaseUnusable, SchemaTooNew
from chatcore_adapters.sqlite.event_store import SqliteEventStore
from chatcore_adapters.sqlite.heartbeats import SqliteHeartbeats
from chatcore_adapters.sqlite.intake import SqliteIntake
from chatcore_adapters.sqlite.intents import SqliteIntentJournal
from chatcore_adapters.sqlite.leases import SqliteLeases
from chatcore_adapters.sqlite.live import SqliteLiveSubscription
from chatcore_adapters.sqlite.lock import DataDirLock
from chatcore_adapters.sqlite.queue import SqliteWorkQueue
from chatcore_adapters.sqlite.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "CorruptDatabase",
    "DataDirLock",
    "DatabaseUnusable",
    "SchemaTooNew",
    "SqliteDatabase",
    "SqliteEventStore",
    "SqliteHeartbeats",
    "SqliteIntake",
    "SqliteIntentJournal",
    "SqliteLeases",
    "SqliteLiveSubscription",
    "SqliteSessionCache",
    "SqliteSettings",
    "SqliteWorkQueue",
]
