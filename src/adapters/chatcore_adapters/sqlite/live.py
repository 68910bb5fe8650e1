"""Live pushes of the appends made through this process's SQLite event store.

An append is pushed on the event loop right after its transaction committed, in commit order
(:meth:`SqliteDatabase.write`'s ``on_commit``), to every subscription following its session.
Nothing travels between processes: a second process writing the same file is not seen
here. The embedded mode runs one process per file.
"""

from __future__ import annotations

import asyncio

from chatcore.errors import StoreUnavailable
from chatcore.ids import validate_session_id
from chatcore.ports import Appended, AppendListener
from chatcore_adapters.pushes import hand_over


class LocalPushes:
    """The subscriptions of one store, and the hand-out of each committed append to them."""

    def __init__(self) -> None:
        self._subscriptions: set[SqliteLiveSubscription] = set()

    def subscribe(self, listener: AppendListener) -> SqliteLiveSubscription:
        sub = SqliteLiveSubscription(self, listener)
        self._subscriptions.add(sub)
        return sub

    def publish(self, appended: Appended) -> None:
        for sub in tuple(self._subscriptions):  # a listener may close one meanwhile
            sub.push(appended)

    def discard(self, sub: SqliteLiveSubscription) -> None:
        self._subscriptions.discard(sub)


class SqliteLiveSubscription:
    """Appends of the followed sessions, handed to the listener on commit (an in-process
    subscription is never lost)."""

    def __init__(self, pushes: LocalPushes, listener: AppendListener) -> None:
        self._pushes = pushes
        self._listener = listener
        self._following: set[str] = set()
        self._closed = asyncio.Event()

    def push(self, appended: Appended) -> None:
        if appended.session_id in self._following:
            hand_over(appended, self._listener)

    async def follow(self, session_id: str) -> None:
        validate_session_id(session_id)
        if self._closed.is_set():
            raise StoreUnavailable("the live subscription is closed")
        self._following.add(session_id)

    async def unfollow(self, session_id: str) -> None:
        self._following.discard(session_id)

    async def wait_lost(self) -> str:
        await self._closed.wait()
        raise RuntimeError("the subscription is closed")

    async def reconnect(self) -> None:
        """Nothing to do: an in-process subscription is never lost."""

    async def close(self) -> None:
        self._closed.set()
        self._following.clear()
        self._pushes.discard(self)
