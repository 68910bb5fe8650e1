"""The live feed: ONE loop per process that follows every session with a local connection.

Each round is one ``EventStore.tail`` call for all followed sessions (on Redis a single
multi-stream XREAD), with one cursor per session for the whole process; what it returns is
handed to the sink (the :class:`~chatcore_api.connections.ConnectionManager`), which fans it
out to the session's sockets. However many sockets are open, the process holds one blocking
read (I8).

Following a session starts at its log's last position *at the moment the watch is taken*; a
connection takes its watch before it reads its backlog, so the backlog and the live events
overlap and never leave a gap (I5); the connection drops what it already sent.

When a new session is followed while a read is blocked, the read is interrupted and started
again with the new session included, so the new session's events are not held back by a read
that does not know about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chatcore.errors import PortError
from chatcore.events import Recorded
from chatcore.ids import position_after
from chatcore.ports import EventStore
from chatcore.worker import Backoff
from chatcore_api.metrics import ApiMetrics

log = logging.getLogger(__name__)

Sink = Callable[[str, Sequence[Recorded]], None]


@dataclass(eq=False, slots=True)
class _Followed:
    cursor: str | None = None
    refs: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: bool = False


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
    def __init__(
        self,
        store: EventStore,
        *,
        block: float = 5.0,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self._store = store
        self._block = block
        self._metrics = metrics
        self._followed: dict[str, _Followed] = {}
        self._changed = asyncio.Event()
        self._sink: Sink | None = None
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

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
                self._count()
                try:
                    entry.cursor = await self._store.last_position(session_id)
                except BaseException:
                    entry.failed = True
                    entry.ready.set()
                    if self._followed.get(session_id) is entry:
                        del self._followed[session_id]
                        self._count()
                    raise
                entry.ready.set()
                self._changed.set()
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
            self._count()

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.feed_sessions.set(len(self._followed))

    # --- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="chatcore-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        backoff = Backoff(0.05, 5.0)
        while True:
            self._changed.clear()
            cursors = {sid: e.cursor for sid, e in self._followed.items() if e.ready.is_set()}
            if not cursors:
                await self._changed.wait()
                continue
            try:
                found = await self._read(cursors)
            except PortError as exc:
                await self._pause(backoff, str(exc))
                continue
            except Exception as exc:
                log.exception("live feed round failed")
                await self._pause(backoff, type(exc).__name__)
                continue
            backoff.reset()
            self.rounds += 1
            if found is None:
                log.debug("live feed round interrupted", extra={"sessions": len(cursors)})
            elif found:
                log.debug(
                    "live feed round",
                    extra={"sessions": len(cursors), "found": sum(map(len, found.values()))},
                )
                self._deliver(found)

    async def _read(self, cursors: dict[str, str | None]) -> dict[str, list[Recorded]] | None:
        """One tail round, cut short (returning ``None``) when a new session is followed."""
        tail = asyncio.ensure_future(self._store.tail(cursors, timeout=self._block))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({tail, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not tail.done():
                tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await changed
            with contextlib.suppress(asyncio.CancelledError, PortError):
                await tail
        if tail.cancelled():
            return None
        return tail.result()

    async def _pause(self, backoff: Backoff, error: str) -> None:
        delay = backoff.next_delay()
        if self._metrics is not None:
            self._metrics.feed_errors.inc()
        log.warning("live feed read failed; retrying", extra={"error": error, "retry_in": delay})
        await asyncio.sleep(delay)

    def _deliver(self, found: dict[str, list[Recorded]]) -> None:
        for session_id, records in found.items():
            entry = self._followed.get(session_id)
            if entry is None or not entry.ready.is_set():
                continue
            fresh = [r for r in records if position_after(r.position, entry.cursor)]
            if not fresh:
                continue
            entry.cursor = fresh[-1].position
            if self._sink is None:
                continue
            try:
                self._sink(session_id, fresh)
            except Exception:
                log.exception("fan-out failed", extra={"session_id": session_id})
