"""One connection's way out: the frames waiting to be written, the writer, and the close.

Live events and answers (``ack``, ``error``, ``pong``) wait in a bounded queue that one writer
task drains; backlog frames are written directly before the writer starts. A client too slow to
drain its queue overflows it: writing stops at once (even mid-send) and the connection closes
with 1013, so the client resumes from its last cursor instead of its frames piling up here.
The cursor of the last event written lets a live event already sent in the backlog be dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.websockets import WebSocket, WebSocketDisconnect

from chatcore.ids import position_after
from chatcore.protocol import CloseCode, Error, ErrorCode
from chatcore_api.connections import OutEvent
from chatcore_api.errors import LOGGED_OUT
from chatcore_api.metrics import ApiMetrics

log = logging.getLogger(__name__)


class SendFailed(Exception):
    """The client cannot be written to any more (gone, or not reading)."""


@dataclass(frozen=True, slots=True)
class _Close:
    """Queued: close the connection once everything queued before has been written."""

    code: int
    reason: str


class Outbound:
    # Slots: one of these per open WebSocket (figure 4 counts the bytes per connection).
    __slots__ = (
        "_close_queued",
        "_deferred",
        "_deferring",
        "_metrics",
        "_queue",
        "_queue_limit",
        "_send_lock",
        "_send_timeout",
        "_wake",
        "_writer",
        "_ws",
        "closed",
        "cursor",
        "overflowed",
        "session_id",
        "token_generation",
    )

    def __init__(
        self,
        ws: WebSocket,
        *,
        metrics: ApiMetrics,
        queue_limit: int,
        send_timeout: float,
    ) -> None:
        self._ws = ws
        self._metrics = metrics
        self._queue_limit = queue_limit
        self._send_timeout = send_timeout
        self._queue: deque[OutEvent | tuple[str, str] | _Close] = deque()
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        # The cursor of the last event written: nothing at or below it goes out again.
        self.cursor: str | None = None
        self.overflowed = False
        self.closed = False
        self.session_id = ""  # (for log lines)
        self._close_queued = False
        self._deferring = False
        self._deferred: _Close | None = None
        # The generation of the token this connection was proven with: a tokens_revoked event
        # of a later one logs the connection out (error unauthorized, close 4001).
        self.token_generation = 0

    # --- queued frames ----------------------------------------------------------------------

    def deliver(self, events: Sequence[OutEvent]) -> None:
        """Queue live events (without waiting); overflowing closes the connection."""
        if self.overflowed or self.closed:
            return
        if self._queue and len(self._queue) + len(events) > self._queue_limit:
            self._overflow()  # (one batch into an empty queue is never too much)
            return
        self._queue.extend(events)
        self._wake.set()

    def push_frame(self, frame: BaseModel) -> None:
        kind = str(getattr(frame, "type", "frame"))
        if self.overflowed or self.closed:
            return
        if len(self._queue) >= self._queue_limit:
            self._overflow()
            return
        self._queue.append((frame.model_dump_json(), kind))
        self._wake.set()

    def push_error(
        self,
        code: ErrorCode,
        message: str,
        request_id: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self._metrics.errors_sent.labels(code).inc()
        self.push_frame(
            Error(code=code, message=message, request_id=request_id, retry_after=retry_after)
        )

    def push_close(self, code: int, reason: str) -> None:
        """Close the connection after what is queued now (and nothing queued later)."""
        if self.overflowed or self.closed or self._close_queued:
            return
        if self._deferring:
            self._deferred = self._deferred or _Close(code, reason)
            return
        self._close_queued = True
        self._queue.append(_Close(code, reason))
        self._wake.set()

    def defer_close(self) -> None:
        """Hold back any close pushed from now on until :meth:`release_close` (a command
        whose own effect closes the connection is answered first)."""
        self._deferring = True

    def release_close(self) -> None:
        self._deferring = False
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            self.push_close(deferred.code, deferred.reason)

    def _overflow(self) -> None:
        """Too far behind: stop writing now (even mid-send); the caller closes with 1013."""
        self.overflowed = True
        self._queue.clear()
        self._wake.set()
        if self._writer is not None:
            self._writer.cancel()

    def start_writer(self) -> asyncio.Task[None]:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-write:{self.session_id}")
        if self.overflowed:
            self._writer.cancel()  # overflowed while the backlog was being sent
        return self._writer

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.overflowed:
                return  # the connection closes with 1013
            while self._queue and not self.overflowed and not self.closed:
                item = self._queue.popleft()
                if isinstance(item, _Close):
                    await self.close(item.code, item.reason)
                elif isinstance(item, OutEvent):
                    if not position_after(item.cursor, self.cursor):
                        continue  # already sent in the backlog (or by an earlier batch)
                    await self.send_text(item.text, "event")
                    self.cursor = item.cursor
                    if self.revoked_by(item):
                        await self.log_out()
                        return
                else:
                    await self.send_text(*item)
            if self.closed:
                return

    def revoked_by(self, event: OutEvent) -> bool:
        return event.revokes is not None and event.revokes > self.token_generation

    async def log_out(self) -> None:
        """The session was logged out everywhere after this connection's token was issued."""
        log.info(
            "connection closed: its session was logged out", extra={"session_id": self.session_id}
        )
        await self.refuse(ErrorCode.UNAUTHORIZED, LOGGED_OUT, CloseCode.UNAUTHORIZED)

    # --- direct writes ----------------------------------------------------------------------

    async def send_frame(self, frame: BaseModel) -> None:
        await self.send_text(frame.model_dump_json(), str(getattr(frame, "type", "frame")))

    async def send_event(self, cursor: str, text: str) -> None:
        """Write an event of the backlog now, if it is newer than what was written."""
        if position_after(cursor, self.cursor):
            await self.send_text(text, "event")
            self.cursor = cursor

    async def send_text(self, text: str, kind: str) -> None:
        if self.closed:
            raise SendFailed
        try:
            # asyncio.timeout, not wait_for: wait_for wraps every frame in a task of its own.
            async with self._send_lock, asyncio.timeout(self._send_timeout):
                await self._ws.send_text(text)
        except TimeoutError:
            log.warning(
                "client stopped reading; dropping the connection",
                extra={"session_id": self.session_id or None},
            )
            self.closed = True
            raise SendFailed from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True
            raise SendFailed from None
        self._metrics.frame_out(kind)

    async def refuse(
        self, code: ErrorCode, message: str, close: int, request_id: str | None = None
    ) -> None:
        """Tell the client why, then close: it can tell "start over" from a network blip."""
        with contextlib.suppress(SendFailed):
            self._metrics.errors_sent.labels(code).inc()
            await self.send_frame(Error(code=code, message=message, request_id=request_id))
        await self.close(close, message[:100])

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        self._metrics.closes.labels(str(code)).inc()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(self._send_timeout):
                async with self._send_lock:
                    await self._ws.close(code=code, reason=reason[:120])
