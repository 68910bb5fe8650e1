"""What the client's commands do: each frame after ``hello`` goes to its use case and is
answered, through the connection's outbound queue, by an ``ack`` or an ``error`` with a
documented code (``pong`` for ``ping``)."""

from __future__ import annotations

import logging
from typing import Literal

from chatcore.decisions import KEEP
from chatcore.errors import ConcurrencyConflict, DomainError, InvalidIdentifier, PortError
from chatcore.protocol import (
    Ack,
    Cancel,
    ClientFrame,
    CloseCode,
    DeleteConversation,
    DeleteSession,
    Edit,
    ErrorCode,
    Hello,
    Ping,
    Pong,
    Regenerate,
    RenameConversation,
    SelectBranch,
    Send,
    SetProfile,
    StartConversation,
)
from chatcore.service import ChatService, SubmitResult
from chatcore_api.frames import wire_code
from chatcore_api.metrics import ApiMetrics
from chatcore_api.outbound import Outbound
from chatcore_api.ratelimit import FrameGuard

log = logging.getLogger(__name__)


class Commands:
    """One authenticated connection's commands (frames are handled one at a time)."""

    def __init__(
        self,
        session_id: str,
        *,
        service: ChatService,
        out: Outbound,
        guard: FrameGuard,
        metrics: ApiMetrics,
    ) -> None:
        self._session_id = session_id
        self._service = service
        self._out = out
        self._guard = guard
        self._metrics = metrics

    async def handle(self, frame: ClientFrame) -> None:
        request_id = getattr(frame, "request_id", None)
        if isinstance(frame, DeleteSession):
            # The session's farewell closes its connections; this one answers first.
            self._out.defer_close()
        try:
            await self._handle(frame, request_id)
        finally:
            self._out.release_close()

    async def _handle(self, frame: ClientFrame, request_id: str | None) -> None:
        try:
            # Every frame goes through the connection's limits first (ratelimit.FrameGuard).
            refusal = await self._guard.admit(frame)
            if refusal is not None:
                self._metrics.rate_limited.labels(refusal.what).inc()
                self._out.push_error(
                    refusal.code, refusal.message, request_id, retry_after=refusal.retry_after
                )
                return
            await self._dispatch(frame)
        except InvalidIdentifier as exc:
            # An id that breaks the pattern is a malformed frame (the frame models check the
            # same pattern first, so this is only a second line).
            self._out.push_error(ErrorCode.BAD_FRAME, exc.message, request_id)
        except DomainError as exc:
            self._out.push_error(wire_code(exc), exc.message, request_id)
        except ConcurrencyConflict:
            self._out.push_error(
                ErrorCode.CONFLICT, "the session is busy; retry", request_id, retry_after=0.5
            )
        except PortError as exc:
            log.warning(
                "storage error while handling a frame",
                extra={"session_id": self._session_id, "error": exc.code},
            )
            self._out.push_error(
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
            self._out.push_error(
                ErrorCode.INTERNAL_ERROR, "the server could not handle this", request_id
            )

    async def _dispatch(self, frame: ClientFrame) -> None:
        service, sid = self._service, self._session_id
        if isinstance(frame, Ping):
            self._out.push_frame(Pong(request_id=frame.request_id, nonce=frame.nonce))
        elif isinstance(frame, Hello):
            self._out.push_error(
                ErrorCode.ALREADY_AUTHENTICATED, "hello was already received on this connection"
            )
        elif isinstance(frame, Send):
            await self._send(frame)
        elif isinstance(frame, Cancel):
            recorded = await service.cancel_reply(sid, conversation_id=frame.conversation_id)
            self._ack(frame, recorded[0].position if recorded else None, frame.conversation_id)
        elif isinstance(frame, StartConversation):
            conversation_id, recorded = await service.start_conversation(
                sid, conversation_id=frame.conversation_id, title=frame.title
            )
            self._ack(frame, recorded[0].position if recorded else None, conversation_id)
        elif isinstance(frame, RenameConversation):
            recorded = await service.rename_conversation(
                sid, conversation_id=frame.conversation_id, title=frame.title
            )
            self._ack(frame, recorded[0].position if recorded else None, frame.conversation_id)
        elif isinstance(frame, SetProfile):
            given = frame.model_fields_set  # a field left out keeps its value
            recorded = await service.update_profile(
                sid,
                display_name=frame.display_name if "display_name" in given else KEEP,
                language=frame.language if "language" in given else KEEP,
            )
            self._ack(frame, recorded[0].position if recorded else None, None)
        elif isinstance(frame, Edit):
            await self._edit(frame)
        elif isinstance(frame, Regenerate):
            recorded = await service.regenerate_reply(
                sid,
                conversation_id=frame.conversation_id,
                message_id=frame.message_id,
                charges=self._guard.charges,
            )
            self._ack(
                frame,
                recorded[0].position if recorded else None,
                frame.conversation_id,
                message_id=frame.message_id,
            )
        elif isinstance(frame, SelectBranch):
            recorded = await service.select_branch(
                sid, conversation_id=frame.conversation_id, message_id=frame.message_id
            )
            self._ack(
                frame,
                recorded[0].position if recorded else None,
                frame.conversation_id,
                message_id=frame.message_id,
            )
        elif isinstance(frame, DeleteConversation):
            tombstone = await service.delete_conversation(
                sid, conversation_id=frame.conversation_id
            )
            self._ack(frame, tombstone.position, frame.conversation_id)
        elif isinstance(frame, DeleteSession):
            await service.delete_session(sid)
            self._ack(frame, None, None)
            self._out.push_close(CloseCode.UNAUTHORIZED, "the session was deleted")

    async def _send(self, frame: Send) -> None:
        result = await self._service.submit_message(
            self._session_id,
            conversation_id=frame.conversation_id,
            client_message_id=frame.client_message_id,
            text=frame.text,
            charges=self._guard.charges,
        )
        self._accepted(frame, "send", result)

    async def _edit(self, frame: Edit) -> None:
        # (An edit is a new message: the guard counted it as a send.)
        result = await self._service.edit_message(
            self._session_id,
            conversation_id=frame.conversation_id,
            message_id=frame.message_id,
            client_message_id=frame.client_message_id,
            text=frame.text,
            charges=self._guard.charges,
        )
        self._accepted(frame, "edit", result)

    def _accepted(
        self, frame: Send | Edit, for_type: Literal["send", "edit"], result: SubmitResult
    ) -> None:
        """The ack of a new message (a send, or an edit's new version)."""
        self._metrics.messages_accepted.labels(str(result.duplicate).lower()).inc()
        self._out.push_frame(
            Ack(
                request_id=frame.request_id,
                for_type=for_type,
                cursor=result.position,
                conversation_id=result.conversation_id,
                client_message_id=result.client_message_id,
                message_id=result.message_id,
                duplicate=result.duplicate,
            )
        )

    def _ack(
        self,
        frame: Cancel
        | StartConversation
        | RenameConversation
        | SetProfile
        | Regenerate
        | SelectBranch
        | DeleteConversation
        | DeleteSession,
        cursor: str | None,
        conversation_id: str | None,
        *,
        message_id: str | None = None,
    ) -> None:
        self._out.push_frame(
            Ack(
                request_id=frame.request_id,
                for_type=frame.type,
                cursor=cursor,
                conversation_id=conversation_id,
                message_id=message_id,
            )
        )
