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
from chatcore.ports import Appended
from chatcore_adapters.pushes import Listener, hand_over


class LocalPushes:
    """The subscriptions of one store, and the hand-out of each committed append to them."""

    def __init__(self) -> None:
        self._subscriptions: set[SqliteLiveSubscription] = set()

    def subscribe(self) -> SqliteLiveSubscription:
        sub = SqliteLiveSubscription(self)
        self._subscriptions.add(sub)
        return sub

    def publish(self, appended: Appended) -> None:
        for sub in tuple(self._subscriptions):  # a listener may close one meanwhile
            sub.push(appended)

    def discard(self, sub: SqliteLiveSubscription) -> None:
        self._subscriptions.discard(sub)


class SqliteLiveSubscription:
    """Appends of the followed sessions, handed over on commit (never lost in between)."""

    def __init__(self, pushes: LocalPushes) -> None:
        self._pushes = pushes
        self._following: set[str] = set()
        self._received: list[Appended] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._listener: Listener | None = None

    def listen(self, listener: Listener) -> None:
        self._listener = listener

    def push(self, appended: Appended) -> None:
        if appended.session_id in self._following:
            hand_over(appended, self._listener, self._received, self._wake)

    async def follow(self, session_id: str) -> None:
        validate_session_id(session_id)
        if self._closed:
            raise StoreUnavailable("the live subscription is closed")
        self._following.add(session_id)

    async def unfollow(self, session_id: str) -> None:
        self._following.discard(session_id)

    async def receive(self, timeout: float) -> list[Appended]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._received:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                break
        received, self._received = self._received, []
        return received

    async def reconnect(self) -> None:
        """Nothing to do: an in-process subscription is never lost."""

    async def close(self) -> None:
        self._closed = True
        self._following.clear()
        self._received.clear()
        self._pushes.discard(self)
