"""Live pushes of the appends made through this process's SQLite event store.

An append is pushed on the event loop right after its transaction committed, in commit order
(:meth:`SqliteDatabase.write`'s ``on_commit``), to every subscription following its session.
Nothing travels between processes: a second process writing the same file is not seen
here. The embedded mode runs one process per file.
"""

from __future__ import annotations

from chatcore_adapters.pushes import LocalPushes, LocalSubscription

# The SQLite store's subscriptions are the in-process ones every local store shares.
SqliteLiveSubscription = LocalSubscription

__all__ = ["LocalPushes", "SqliteLiveSubscription"]
