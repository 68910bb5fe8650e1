"""The event log in process memory: the embedded default's store, and the reference the
contract suite holds every other store to."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

from chatcore.errors import ConcurrencyConflict
from chatcore.events import Event, Recorded
from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import Appended, AppendListener, Clock
from chatcore_adapters.pushes import hand_over


class _Stream:
    __slots__ = ("keys", "records")

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.keys: list[tuple[int, int]] = []


class MemoryEventStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._subscriptions: set[MemoryLiveSubscription] = set()

    def subscribe(self, listener: AppendListener) -> MemoryLiveSubscription:
        sub = MemoryLiveSubscription(self, listener)
        self._subscriptions.add(sub)
        return sub

    def _next_key(self, stream: _Stream) -> tuple[int, int]:
        # The same rule as Redis stream ids: wall-clock milliseconds, a sequence within one
        # millisecond, and never backwards even if the clock is.
        ms = int(self._clock.now().timestamp() * 1000)
        if stream.keys:
            last_ms, last_seq = stream.keys[-1]
            if ms <= last_ms:
                return last_ms, last_seq + 1
        return ms, 0

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        if not events:
            raise ValueError("nothing to append")
        stream = self._streams.get(session_id)
        actual = stream.records[-1].position if stream and stream.records else None
        if actual != expected_version:
            raise ConcurrencyConflict(session_id, expected_version, actual)
        if stream is None:
            stream = self._streams[session_id] = _Stream()
        recorded = []
        for event in events:
            key = self._next_key(stream)
            record = Recorded(position=f"{key[0]}-{key[1]}", event=event)
            stream.keys.append(key)
            stream.records.append(record)
            recorded.append(record)
        for sub in tuple(self._subscriptions):  # a listener may close one meanwhile
            sub._push(Appended(session_id, actual, recorded))
        return recorded

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        return self._after(session_id, after, limit)

    def _after(self, session_id: str, after: str | None, limit: int | None) -> list[Recorded]:
        stream = self._streams.get(session_id)
        if stream is None:
            return []
        start = 0 if after is None else bisect.bisect_right(stream.keys, parse_position(after))
        end = len(stream.records) if limit is None else min(len(stream.records), start + limit)
        return stream.records[start:end]

    async def last_position(self, session_id: str) -> str | None:
        validate_session_id(session_id)
        stream = self._streams.get(session_id)
        return stream.records[-1].position if stream and stream.records else None


class MemoryLiveSubscription:
    """Appends of the followed sessions, handed to the listener in the appending call (an
    in-process subscription is never lost)."""

    def __init__(self, store: MemoryEventStore, listener: AppendListener) -> None:
        self._store = store
        self._listener = listener
        self._following: set[str] = set()
        self._closed = asyncio.Event()

    def _push(self, appended: Appended) -> None:
        if appended.session_id in self._following:
            # In the appending call: what the listener does must not fail the append.
            hand_over(appended, self._listener)

    async def follow(self, session_id: str) -> None:
        validate_session_id(session_id)
        if self._closed.is_set():
            raise RuntimeError("the subscription is closed")
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
        self._store._subscriptions.discard(self)
