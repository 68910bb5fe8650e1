"""The live feed: ONE subscription per process to the appends of every session it has sockets for.

The event store pushes each append (on Redis: pub/sub, one channel per session, all on one
connection) to the process's :class:`~chatcore.ports.LiveSubscription`, which hands it to the
feed in the task that read it; the feed keeps one cursor per followed session and hands what
is new to the sink (the :class:`~chatcore_api.connections.ConnectionManager`), which fans it
out to the session's sockets. However many sockets are open, the process holds one
subscription and never re-issues a read when the set of sessions changes (I8).

No gap and no duplicate (I5):

* following a session subscribes first and then takes the log's last position as the cursor;
  a connection takes its watch before it reads its backlog, so backlog and pushes overlap and
  the connection drops what it already sent;
* every push names the position it follows; a push that does not follow the cursor means one
  was missed, and the session's gap is read from the log before anything newer goes out;
* when the subscription is lost (Redis restarted, the connection dropped), the feed
  re-subscribes and reads every followed session from its cursor.

Current views (:class:`~chatcore.ports.CurrentViews`): since the feed sees every append of a
followed session in order, it also folds them into that session's view, so the use cases read
it without a round trip. A view is taken in only when it was folded exactly up to the feed's
cursor (then every later record reaches it, gap-free), only from the session's
:data:`KEEP_VIEW_FROM_LOAD`-th load on (a hello loads twice, to check the token and to record
the return: a connection that only says hello keeps no view, so idle sockets stay small; the
first command after it does), and only below
:data:`MAX_VIEW_EVENTS` events (a larger one costs more to copy than to read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chatcore.backoff import Backoff
from chatcore.errors import PortError
from chatcore.events import Recorded
from chatcore.ids import position_after
from chatcore.ports import Appended, EventStore
from chatcore.view import SessionView, project
from chatcore_api.metrics import ApiMetrics

log = logging.getLogger(__name__)

Sink = Callable[[str, Sequence[Recorded]], None]
# A subscription that lived this long before it was lost starts its backoff afresh.
_HEALTHY = 10.0
# A session view with more events than this is not kept current (see the module).
MAX_VIEW_EVENTS = 20_000
# The load of a followed session from which on its view is kept (see the module's docstring).
KEEP_VIEW_FROM_LOAD = 3


@dataclass(eq=False, slots=True)
class _Followed:
    cursor: str | None = None
    refs: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False
    # Pushes held back while the cursor is being taken or a gap is being read.
    held: list[Appended] = field(default_factory=list)
    catching_up: bool = False
    stale: bool = False  # the subscription was lost while this watch was being taken
    # The session's view, folded up to ``cursor`` (None: not kept), and how often it was
    # offered one (a view is kept from the second on).
    view: SessionView | None = None
    offers: int = 0


class Watch:
    """A hold on a followed session; ``release()`` it when the connection ends."""

    __slots__ = ("_entry", "_feed", "_released", "session_id")

    def __init__(self, feed: SessionFeed, session_id: str, entry: _Followed) -> None:
        self._feed = feed
        self.session_id = session_id
        self._entry = entry
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._feed._release(self.session_id, self._entry)


class SessionFeed:
    def __init__(self, store: EventStore, *, metrics: ApiMetrics | None = None) -> None:
        self._store = store
        # Pushes are applied in the task that reads them (no hop through this feed's task).
        self._sub = store.subscribe(self._apply)
        self._metrics = metrics
        self._followed: dict[str, _Followed] = {}
        self._unfollow: set[str] = set()
        self._sink: Sink | None = None
        self._task: asyncio.Task[None] | None = None
        self._unfollower: asyncio.Task[None] | None = None
        self._catch_ups: set[asyncio.Task[None]] = set()
        self.resyncs = 0
        self.gap_reads = 0
        self.view_hits = 0  # loads answered from a current view (tests, metrics)

    def set_sink(self, sink: Sink) -> None:
        self._sink = sink

    @property
    def sessions(self) -> int:
        return len(self._followed)

    async def watch(self, session_id: str) -> Watch:
        """Follow ``session_id`` from its current last position (kept while any watch is)."""
        while True:
            entry = self._followed.get(session_id)
            if entry is None:
                entry = self._followed[session_id] = _Followed(refs=1)
                self._unfollow.discard(session_id)
                self._count()
                try:
                    await self._sub.follow(session_id)
                    entry.cursor = await self._store.last_position(session_id)
                except BaseException:
                    entry.failed = True
                    entry.ready.set()
                    if self._followed.get(session_id) is entry:
                        del self._followed[session_id]
                        self._unfollow.add(session_id)
                        self._count()
                    raise
                entry.ready.set()
                if entry.stale:
                    self._start_catch_up(session_id, entry)
                else:
                    self._release_held(session_id, entry)
                return Watch(self, session_id, entry)
            entry.refs += 1
            try:
                await entry.ready.wait()
            except BaseException:
                self._release(session_id, entry)
                raise
            if not entry.failed:
                return Watch(self, session_id, entry)
            # The watch we waited for failed; try again (its error went to its own caller).

    def _release(self, session_id: str, entry: _Followed) -> None:
        entry.refs -= 1
        if entry.refs <= 0 and self._followed.get(session_id) is entry:
            del self._followed[session_id]
            self._unfollow.add(session_id)
            self._count()
            self._schedule_unfollow()

    def _schedule_unfollow(self) -> None:
        """Unsubscribe soon, in a task of its own (the loop's task waits for a loss)."""
        if self._task is None or (self._unfollower is not None and not self._unfollower.done()):
            return  # a running unfollower takes it, or the loop does when it starts
        self._unfollower = asyncio.create_task(self._unfollow_now(), name="chatcore-unfollow")

    async def _unfollow_now(self) -> None:
        try:
            await self._drop_unfollowed()
        except Exception as exc:
            # A failed unsubscribe marks the subscription lost: the loop re-subscribes to the
            # sessions still followed, and this one is no longer among them.
            log.warning(
                "live feed could not unfollow a session",
                extra={"error": str(exc)},
                exc_info=not isinstance(exc, PortError),
            )

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.feed_sessions.set(len(self._followed))

    # --- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="chatcore-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        tasks = [t for t in (task, self._unfollower, *self._catch_ups) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._sub.close()

    async def run(self) -> None:
        """Wait for the subscription to be lost, and follow again; pushes meanwhile go
        straight from the subscription's reader to :meth:`_apply`."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(0.05, 5.0)
        healthy_since = loop.time()
        while True:
            try:
                await self._drop_unfollowed()
                error = await self._sub.wait_lost()
            except PortError as exc:  # an unfollow failed: the subscription is lost
                error = str(exc)
            except Exception as exc:
                log.exception("live feed round failed")
                error = type(exc).__name__
            if loop.time() - healthy_since >= _HEALTHY:
                backoff.reset()  # a loss after a good while is not part of a storm
            await self._resync(backoff, error)
            healthy_since = loop.time()

    async def _drop_unfollowed(self) -> None:
        while self._unfollow:
            session_id = self._unfollow.pop()
            if session_id not in self._followed:
                await self._sub.unfollow(session_id)

    async def _resync(self, backoff: Backoff, error: str) -> None:
        """The subscription was lost: follow again, then read what may have been missed."""
        for entry in self._followed.values():
            entry.stale = True
        while True:
            delay = backoff.next_delay()
            if self._metrics is not None:
                self._metrics.feed_errors.inc()
            log.warning(
                "live feed lost its subscription; re-subscribing",
                extra={"error": error, "retry_in": delay, "sessions": len(self._followed)},
            )
            await asyncio.sleep(delay)
            try:
                await self._sub.reconnect()
            except PortError as exc:
                error = str(exc)
                continue
            break
        self.resyncs += 1
        for session_id, entry in list(self._followed.items()):
            if entry.ready.is_set() and not entry.failed:
                self._start_catch_up(session_id, entry)
            # a watch still being taken catches up when it is ready (entry.stale)

    # --- current views (chatcore.ports.CurrentViews) ------------------------------------------

    def current(self, session_id: str) -> SessionView | None:
        entry = self._followed.get(session_id)
        if entry is None or entry.view is None:
            return None
        self.view_hits += 1
        return entry.view.copy_view()

    def offer(self, session_id: str, view: SessionView) -> None:
        entry = self._followed.get(session_id)
        if entry is None or entry.view is not None or not entry.ready.is_set() or entry.failed:
            return
        entry.offers += 1
        if entry.offers < KEEP_VIEW_FROM_LOAD or view.event_count > MAX_VIEW_EVENTS:
            return
        if view.version is None or view.version != entry.cursor:
            return  # behind or ahead of the pushes: some record would be missed or doubled
        entry.view = view.copy_view()

    def _advance_view(self, session_id: str, entry: _Followed, records: Sequence[Recorded]) -> None:
        view = entry.view
        if view is None:
            return
        try:
            project(view, records)
        except Exception:  # a record this fold cannot take: read from the log from now on
            entry.view = None
            log.exception("live view dropped", extra={"session_id": session_id})
            return
        if view.event_count > MAX_VIEW_EVENTS:
            entry.view = None

    # --- pushes, gaps and catching up -------------------------------------------------------

    def _apply(self, appended: Appended) -> None:
        entry = self._followed.get(appended.session_id)
        if entry is None or not appended.records:
            return
        if not entry.ready.is_set() or entry.catching_up:
            entry.held.append(appended)
            return
        if not position_after(appended.records[-1].position, entry.cursor):
            return  # already delivered (the backlog or a catch-up covered it)
        if appended.after is not None and position_after(appended.after, entry.cursor):
            # A push was missed between the cursor and this one: read the gap from the log.
            entry.held.append(appended)
            self._start_catch_up(appended.session_id, entry)
            return
        self._deliver(appended.session_id, entry, appended.records)

    def _release_held(self, session_id: str, entry: _Followed) -> None:
        held, entry.held = entry.held, []
        for appended in held:
            if self._followed.get(session_id) is not entry:
                return
            self._apply(appended)

    def _start_catch_up(self, session_id: str, entry: _Followed) -> None:
        entry.stale = False
        if entry.catching_up:
            return
        entry.catching_up = True
        task = asyncio.create_task(self._catch_up(session_id, entry), name="chatcore-catch-up")
        self._catch_ups.add(task)
        task.add_done_callback(self._catch_ups.discard)

    async def _catch_up(self, session_id: str, entry: _Followed) -> None:
        backoff = Backoff(0.05, 5.0)
        while self._followed.get(session_id) is entry:
            try:
                self.gap_reads += 1
                records = await self._store.read(session_id, after=entry.cursor)
            except Exception as exc:
                delay = backoff.next_delay()
                log.warning(
                    "live feed could not read a session's gap; retrying",
                    extra={"session_id": session_id, "error": str(exc), "retry_in": delay},
                    exc_info=not isinstance(exc, PortError),
                )
                await asyncio.sleep(delay)
                continue
            if records:
                log.info(
                    "live feed read a gap from the log",
                    extra={"session_id": session_id, "events": len(records)},
                )
                self._deliver(session_id, entry, records)
            break
        entry.catching_up = False
        self._release_held(session_id, entry)

    def _deliver(self, session_id: str, entry: _Followed, records: Sequence[Recorded]) -> None:
        fresh = [r for r in records if position_after(r.position, entry.cursor)]
        if not fresh:
            return
        entry.cursor = fresh[-1].position
        self._advance_view(session_id, entry, fresh)
        if self._sink is None:
            return
        try:
            self._sink(session_id, fresh)
        except Exception:
            log.exception("fan-out failed", extra={"session_id": session_id})
