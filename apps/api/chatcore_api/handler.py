"""The WebSocket Handler: one connection's protocol loop (``/ws``, protocol v1).

    client                         server
    hello{token,last_event_id} ->
                               <-  welcome{token,...}
                               <-  snapshot            (no cursor)   | event... (after cursor)
                               <-  caught_up{cursor}
                               <-  event...            (live, every connection of the session)
    send/cancel/...            ->
                               <-  ack | error
    ping                       ->
                               <-  pong

The connection attaches to the live feed *before* it reads its backlog, and remembers the
cursor of the last event it sent; live events at or below that cursor are dropped. So a
client resuming from any cursor gets exactly the events after it, then the live ones: no gap,
no duplicate, also in the middle of a reply (I5).

Two tasks run per connection: the reader (client frames, one at a time, each handled by
:class:`~chatcore_api.commands.Commands`) and the writer (the connection's bounded
:class:`~chatcore_api.outbound.Outbound` queue). A client too slow to drain its queue is closed
with 1013 and resumes from its cursor; it never slows down another connection. Disconnecting
never cancels a reply: only a ``cancel`` frame does. Frames are validated by
:mod:`chatcore_api.frames`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.websockets import WebSocket

from chatcore.errors import PortError, SessionNotFound
from chatcore.protocol import (
    PROTOCOL_VERSION,
    CaughtUp,
    ClientFrame,
    CloseCode,
    ErrorCode,
    Hello,
    Limits,
    Welcome,
    snapshot_of,
)
from chatcore.service import ChatService
from chatcore_api.commands import Commands
from chatcore_api.connection_caps import Admission, ConnectionCaps
from chatcore_api.connections import ConnectionManager, OutEvent, event_frame
from chatcore_api.errors import LOGGED_OUT, Unauthorized
from chatcore_api.frames import FrameError, parse_client_frame
from chatcore_api.metrics import ApiMetrics
from chatcore_api.outbound import Outbound, SendFailed
from chatcore_api.ratelimit import ApiLimits, FrameGuard
from chatcore_api.sessions import BadCursor, SessionManager

log = logging.getLogger(__name__)

_TOO_SLOW = "too slow: resume from your cursor"


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    max_frame_bytes: int = 65536
    max_message_chars: int = 8000
    messages_per_minute: int = 20
    hello_timeout: float = 10.0
    idle_timeout: float = 90.0
    send_queue_limit: int = 2000
    send_timeout: float = 30.0
    max_replay_events: int = 5000


def _still_current(generation: int, current: int) -> None:
    """A token checked before the backlog was read may have been revoked meanwhile."""
    if current > generation:
        raise Unauthorized(LOGGED_OUT)


class WebSocketHandler:
    # Slots: one of these per open WebSocket (figure 4 counts the bytes per connection).
    __slots__ = (
        "_caps",
        "_client",
        "_connections",
        "_guard",
        "_joined",
        "_limits",
        "_metrics",
        "_model_name",
        "_out",
        "_service",
        "_session_id",
        "_sessions",
        "_settings",
        "_ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        *,
        sessions: SessionManager,
        connections: ConnectionManager,
        service: ChatService,
        limits: ApiLimits,
        caps: ConnectionCaps,
        client: str,
        metrics: ApiMetrics,
        settings: ConnectionSettings,
        model_name: str,
    ) -> None:
        """``client`` is the key of the client's address (client_address.ClientKeys)."""
        self._ws = ws
        self._sessions = sessions
        self._connections = connections
        self._service = service
        self._limits = limits
        self._caps = caps
        self._client = client
        self._joined = False
        self._guard = FrameGuard(
            limits, connection=secrets.token_urlsafe(9), client=client, session_id=""
        )
        self._metrics = metrics
        self._settings = settings
        self._model_name = model_name
        self._session_id = ""
        self._out = Outbound(
            ws,
            metrics=metrics,
            queue_limit=settings.send_queue_limit,
            send_timeout=settings.send_timeout,
        )

    # --- LiveConnection ---------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._session_id

    def deliver(self, events: Sequence[OutEvent]) -> None:
        self._out.deliver(events)

    def close_after(self, code: int, reason: str) -> None:
        self._out.push_close(code, reason)

    async def shutdown(self, code: int, reason: str) -> None:
        await self._out.close(code, reason)

    # --- the connection ---------------------------------------------------------------------

    async def run(self) -> None:
        admission = self._caps.admit(self._client)
        await self._ws.accept()
        if admission is not Admission.ADMITTED:
            await self._turn_away(admission)
            return
        self._metrics.connections_open.inc()
        self._metrics.connections_total.inc()
        try:
            await self._serve()
        except SendFailed:
            pass
        except Exception:
            # A fault no port promises (a library bug, a broken invariant): ours to log, and
            # the client's to retry. Nothing reaches the ASGI server, which would only say
            # "Exception in ASGI application" and drop the socket without a close code.
            log.exception(
                "connection handler failed; closing with 1011",
                extra={"session_id": self._session_id or None},
            )
            await self._out.close(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
        finally:
            self._connections.detach(self)
            self._guard.close()
            if self._joined:
                self._caps.leave(self._session_id)
            self._caps.release(self._client)
            self._metrics.connections_open.dec()

    async def _turn_away(self, admission: Admission) -> None:
        """No room for this connection: the process is full (1013, another process may have
        room) or the client address holds too many (1008)."""
        self._metrics.rate_limited.labels("connection").inc()
        if admission is Admission.PROCESS_FULL:
            log.warning("connection refused: this process holds max_connections")
            await self._out.refuse(
                ErrorCode.TOO_MANY_CONNECTIONS,
                "this server is full; try again later",
                CloseCode.TRY_AGAIN_LATER,
            )
        else:
            await self._out.refuse(
                ErrorCode.TOO_MANY_CONNECTIONS,
                "too many connections from this address",
                CloseCode.POLICY_VIOLATION,
            )

    async def _serve(self) -> None:
        # The hello's locals (the session's view, the snapshot) go out of scope before the
        # connection's long life begins: an idle socket keeps none of them.
        if await self._join():
            await self._live()

    async def _join(self) -> bool:
        """The hello and the backlog; ``True`` when the connection goes on to live frames."""
        hello = await self._await_hello()
        if hello is None:
            return False
        out = self._out
        try:
            grant = self._sessions.verify(hello.token)
        except Unauthorized as exc:
            await out.refuse(ErrorCode(exc.code), exc.message, CloseCode.UNAUTHORIZED)
            return False
        self._session_id = out.session_id = grant.session_id
        out.token_generation = grant.generation
        if not self._caps.join(self._session_id):
            self._metrics.rate_limited.labels("connection").inc()
            await out.refuse(
                ErrorCode.TOO_MANY_CONNECTIONS,
                "too many connections of this session",
                CloseCode.POLICY_VIOLATION,
            )
            return False
        self._joined = True
        self._guard.session_id = self._session_id
        ctx = {"session_id": self._session_id}
        try:
            await self._sessions.check_current(grant)  # not logged out since it was issued
            # Live first, backlog second: the overlap is deduplicated, a gap is impossible.
            await self._connections.attach(self)
            backlog = await self._sessions.restore(
                self._session_id,
                last_seen=hello.last_event_id,
                max_events=self._settings.max_replay_events,
            )
            _still_current(grant.generation, backlog.view.token_generation)
        except Unauthorized as exc:
            await out.refuse(ErrorCode(exc.code), exc.message, CloseCode.UNAUTHORIZED)
            return False
        except BadCursor as exc:
            await out.refuse(ErrorCode.BAD_CURSOR, exc.message, CloseCode.BAD_CURSOR)
            return False
        except SessionNotFound:
            await out.refuse(
                ErrorCode.SESSION_NOT_FOUND,
                "this session no longer exists",
                CloseCode.UNAUTHORIZED,
            )
            return False
        except PortError as exc:
            # Storage (or the live feed's subscription) is unreachable, e.g. in the first
            # moments after Redis restarts: a retryable close, the client comes back with
            # its cursor after a backoff.
            log.warning("cannot restore a session", extra={**ctx, "error": exc.code})
            await out.refuse(
                ErrorCode.UNAVAILABLE,
                "storage is unavailable; retry shortly",
                CloseCode.TRY_AGAIN_LATER,
            )
            return False
        issued = self._sessions.issue(self._session_id, grant.generation)
        s = self._settings
        await out.send_frame(
            Welcome(
                session_id=self._session_id,
                token=issued.token,
                token_expires_at=issued.expires_at,
                model=self._model_name,
                limits=Limits(
                    max_message_chars=s.max_message_chars,
                    max_frame_bytes=s.max_frame_bytes,
                    messages_per_minute=s.messages_per_minute,
                    idle_timeout=s.idle_timeout,
                ),
                resume="snapshot" if backlog.events is None else "events",
            )
        )
        if backlog.events is None:
            snapshot = snapshot_of(backlog.view)
            await out.send_frame(snapshot)
            out.cursor = snapshot.cursor
        else:
            # Where the client is: nothing newer may leave it anywhere else (caught_up says so).
            out.cursor = hello.last_event_id
            for record in backlog.events:
                if out.overflowed:
                    break
                frame = event_frame(record)
                await out.send_event(frame.cursor, frame.text)
                if out.revoked_by(frame):
                    await out.log_out()
                    return False
        if out.overflowed:
            await out.close(CloseCode.TRY_AGAIN_LATER, _TOO_SLOW)
            return False
        if out.cursor is None:  # (a resume always names a cursor; a snapshot has one)
            raise RuntimeError("no cursor after the backlog")
        await out.send_frame(CaughtUp(cursor=out.cursor))
        log.info(
            "connection ready",
            extra={**ctx, "resume": "snapshot" if backlog.events is None else "events"},
        )
        return True

    async def _live(self) -> None:
        commands = Commands(
            self._session_id,
            service=self._service,
            out=self._out,
            guard=self._guard,
            metrics=self._metrics,
        )
        reader = asyncio.create_task(self._read_loop(commands), name=f"ws-read:{self._session_id}")
        writer = self._out.start_writer()
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, SendFailed):
                    await task
        if self._out.overflowed:
            log.warning(
                "client too slow; closing so it resumes from its cursor",
                extra={"session_id": self._session_id},
            )
            await self._out.close(CloseCode.TRY_AGAIN_LATER, _TOO_SLOW)

    # --- reading ----------------------------------------------------------------------------

    async def _receive(self, timeout: float) -> str | bytes | None:
        """The next frame's payload; ``None`` when the client is gone. TimeoutError on silence."""
        message = await asyncio.wait_for(self._ws.receive(), timeout=timeout)
        if message["type"] == "websocket.disconnect":
            self._out.closed = True
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        return bytes(data) if data is not None else b""

    def _too_big(self, text: str) -> bool:
        limit = self._settings.max_frame_bytes
        return len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)

    async def _read_frame(self, timeout: float) -> ClientFrame | FrameError | None:
        """The client's next frame, validated against protocol v1; a :class:`FrameError` for
        one that is not (binary, not JSON, not a v1 frame). ``None`` when the connection is
        over: the client left, or sent a frame over the size limit (closed with 1009).
        TimeoutError when nothing came within ``timeout``."""
        payload = await self._receive(timeout)
        if payload is None:
            return None
        if isinstance(payload, bytes):
            self._metrics.frame_in("binary")
            return FrameError("binary frames are not supported; send JSON")
        if self._too_big(payload):
            await self._out.close(CloseCode.TOO_BIG, "frame too big")
            return None
        try:
            frame = parse_client_frame(payload)
        except FrameError as exc:
            self._metrics.frame_in("invalid")
            return exc
        self._metrics.frame_in(frame.type)
        return frame

    async def _await_hello(self) -> Hello | None:
        """The first frame, which must be a valid ``hello``. Anything else is refused with an
        error and the connection is closed at once: an unauthenticated socket is not kept."""
        out = self._out
        try:
            frame = await self._read_frame(self._settings.hello_timeout)
        except TimeoutError:
            await out.refuse(
                ErrorCode.HELLO_TIMEOUT, "send hello first", CloseCode.POLICY_VIOLATION
            )
            return None
        if frame is None:
            return None
        if isinstance(frame, FrameError):
            if frame.hello_protocol not in (None, PROTOCOL_VERSION):
                await self._refuse_protocol()
            else:
                await out.refuse(
                    ErrorCode.BAD_FRAME,
                    f"the first frame must be a valid hello: {frame.reason}",
                    CloseCode.POLICY_VIOLATION,
                    frame.request_id,
                )
            return None
        if not isinstance(frame, Hello):
            await out.refuse(
                ErrorCode.HELLO_REQUIRED,
                "the first frame must be hello",
                CloseCode.POLICY_VIOLATION,
                getattr(frame, "request_id", None),
            )
            return None
        if frame.protocol != PROTOCOL_VERSION:
            await self._refuse_protocol()
            return None
        return frame

    async def _refuse_protocol(self) -> None:
        await self._out.refuse(
            ErrorCode.UNSUPPORTED_PROTOCOL,
            f"this server speaks protocol {PROTOCOL_VERSION}",
            CloseCode.UNSUPPORTED_PROTOCOL,
        )

    async def _read_loop(self, commands: Commands) -> None:
        while not self._out.closed:
            try:
                frame = await self._read_frame(self._settings.idle_timeout)
            except TimeoutError:
                await self._out.close(CloseCode.IDLE_TIMEOUT, "idle timeout")
                return
            if frame is None:
                return
            if isinstance(frame, FrameError):
                self._out.push_error(ErrorCode.BAD_FRAME, frame.reason, frame.request_id)
                continue
            await commands.handle(frame)
