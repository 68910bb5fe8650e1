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

Two tasks run per connection: the reader (client frames, one at a time, each answered by an
``ack`` or an ``error``) and the writer (the connection's bounded outbound queue). A client too
slow to drain its queue is closed with 1013 and resumes from its cursor; it never slows down
another connection. Disconnecting never cancels a reply: only a ``cancel`` frame does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from chatcore.decisions import KEEP
from chatcore.errors import (
    ConcurrencyConflict,
    DomainError,
    InvalidIdentifier,
    PortError,
    SessionNotFound,
)
from chatcore.ids import position_after
from chatcore.protocol import (
    CLIENT_FRAME,
    PROTOCOL_VERSION,
    Ack,
    Cancel,
    CaughtUp,
    ClientFrame,
    CloseCode,
    Error,
    ErrorCode,
    Hello,
    Limits,
    Ping,
    Pong,
    RenameConversation,
    Send,
    SetProfile,
    StartConversation,
    Welcome,
    snapshot_of,
)
from chatcore.service import ChatService
from chatcore_api.connections import ConnectionManager, OutEvent, encode_event
from chatcore_api.errors import Unauthorized
from chatcore_api.metrics import ApiMetrics
from chatcore_api.ratelimit import RateLimiter
from chatcore_api.sessions import BadCursor, SessionManager

log = logging.getLogger(__name__)


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


class FrameError(Exception):
    """A client frame that cannot be understood (``bad_frame``).

    ``hello_protocol`` is the ``protocol`` a refused ``hello`` named, so that a newer
    client's hello, whose other fields this server may not know, is still told
    ``unsupported_protocol`` rather than ``bad_frame``.
    """

    def __init__(
        self, reason: str, request_id: str | None = None, *, hello_protocol: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
        self.hello_protocol = hello_protocol


def _request_id_of(data: object) -> str | None:
    if isinstance(data, dict):
        value = data.get("request_id")
        if isinstance(value, str) and 0 < len(value) <= 80:
            return value
    return None


def parse_client_frame(text: str) -> ClientFrame:
    """Validate one text frame against protocol v1, or raise :class:`FrameError`."""
    try:
        data: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise FrameError("a frame must be a JSON object with a 'type'")
    request_id = _request_id_of(data)
    if not isinstance(data.get("type"), str):
        raise FrameError("a frame must have a string 'type'", request_id)
    protocol = data.get("protocol") if data["type"] == "hello" else None
    hello_protocol = protocol if type(protocol) is int else None
    try:
        return CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"][1:])  # skip the union tag
        reason = f"{where}: {first['msg']}" if where else first["msg"]
        extra = exc.error_count() - 1
        if extra:
            reason += f" (and {extra} more)"
        raise FrameError(reason[:300], request_id, hello_protocol=hello_protocol) from None


_WIRE_CODES = frozenset(code.value for code in ErrorCode)


def _wire_code(exc: DomainError) -> ErrorCode:
    """The documented code of a refused command. A domain error the protocol does not list
    would be a server bug (e.g. a worker's error reaching a client): it goes out as
    ``internal_error`` rather than as a code no client was told about."""
    if exc.code in _WIRE_CODES:
        return ErrorCode(exc.code)
    log.error("an undocumented domain error reached a client", extra={"error": exc.code})
    return ErrorCode.INTERNAL_ERROR


class _SendFailed(Exception):
    """The client cannot be written to any more (gone, or not reading)."""


class WebSocketHandler:
    def __init__(
        self,
        ws: WebSocket,
        *,
        sessions: SessionManager,
        connections: ConnectionManager,
        service: ChatService,
        limiter: RateLimiter,
        metrics: ApiMetrics,
        settings: ConnectionSettings,
        model_name: str,
    ) -> None:
        self._ws = ws
        self._sessions = sessions
        self._connections = connections
        self._service = service
        self._limiter = limiter
        self._metrics = metrics
        self._settings = settings
        self._model_name = model_name
        self._session_id = ""
        self._cursor: str | None = None
        self._queue: deque[OutEvent | tuple[str, str]] = deque()
        self._wake = asyncio.Event()
        self._overflowed = False
        self._closed = False
        self._writer: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    # --- LiveConnection ---------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._session_id

    def deliver(self, events: Sequence[OutEvent]) -> None:
        if self._overflowed or self._closed:
            return
        if self._queue and len(self._queue) + len(events) > self._settings.send_queue_limit:
            self._overflow()  # (one batch into an empty queue is never too much)
            return
        self._queue.extend(events)
        self._wake.set()

    def _overflow(self) -> None:
        """Too far behind: stop writing now (even mid-send) and close with 1013, so the
        client resumes from its last cursor instead of holding frames here."""
        self._overflowed = True
        self._queue.clear()
        self._wake.set()
        if self._writer is not None:
            self._writer.cancel()

    async def shutdown(self, code: int, reason: str) -> None:
        await self._close(code, reason)

    # --- the connection ---------------------------------------------------------------------

    async def run(self) -> None:
        await self._ws.accept()
        self._metrics.connections_open.inc()
        self._metrics.connections_total.inc()
        try:
            await self._serve()
        except _SendFailed:
            pass
        except Exception:
            # A fault no port promises (a library bug, a broken invariant): ours to log, and
            # the client's to retry. Nothing reaches the ASGI server, which would only say
            # "Exception in ASGI application" and drop the socket without a close code.
            log.exception(
                "connection handler failed; closing with 1011",
                extra={"session_id": self._session_id or None},
            )
            await self._close(CloseCode.INTERNAL_ERROR, "internal error: reconnect")
        finally:
            self._connections.detach(self)
            self._metrics.connections_open.dec()

    async def _serve(self) -> None:
        hello = await self._await_hello()
        if hello is None:
            return
        try:
            self._session_id = self._sessions.authenticate(hello.token)
        except Unauthorized as exc:
            await self._refuse(ErrorCode(exc.code), exc.message, CloseCode.UNAUTHORIZED)
            return
        ctx = {"session_id": self._session_id}
        try:
            # Live first, backlog second: the overlap is deduplicated, a gap is impossible.
            await self._connections.attach(self)
            backlog = await self._sessions.restore(
                self._session_id,
                last_seen=hello.last_event_id,
                max_events=self._settings.max_replay_events,
            )
        except BadCursor as exc:
            await self._refuse(ErrorCode.BAD_CURSOR, exc.message, CloseCode.BAD_CURSOR)
            return
        except SessionNotFound:
            await self._refuse(
                ErrorCode.SESSION_NOT_FOUND,
                "this session no longer exists",
                CloseCode.UNAUTHORIZED,
            )
            return
        except PortError as exc:
            # Storage (or the live feed's subscription) is unreachable, e.g. in the first
            # moments after Redis restarts: a retryable close, the client comes back with
            # its cursor after a backoff.
            log.warning("cannot restore a session", extra={**ctx, "error": exc.code})
            await self._refuse(
                ErrorCode.UNAVAILABLE,
                "storage is unavailable; retry shortly",
                CloseCode.TRY_AGAIN_LATER,
            )
            return
        issued = self._sessions.issue(self._session_id)
        s = self._settings
        await self._send_frame(
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
            await self._send_frame(snapshot)
            self._cursor = snapshot.cursor
        else:
            # Where the client is: nothing newer may leave it anywhere else (caught_up says so).
            self._cursor = hello.last_event_id
            for record in backlog.events:
                if self._overflowed:
                    break
                if position_after(record.position, self._cursor):
                    await self._send_text(encode_event(record).text, "event")
                    self._cursor = record.position
        if self._overflowed:
            await self._close(CloseCode.TRY_AGAIN_LATER, "too slow: resume from your cursor")
            return
        if self._cursor is None:  # (a resume always names a cursor; a snapshot has one)
            raise RuntimeError("no cursor after the backlog")
        await self._send_frame(CaughtUp(cursor=self._cursor))
        log.info(
            "connection ready",
            extra={**ctx, "resume": "snapshot" if backlog.events is None else "events"},
        )
        await self._live()

    async def _live(self) -> None:
        reader = asyncio.create_task(self._read_loop(), name=f"ws-read:{self._session_id}")
        writer = asyncio.create_task(self._write_loop(), name=f"ws-write:{self._session_id}")
        self._writer = writer
        if self._overflowed:
            writer.cancel()  # overflowed while the backlog was being sent
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, _SendFailed):
                    await task
        if self._overflowed:
            log.warning(
                "client too slow; closing so it resumes from its cursor",
                extra={"session_id": self._session_id},
            )
            await self._close(CloseCode.TRY_AGAIN_LATER, "too slow: resume from your cursor")

    # --- reading ----------------------------------------------------------------------------

    async def _receive(self, timeout: float) -> str | bytes | None:
        """The next frame's payload; ``None`` when the client is gone. TimeoutError on silence."""
        message = await asyncio.wait_for(self._ws.receive(), timeout=timeout)
        if message["type"] == "websocket.disconnect":
            self._closed = True
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
            await self._close(CloseCode.TOO_BIG, "frame too big")
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
        try:
            frame = await self._read_frame(self._settings.hello_timeout)
        except TimeoutError:
            await self._refuse(
                ErrorCode.HELLO_TIMEOUT, "send hello first", CloseCode.POLICY_VIOLATION
            )
            return None
        if frame is None:
            return None
        if isinstance(frame, FrameError):
            if frame.hello_protocol not in (None, PROTOCOL_VERSION):
                await self._refuse_protocol()
            else:
                await self._refuse(
                    ErrorCode.BAD_FRAME,
                    f"the first frame must be a valid hello: {frame.reason}",
                    CloseCode.POLICY_VIOLATION,
                    frame.request_id,
                )
            return None
        if not isinstance(frame, Hello):
            await self._refuse(
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
        await self._refuse(
            ErrorCode.UNSUPPORTED_PROTOCOL,
            f"this server speaks protocol {PROTOCOL_VERSION}",
            CloseCode.UNSUPPORTED_PROTOCOL,
        )

    async def _read_loop(self) -> None:
        while not self._closed:
            try:
                frame = await self._read_frame(self._settings.idle_timeout)
            except TimeoutError:
                await self._close(CloseCode.IDLE_TIMEOUT, "idle timeout")
                return
            if frame is None:
                return
            if isinstance(frame, FrameError):
                self._push_error(ErrorCode.BAD_FRAME, frame.reason, frame.request_id)
                continue
            await self._dispatch(frame)

    async def _dispatch(self, frame: ClientFrame) -> None:
        request_id = getattr(frame, "request_id", None)
        try:
            if isinstance(frame, Ping):
                self._push_frame(Pong(request_id=frame.request_id, nonce=frame.nonce))
            elif isinstance(frame, Hello):
                self._push_error(
                    ErrorCode.ALREADY_AUTHENTICATED,
                    "hello was already received on this connection",
                )
            elif isinstance(frame, Send):
                await self._on_send(frame)
            elif isinstance(frame, Cancel):
                recorded = await self._service.cancel_reply(
                    self._session_id, conversation_id=frame.conversation_id
                )
                self._ack(frame, recorded[0].position if recorded else None, frame.conversation_id)
            elif isinstance(frame, StartConversation):
                conversation_id, recorded = await self._service.start_conversation(
                    self._session_id, conversation_id=frame.conversation_id, title=frame.title
                )
                self._ack(frame, recorded[0].position if recorded else None, conversation_id)
            elif isinstance(frame, RenameConversation):
                recorded = await self._service.rename_conversation(
                    self._session_id, conversation_id=frame.conversation_id, title=frame.title
                )
                self._ack(frame, recorded[0].position if recorded else None, frame.conversation_id)
            elif isinstance(frame, SetProfile):
                given = frame.model_fields_set  # a field left out keeps its value
                recorded = await self._service.update_profile(
                    self._session_id,
                    display_name=frame.display_name if "display_name" in given else KEEP,
                    language=frame.language if "language" in given else KEEP,
                )
                self._ack(frame, recorded[0].position if recorded else None, None)
        except InvalidIdentifier as exc:
            # An id that breaks the pattern is a malformed frame (the frame models check the
            # same pattern first, so this is only a second line).
            self._push_error(ErrorCode.BAD_FRAME, exc.message, request_id)
        except DomainError as exc:
            self._push_error(_wire_code(exc), exc.message, request_id)
        except ConcurrencyConflict:
            self._push_error(
                ErrorCode.CONFLICT, "the session is busy; retry", request_id, retry_after=0.5
            )
        except PortError as exc:
            log.warning(
                "storage error while handling a frame",
                extra={"session_id": self._session_id, "error": exc.code},
            )
            self._push_error(
                ErrorCode.UNAVAILABLE,
                "storage is unavailable; retry shortly",
                request_id,
                retry_after=1.0,
            )
        except Exception:
            log.exception(
                "unexpected error while handling a frame",
                extra={"session_id": self._session_id, "frame": frame.type},
            )
            self._push_error(
                ErrorCode.INTERNAL_ERROR, "the server could not handle this", request_id
            )

    async def _on_send(self, frame: Send) -> None:
        wait = self._limiter.try_acquire(self._session_id)
        if wait > 0:
            self._metrics.rate_limited.labels("message").inc()
            self._push_error(
                ErrorCode.RATE_LIMITED,
                f"too many messages; at most {self._settings.messages_per_minute} a minute",
                frame.request_id,
                retry_after=math.ceil(wait * 10) / 10,
            )
            return
        result = await self._service.submit_message(
            self._session_id,
            conversation_id=frame.conversation_id,
            client_message_id=frame.client_message_id,
            text=frame.text,
        )
        self._metrics.messages_accepted.labels(str(result.duplicate).lower()).inc()
        self._push_frame(
            Ack(
                request_id=frame.request_id,
                for_type="send",
                cursor=result.position,
                conversation_id=result.conversation_id,
                client_message_id=result.client_message_id,
                message_id=result.message_id,
                duplicate=result.duplicate,
            )
        )

    def _ack(
        self,
        frame: Cancel | StartConversation | RenameConversation | SetProfile,
        cursor: str | None,
        conversation_id: str | None,
    ) -> None:
        self._push_frame(
            Ack(
                request_id=frame.request_id,
                for_type=frame.type,
                cursor=cursor,
                conversation_id=conversation_id,
            )
        )

    # --- writing ----------------------------------------------------------------------------

    def _push_frame(self, frame: BaseModel) -> None:
        kind = str(getattr(frame, "type", "frame"))
        if self._overflowed or self._closed:
            return
        if len(self._queue) >= self._settings.send_queue_limit:
            self._overflow()
            return
        self._queue.append((frame.model_dump_json(), kind))
        self._wake.set()

    def _push_error(
        self,
        code: ErrorCode,
        message: str,
        request_id: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self._metrics.errors_sent.labels(code).inc()
        self._push_frame(
            Error(code=code, message=message, request_id=request_id, retry_after=retry_after)
        )

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._overflowed:
                return  # _live closes with 1013
            while self._queue and not self._overflowed and not self._closed:
                item = self._queue.popleft()
                if isinstance(item, OutEvent):
                    if not position_after(item.cursor, self._cursor):
                        continue  # already sent in the backlog (or by an earlier batch)
                    await self._send_text(item.text, "event")
                    self._cursor = item.cursor
                else:
                    await self._send_text(*item)
            if self._closed:
                return

    async def _send_frame(self, frame: BaseModel) -> None:
        await self._send_text(frame.model_dump_json(), str(getattr(frame, "type", "frame")))

    async def _send_text(self, text: str, kind: str) -> None:
        if self._closed:
            raise _SendFailed
        try:
            # asyncio.timeout, not wait_for: wait_for wraps every frame in a task of its own.
            async with self._send_lock, asyncio.timeout(self._settings.send_timeout):
                await self._ws.send_text(text)
        except TimeoutError:
            log.warning(
                "client stopped reading; dropping the connection",
                extra={"session_id": self._session_id},
            )
            self._closed = True
            raise _SendFailed from None
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._closed = True
            raise _SendFailed from None
        self._metrics.frames_out.labels(kind).inc()

    async def _error_now(
        self, code: ErrorCode, message: str, request_id: str | None = None
    ) -> None:
        self._metrics.errors_sent.labels(code).inc()
        await self._send_frame(Error(code=code, message=message, request_id=request_id))

    async def _refuse(
        self, code: ErrorCode, message: str, close: CloseCode, request_id: str | None = None
    ) -> None:
        """Tell the client why, then close: it can tell "start over" from a network blip."""
        with contextlib.suppress(_SendFailed):
            await self._error_now(code, message, request_id)
        await self._close(close, message[:100])

    async def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._metrics.closes.labels(str(code)).inc()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(self._settings.send_timeout):
                async with self._send_lock:
                    await self._ws.close(code=code, reason=reason[:120])
