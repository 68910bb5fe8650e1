"""The Connection Manager: the registry of this process's live sockets, per session.

It is the feed's sink: each batch of a session's new events is encoded once and handed to
every connection of that session (two tabs, two devices), whose own bounded queue and writer
take it from there, so a slow client never holds up the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from chatcore.events import Recorded, SessionDeleted, TokensRevoked
from chatcore.protocol import CloseCode, EventFrame
from chatcore_api.feed import SessionFeed, Watch
from chatcore_api.metrics import ApiMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutEvent:
    """An event frame ready to send: its cursor and its JSON text."""

    cursor: str
    text: str
    # A tokens_revoked event's new generation: a connection on an older token closes after it.
    revokes: int | None = None


def event_frame(record: Recorded) -> OutEvent:
    """The ``event`` frame of a recorded event, encoded once for every socket it goes to."""
    frame = EventFrame(cursor=record.position, event=record.event)
    event = record.event
    revokes = event.generation if isinstance(event, TokensRevoked) else None
    return OutEvent(record.position, frame.model_dump_json(), revokes)


class LiveConnection(Protocol):
    @property
    def session_id(self) -> str: ...

    def deliver(self, events: Sequence[OutEvent]) -> None:
        """Queue live events (without waiting); overflowing closes the connection."""
        ...

    def close_after(self, code: int, reason: str) -> None:
        """Close once what was delivered so far has been written."""
        ...

    async def shutdown(self, code: int, reason: str) -> None: ...


class ConnectionManager:
    def __init__(self, feed: SessionFeed, metrics: ApiMetrics) -> None:
        self._feed = feed
        self._metrics = metrics
        self._sessions: dict[str, set[LiveConnection]] = {}
        self._watches: dict[LiveConnection, Watch] = {}
        feed.set_sink(self.fan_out)

    @property
    def count(self) -> int:
        return len(self._watches)

    def connections_of(self, session_id: str) -> int:
        return len(self._sessions.get(session_id, ()))

    async def attach(self, conn: LiveConnection) -> None:
        """Start receiving the session's live events; call before reading any backlog."""
        watch = await self._feed.watch(conn.session_id)
        self._watches[conn] = watch
        self._sessions.setdefault(conn.session_id, set()).add(conn)

    def detach(self, conn: LiveConnection) -> None:
        watch = self._watches.pop(conn, None)
        if watch is None:
            return
        peers = self._sessions.get(conn.session_id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self._sessions[conn.session_id]
        watch.release()

    def fan_out(self, session_id: str, records: Sequence[Recorded]) -> None:
        self._metrics.observe_events(records)
        peers = self._sessions.get(session_id)
        if not peers:
            return
        events = [event_frame(r) for r in records]
        deleted = any(isinstance(r.event, SessionDeleted) for r in records)
        for conn in list(peers):
            conn.deliver(events)
            if deleted:  # the session's last event: its tokens are worth nothing now
                conn.close_after(CloseCode.UNAUTHORIZED, "the session was deleted")

    async def close_all(self, code: int, reason: str) -> None:
        """Close every socket (server shutdown); clients resume elsewhere from their cursor."""
        conns = list(self._watches)
        if conns:
            log.info("closing connections", extra={"count": len(conns), "code": code})
            await asyncio.gather(*(c.shutdown(code, reason) for c in conns))
