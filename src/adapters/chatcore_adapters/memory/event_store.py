"""The event log in process memory: the embedded default's store, and the reference the
contract suite holds every other store to."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from chatcore.errors import ConcurrencyConflict
from chatcore.events import Event, Recorded
from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import Appended, AppendListener, Clock
from chatcore_adapters.pushes import LocalPushes, LocalSubscription


class _Stream:
    __slots__ = ("expires", "keys", "records")

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.keys: list[tuple[int, int]] = []
        self.expires = float("inf")


class MemoryEventStore:
    """Logs in a dict. With ``retention`` (seconds), a log that has had no append for that
    long is deleted: it reads as gone at once, and its memory is freed by a sweep that runs
    during appends at most every ``retention / 10`` seconds (a minute at most)."""

    def __init__(self, clock: Clock, *, retention: float | None = None) -> None:
        if retention is not None and retention <= 0:
            raise ValueError("retention must be positive")
        self._clock = clock
        self._retention = retention
        self._streams: dict[str, _Stream] = {}
        self._pushes = LocalPushes()
        self._next_sweep = clock.monotonic()

    def subscribe(self, listener: AppendListener) -> MemoryLiveSubscription:
        sub = MemoryLiveSubscription(self, listener)
        self._pushes.add(sub)
        return sub

    def _stream(self, session_id: str) -> _Stream | None:
        stream = self._streams.get(session_id)
        if stream is not None and self._clock.monotonic() >= stream.expires:
            del self._streams[session_id]
            return None
        return stream

    def _touch(self, stream: _Stream) -> None:
        if self._retention is None:
            return
        now = self._clock.monotonic()
        stream.expires = now + self._retention
        if now >= self._next_sweep:
            self._next_sweep = now + min(self._retention / 10, 60.0)
            for sid in [sid for sid, s in self._streams.items() if now >= s.expires]:
                del self._streams[sid]

    def _next_key(self, stream: _Stream, after: tuple[int, int] | None) -> tuple[int, int]:
        # The same rule as Redis stream ids: wall-clock milliseconds, a sequence within one
        # millisecond, and never backwards even if the clock is.
        ms = int(self._clock.now().timestamp() * 1000)
        if after is not None and ms <= after[0]:
            return after[0], after[1] + 1
        return ms, 0

    def _push(self, appended: Appended) -> None:
        self._pushes.publish(appended)

    def _add(self, stream: _Stream, events: Sequence[Event]) -> list[Recorded]:
        recorded = []
        for event in events:
            key = self._next_key(stream, stream.keys[-1] if stream.keys else None)
            record = Recorded(position=f"{key[0]}-{key[1]}", event=event)
            stream.keys.append(key)
            stream.records.append(record)
            recorded.append(record)
        self._touch(stream)
        return recorded

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        if not events:
            raise ValueError("nothing to append")
        stream = self._stream(session_id)
        actual = stream.records[-1].position if stream and stream.records else None
        if actual != expected_version:
            raise ConcurrencyConflict(session_id, expected_version, actual)
        if stream is None:
            stream = self._streams[session_id] = _Stream()
        recorded = self._add(stream, events)
        self._push(Appended(session_id, actual, recorded))
        return recorded

    async def erase(
        self,
        session_id: str,
        positions: Sequence[str],
        *,
        tombstone: Sequence[Event],
        expected_version: str,
    ) -> list[Recorded]:
        validate_session_id(session_id)
        if not tombstone:
            raise ValueError("an erase appends at least one event")
        gone = {parse_position(p) for p in positions}
        stream = self._stream(session_id)
        actual = stream.records[-1].position if stream and stream.records else None
        if stream is None or actual != expected_version:
            raise ConcurrencyConflict(session_id, expected_version, actual)
        kept = [(k, r) for k, r in zip(stream.keys, stream.records, strict=True) if k not in gone]
        if not kept:
            raise ValueError("erasing every event of a log is refused; delete the session")
        last = stream.keys[-1]
        # New lists: the erased records are dropped, not hidden.
        stream.keys = [k for k, _ in kept]
        stream.records = [r for _, r in kept]
        recorded = []
        for event in tombstone:
            last = self._next_key(stream, last)
            record = Recorded(position=f"{last[0]}-{last[1]}", event=event)
            stream.keys.append(last)
            stream.records.append(record)
            recorded.append(record)
        self._touch(stream)
        self._push(Appended(session_id, expected_version, recorded))
        return recorded

    async def delete_session(self, session_id: str, *, farewell: Event | None = None) -> bool:
        validate_session_id(session_id)
        stream = self._stream(session_id)
        if stream is None or not stream.records:
            return False
        if farewell is not None:
            last = stream.keys[-1]
            key = self._next_key(stream, last)
            record = Recorded(position=f"{key[0]}-{key[1]}", event=farewell)
            self._push(Appended(session_id, stream.records[-1].position, [record]))
        del self._streams[session_id]
        return True

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        return self._after(session_id, after, limit)

    def _after(self, session_id: str, after: str | None, limit: int | None) -> list[Recorded]:
        stream = self._stream(session_id)
        if stream is None:
            return []
        start = 0 if after is None else bisect.bisect_right(stream.keys, parse_position(after))
        end = len(stream.records) if limit is None else min(len(stream.records), start + limit)
        return stream.records[start:end]

    async def last_position(self, session_id: str) -> str | None:
        validate_session_id(session_id)
        stream = self._stream(session_id)
        return stream.records[-1].position if stream and stream.records else None

    # --- moving sessions between stores (chatcore_adapters.archive) ----------------------------

    def session_ids(self) -> list[str]:
        """The sessions the store holds (expired ones left out)."""
        return [sid for sid in list(self._streams) if self._stream(sid) is not None]

    def put_log(
        self, session_id: str, records: Sequence[Recorded], *, expires_in: float | None
    ) -> bool:
        """Hold ``records`` (strictly increasing positions) as the whole log of a session the
        store does not have, at their positions, expiring ``expires_in`` seconds from now
        (``None``: never); ``False``, changing nothing, when it has the session."""
        validate_session_id(session_id)
        if not records:
            raise ValueError("a log has at least one event")
        if self._stream(session_id) is not None:
            return False
        keys = [parse_position(record.position) for record in records]
        if any(a >= b for a, b in itertools.pairwise(keys)):
            raise ValueError("positions must be strictly increasing")
        stream = _Stream()
        stream.keys, stream.records = keys, list(records)
        if expires_in is not None:
            stream.expires = self._clock.monotonic() + expires_in
        self._streams[session_id] = stream
        return True


class MemoryLiveSubscription(LocalSubscription):
    """The in-process subscription, built from the store it follows."""

    def __init__(self, store: MemoryEventStore, listener: AppendListener) -> None:
        super().__init__(store._pushes, listener)
