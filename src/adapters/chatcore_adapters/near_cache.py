"""A process's own copy of the views it used last, in front of the shared session cache.

A worker loads the session of every reply it writes: with only the shared cache (Redis), each
load decodes the whole cached view and each reply's end encodes and writes it back, a cost
that grows with the session (about 10 ms of CPU per turn for a session of a few hundred
turns). :class:`NearCache` keeps the views themselves, in memory, and hands out copies
(:meth:`chatcore.view.SessionView.copy_view`, which costs a few microseconds), so a worker
answering a session again pays for the events since its last look, not for the history.

It is a :class:`chatcore.ports.SessionCache` like any other and passes the same contract
suite. Like every cache it is only a shortcut (I2): ``ChatService.load`` reads the log after
the version it returns, and checks that version against the log when nothing follows it, so
a view this process kept while another process appended, erased a conversation or deleted
the session is brought up to date, or dropped, by the log itself.

The shared cache is written when a view is new to it and then once every ``write_every``
events, not on every put: other processes read the events in between from the log (one read,
one page). Memory is bounded by the events the kept views hold (``max_events``); the views
used longest ago go first, and a view idle for ``ttl`` seconds is dropped.
"""

from __future__ import annotations

from collections import OrderedDict

from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import CachedView, Clock, SessionCache
from chatcore.view import SessionView


def _newer(a: SessionView, b: SessionView) -> bool:
    """True when ``a``'s version is after ``b``'s (no version counts as the oldest)."""
    if a.version is None:
        return False
    if b.version is None:
        return True
    return parse_position(a.version) > parse_position(b.version)


class NearCache:
    def __init__(
        self,
        shared: SessionCache,
        clock: Clock,
        *,
        max_events: int = 50_000,
        ttl: float = 300.0,
        write_every: int = 64,
    ) -> None:
        if max_events < 1 or ttl <= 0 or write_every < 1:
            raise ValueError("max_events and write_every must be >= 1 and ttl positive")
        self.shared = shared
        self._clock = clock
        self._max_events = max_events
        self._ttl = ttl
        self._write_every = write_every
        # session id -> (expires at, view); the least recently used first.
        self._views: OrderedDict[str, tuple[float, SessionView]] = OrderedDict()
        self._events = 0
        # Sessions forgotten (deleted) here, until when: nothing is kept for them meanwhile.
        self._forgotten: dict[str, float] = {}
        # The event count of the view last written to the shared cache, per kept session.
        self._written: dict[str, int] = {}
        self.hits = 0

    @property
    def events_held(self) -> int:
        return self._events

    @property
    def sessions_held(self) -> int:
        return len(self._views)

    async def get(self, session_id: str) -> CachedView | None:
        validate_session_id(session_id)
        now = self._clock.monotonic()
        if self._is_forgotten(session_id, now):
            return None
        entry = self._views.get(session_id)
        if entry is not None:
            if now < entry[0]:
                self._views[session_id] = (now + self._ttl, entry[1])
                self._views.move_to_end(session_id)
                self.hits += 1
                return CachedView(entry[1].copy_view())
            self._drop(session_id)
        cached = await self.shared.get(session_id)
        if cached is not None:
            self._keep(session_id, cached.view, now)
            self._written[session_id] = cached.view.event_count
        return cached

    async def put(self, session_id: str, view: SessionView) -> None:
        validate_session_id(session_id)
        now = self._clock.monotonic()
        if self._is_forgotten(session_id, now):
            return
        written = self._written.get(session_id)
        held = self._views.get(session_id)
        if held is None or not _newer(held[1], view):
            self._keep(session_id, view, now)  # (forgets what was written, restored below)
        if written is None or abs(view.event_count - written) >= self._write_every:
            await self.shared.put(session_id, view)
            written = view.event_count
        if session_id in self._views:
            self._written[session_id] = written

    async def delete(self, session_id: str) -> None:
        validate_session_id(session_id)
        self._drop(session_id)
        await self.shared.delete(session_id)

    async def forget(self, session_id: str) -> None:
        validate_session_id(session_id)
        self._drop(session_id)
        self._forgotten[session_id] = self._clock.monotonic() + self._ttl
        await self.shared.forget(session_id)

    # --- the views kept here --------------------------------------------------------------

    def _is_forgotten(self, session_id: str, now: float) -> bool:
        until = self._forgotten.get(session_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._forgotten[session_id]
        return False

    def _keep(self, session_id: str, view: SessionView, now: float) -> None:
        self._drop(session_id)
        if view.partial or view.event_count > self._max_events:
            return  # never a turns-only view; a view larger than all the room: not kept
        self._views[session_id] = (now + self._ttl, view.copy_view())
        self._events += view.event_count
        while self._events > self._max_events:
            oldest = next(iter(self._views))
            self._drop(oldest)
        if len(self._forgotten) > len(self._views) + 1024:
            for sid in [s for s, until in self._forgotten.items() if until <= now]:
                del self._forgotten[sid]

    def _drop(self, session_id: str) -> None:
        entry = self._views.pop(session_id, None)
        if entry is not None:
            self._events -= entry[1].event_count
        self._written.pop(session_id, None)
