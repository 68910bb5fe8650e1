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
from chatcore_api.errors import LOGGED_OUT, ApiError, Unauthorized
from chatcore_api.tokens import Grant, IssuedToken, TokenSigner

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

    def verify(self, token: str) -> Grant:
        """What a token grants, by its signature and expiry alone (``Unauthorized`` /
        ``TokenExpired``); :meth:`check_current` then asks the session."""
        return self.tokens.verify(token)

    async def check_current(self, grant: Grant) -> None:
        """``Unauthorized`` when the session was logged out since the token was issued (its
        log holds a ``tokens_revoked`` of a later generation); ``SessionNotFound`` when it
        does not exist."""
        view = await self.service.load(grant.session_id)
        if grant.generation < view.token_generation:
            raise Unauthorized(LOGGED_OUT)

    async def authenticate(self, token: str) -> Grant:
        """:meth:`verify`, then :meth:`check_current`."""
        grant = self.verify(token)
        await self.check_current(grant)
        return grant

    def issue(self, session_id: str, generation: int = 0) -> IssuedToken:
        return self.tokens.issue(session_id, generation)

    async def revoke(self, session_id: str) -> IssuedToken:
        """Log the session out everywhere; the caller gets a token of the new generation."""
        generation, _ = await self.service.revoke_tokens(session_id)
        return self.issue(session_id, generation)

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
