"""The REST side: create a session, read its profile, conversations and history, export a
conversation, delete a conversation or the whole session.

Reading needs ``Authorization: Bearer <token>``, and the token's session must be the one in
the path: a token for session A can never read session B. Errors are JSON
``{"error": {"code": ..., "message": ...}}`` with a 4xx status (503 when storage is down).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from chatcore.errors import InvalidIdentifier, UnknownConversation
from chatcore.export import ExportedConversation, export_json, export_markdown
from chatcore.ids import parse_position, position_after
from chatcore.protocol import MessageState, PendingState, ProfileState, snapshot_of
from chatcore.view import SessionView
from chatcore_api.errors import Forbidden, RateLimited, Unauthorized, Unavailable
from chatcore_api.runtime import Runtime
from chatcore_api.sessions import BadCursor


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. unauthorized.")
    message: str = Field(description="What went wrong, fit to show a user.")


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Bad request",
        401: "Missing, invalid or expired token",
        403: "The token is for another session",
        404: "No such session or conversation",
        429: "Too many requests",
        503: "Storage unavailable",
    }.items()
}


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=200)
    language: str | None = Field(default=None, max_length=64)


class SessionCreated(BaseModel):
    session_id: str
    conversation_id: str = Field(description="The conversation the session starts with.")
    token: str = Field(description="Send it in hello or as a Bearer token; keep it secret.")
    expires_at: datetime


class ConversationSummary(BaseModel):
    conversation_id: str
    title: str
    started_at: datetime
    message_count: int
    replying: bool = Field(description="A reply is in progress.")
    last_cursor: str | None


class SessionInfo(BaseModel):
    session_id: str
    cursor: str | None = Field(description="Position of the session's last event.")
    profile: ProfileState
    conversations: list[ConversationSummary]


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]


class ConversationDeletedBody(BaseModel):
    conversation_id: str
    cursor: str = Field(description="Position of the conversation_deleted event (its tombstone).")


class MessagePage(BaseModel):
    conversation_id: str
    messages: list[MessageState]
    pending: PendingState | None = Field(description="The message being answered, if any.")
    next_after: str | None = Field(
        description="Pass as `after` to get the next page; null when this was the last."
    )


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SessionToken",
    description="The token returned by POST /api/sessions (or the latest welcome frame).",
)

SessionIdPath = Annotated[
    str, Path(min_length=1, max_length=100, description="The session id from POST /api/sessions.")
]
ConversationIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=80,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="A conversation of the session.",
    ),
]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise Unavailable("the server is starting")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def authorised_session(
    session_id: SessionIdPath,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> str:
    if credentials is None:
        raise Unauthorized("send the session token as 'Authorization: Bearer <token>'")
    grant = runtime.sessions.verify(credentials.credentials)
    if grant.session_id != session_id:
        raise Forbidden("this token is for another session")
    await runtime.sessions.check_current(grant)  # not logged out since it was issued
    return session_id


SessionDep = Annotated[str, Depends(authorised_session)]


def _client_address(request: Request) -> str | None:
    """The client's address (its proxies' X-Forwarded-For only when they are trusted:
    client_address.ForwardedClient)."""
    return request.client.host if request.client else None


def _summaries(view: SessionView) -> list[ConversationSummary]:
    return [
        ConversationSummary(
            conversation_id=conv.conversation_id,
            title=conv.title,
            started_at=conv.started_at,
            message_count=len(conv.messages),
            replying=conv.pending is not None,
            last_cursor=conv.messages[-1].position if conv.messages else None,
        )
        for conv in view.conversations.values()
    ]


router = APIRouter(prefix="/api", tags=["sessions"], responses=ERRORS)


@router.post("/sessions", status_code=201, response_model=SessionCreated)
async def create_session(
    request: Request,
    runtime: RuntimeDep,
    body: Annotated[CreateSession | None, Body()] = None,
) -> SessionCreated:
    """Start an anonymous session. Keep the token: it is the only key to the session."""
    refusal = await runtime.limits.new_session(runtime.client_keys.key(_client_address(request)))
    if refusal is not None:
        runtime.metrics.rate_limited.labels(refusal.what).inc()
        raise RateLimited(refusal.message, retry_after=refusal.retry_after)
    body = body or CreateSession()
    created = await runtime.sessions.create(display_name=body.display_name, language=body.language)
    runtime.metrics.sessions_created.inc()
    return SessionCreated(
        session_id=created.session_id,
        conversation_id=created.conversation_id,
        token=created.token.token,
        expires_at=created.expires_at,
    )


@router.get("/sessions/{session_id}", response_model=SessionInfo)
async def get_session(session_id: SessionDep, runtime: RuntimeDep) -> SessionInfo:
    """The session's profile and its conversations."""
    view = await runtime.service.load(session_id)
    return SessionInfo(
        session_id=session_id,
        cursor=view.version,
        profile=ProfileState(
            display_name=view.profile.display_name, language=view.profile.language
        ),
        conversations=_summaries(view),
    )


