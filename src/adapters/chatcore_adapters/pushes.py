"""What a live subscription does with a push, whatever its transport: hand it to the listener,
and never let the listener's failure reach the task that received the push."""

from __future__ import annotations

import asyncio
import logging

from chatcore.errors import StoreUnavailable
from chatcore.ids import validate_session_id
from chatcore.ports import Appended, AppendListener

log = logging.getLogger(__name__)


def hand_over(appended: Appended, listener: AppendListener) -> None:
    """Call ``listener``; an exception it raises is logged and only this push is lost: the
    caller (a reader task, an append) carries on, and the session's next push reveals the
    gap."""
    try:
        listener(appended)
    except Exception:
        log.exception("live listener failed", extra={"session_id": appended.session_id})


class LocalPushes:
    """The in-process subscriptions of one store (memory, SQLite), and the hand-out of each
    append to them, in the order the store made them. Nothing travels between processes."""

    def __init__(self) -> None:
        self._subscriptions: set[LocalSubscription] = set()

    def subscribe(self, listener: AppendListener) -> LocalSubscription:
        return self.add(LocalSubscription(self, listener))

    def add(self, sub: LocalSubscription) -> LocalSubscription:
        self._subscriptions.add(sub)
        return sub

    def publish(self, appended: Appended) -> None:
        for sub in tuple(self._subscriptions):  # a listener may close one meanwhile
            sub._push(appended)

    def discard(self, sub: LocalSubscription) -> None:
        self._subscriptions.discard(sub)


class LocalSubscription:
    """Appends of the followed sessions, handed to the listener as the store publishes them
    (an in-process subscription is never lost)."""

    def __init__(self, pushes: LocalPushes, listener: AppendListener) -> None:
        self._pushes = pushes
        self._listener = listener
        self._following: set[str] = set()
        self._closed = asyncio.Event()

    def _push(self, appended: Appended) -> None:
        if appended.session_id in self._following:
            # In the publishing call: what the listener does must not fail the append.
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
