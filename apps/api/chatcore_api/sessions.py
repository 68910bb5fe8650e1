"""The Session Manager: creates anonymous sessions, issues and checks their tokens, and
restores a session for a connection that comes back."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from chatcore.errors import InvalidIdentifier
from chatcore.events import Recorded
from chatcore.ids import parse_position, position_before
from chatcore.service import ChatService
from chatcore.view import SessionView
from chatcore_api.errors import ApiError
from chatcore_api.tokens import IssuedToken, TokenSigner

log = logging.getLogger(__name__)


class BadCursor(ApiError):
    """The client's cursor is not a position of this session's log."""

    code = "bad_cursor"
    status = 400


@dataclass(frozen=True, slots=True)
class CreatedSession:
    session_id: str
    conversation_id: str
    token: IssuedToken

    @property
    def expires_at(self) -> datetime:
        return self.token.expires_at


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a resuming connection gets: the events after its cursor, or, when that would be
    too many, the whole current state."""

    view: SessionView
    events: list[Recorded] | None  # None: send a snapshot of ``view``


class SessionManager:
    def __init__(self, service: ChatService, tokens: TokenSigner) -> None:
        self.service = service
        self.tokens = tokens

    async def create(
        self, *, display_name: str | None = None, language: str | None = None
    ) -> CreatedSession:
        opened = await self.service.open_session(display_name=display_name, language=language)
        return CreatedSession(
            opened.session_id, opened.conversation_id, self.tokens.issue(opened.session_id)
        )

    def authenticate(self, token: str) -> str:
        """The session id a token grants (raises ``Unauthorized`` / ``TokenExpired``)."""
        return self.tokens.verify(token)

    def issue(self, session_id: str) -> IssuedToken:
        return self.tokens.issue(session_id)

    async def check_cursor(self, session_id: str, cursor: str) -> None:
        """``cursor`` must be the position of an event of this session's log."""
        try:
            parse_position(cursor)
        except InvalidIdentifier as exc:
            raise BadCursor("the cursor is not a valid event id") from exc
        found = await self.service.events_after(session_id, position_before(cursor), limit=1)
        if not found or found[0].position != cursor:
            raise BadCursor(
                "the cursor is not an event of this session; reconnect without last_event_id "
                "to get a snapshot"
            )

    async def restore(self, session_id: str, *, last_seen: str | None, max_events: int) -> Backlog:
        """Record the client's return and say what to send it (I5: the caller attached to the
        live feed before calling this)."""
        if last_seen is not None:
            await self.check_cursor(session_id, last_seen)
        view = await self.service.restore_session(session_id, last_seen=last_seen)
        if last_seen is None:
            return Backlog(view, None)
        events = await self.service.events_after(session_id, last_seen, limit=max_events + 1)
        if len(events) > max_events:
            log.info(
                "resume too far behind; sending a snapshot",
                extra={"session_id": session_id, "max_events": max_events},
            )
            return Backlog(view, None)
        return Backlog(view, events)