@router.get("/sessions/{session_id}/conversations", response_model=ConversationList)
async def list_conversations(session_id: SessionDep, runtime: RuntimeDep) -> ConversationList:
    view = await runtime.service.load(session_id)
    return ConversationList(conversations=_summaries(view))


@router.get("/sessions/{session_id}/messages", response_model=MessagePage)
async def list_messages(
    session_id: SessionDep,
    runtime: RuntimeDep,
    conversation_id: Annotated[str, Query(min_length=1, max_length=80)],
    after: Annotated[
        str | None,
        Query(description="Only messages after this cursor (one the server sent, as it was)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MessagePage:
    """A conversation's finished messages after a cursor, oldest first, one page at a time."""
    if after is not None:
        try:
            parse_position(after)
        except InvalidIdentifier as exc:
            raise BadCursor("after is not a valid cursor") from exc
    view = await runtime.service.load(session_id)
    if conversation_id not in view.conversations:
        raise UnknownConversation(conversation_id)
    snapshot = snapshot_of(view)
    conv = next(c for c in snapshot.conversations if c.conversation_id == conversation_id)
    newer = [m for m in conv.messages if position_after(m.cursor, after)]
    page = newer[:limit]
    return MessagePage(
        conversation_id=conversation_id,
        messages=page,
        pending=conv.pending,
        next_after=page[-1].cursor if len(newer) > limit else None,
    )


@router.get(
    "/sessions/{session_id}/conversations/{conversation_id}/export",
    response_model=ExportedConversation,
    responses={
        200: {
            "content": {"text/markdown": {"schema": {"type": "string"}}},
            "description": "The conversation as JSON, or as Markdown with format=markdown.",
        },
        422: {"model": ErrorBody, "description": "A query that does not fit"},
    },
)
async def export_conversation(
    session_id: SessionDep,
    runtime: RuntimeDep,
    conversation_id: ConversationIdPath,
    format: Annotated[
        Literal["markdown", "json"], Query(description="markdown (the active path) or json.")
    ] = "json",
    tree: Annotated[
        bool,
        Query(description="json only: every version of every message, not just the active path."),
    ] = False,
) -> Response:
    """Export a conversation: its active path as Markdown or JSON, or its whole tree as JSON."""
    view = await runtime.service.load(session_id)
    conv = view.conversations.get(conversation_id)
    if conv is None:
        raise UnknownConversation(conversation_id)
    now = runtime.service.clock.now()
    suffix = "md" if format == "markdown" else "json"
    disposition = f'attachment; filename="{conversation_id}.{suffix}"'
    if format == "markdown":
        if tree:  # answered like any query that does not fit: bad_request, with details
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", "tree"),
                        "msg": "tree=true is for format=json; Markdown holds the active path",
                        "type": "value_error",
                    }
                ]
            )
        return Response(
            export_markdown(conv, exported_at=now),
            media_type="text/markdown; charset=utf-8",
            headers={"content-disposition": disposition},
        )
    exported = export_json(conv, exported_at=now, tree=tree)
    return Response(
        exported.model_dump_json(),
        media_type="application/json",
        headers={"content-disposition": disposition},
    )


@router.delete(
    "/sessions/{session_id}/conversations/{conversation_id}",
    response_model=ConversationDeletedBody,
)
async def delete_conversation(
    session_id: SessionDep, runtime: RuntimeDep, conversation_id: ConversationIdPath
) -> ConversationDeletedBody:
    """Delete a conversation for good: its text leaves the log and the cache; connected
    clients receive its conversation_deleted event."""
    tombstone = await runtime.service.delete_conversation(
        session_id, conversation_id=conversation_id
    )
    return ConversationDeletedBody(conversation_id=conversation_id, cursor=tombstone.position)


@router.delete("/sessions/{session_id}", status_code=204, response_class=Response)
async def delete_session(session_id: SessionDep, runtime: RuntimeDep) -> Response:
    """Delete the whole session for good. Its connections are closed with 4001; its token
    then gets 404 session_not_found."""
    await runtime.service.delete_session(session_id)
    return Response(status_code=204)
