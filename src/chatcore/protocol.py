"""The ``/ws`` protocol, version 1: the JSON frames clients and servers exchange.

Every frame is a JSON object with a ``type``. The server's events carry their ``cursor`` (the
position in the session's log); a client that reconnects names the last cursor it rendered
and receives everything after it. The JSON Schemas in ``docs/protocol/`` are generated from
these models (``chatcore schema``), and a test keeps them in step.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from chatcore.events import AnyEvent, Usage
from chatcore.view import ChatMessage, SessionView

PROTOCOL_VERSION = 1


class CloseCode(IntEnum):
    """Why the server closed a connection (RFC 6455 codes, and 4xxx ones of this protocol).

    A client reconnects with its last cursor after every code except the 4001/4002/4003
    family, which need a change first (a new session, no cursor, a newer client).
    """

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down: reconnect (to another process)
    POLICY_VIOLATION = 1008  # no hello in time, or the handshake was refused
    TOO_BIG = 1009  # a frame was larger than limits.max_frame_bytes
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # too slow to keep up, or storage unavailable: reconnect later
    UNAUTHORIZED = 4001  # token invalid or expired, or the session is gone: start a new one
    BAD_CURSOR = 4002  # last_event_id is not an event of this session: resume without it
    UNSUPPORTED_PROTOCOL = 4003  # hello.protocol is not a version this server speaks
    IDLE_TIMEOUT = 4008  # no frame from the client for too long: reconnect when needed


class ErrorCode(StrEnum):
    """Every ``code`` an ``error`` frame of this server carries (``docs/protocol.md`` §9 lists
    the same set; a test compares them). Clients treat a code they do not know as a generic
    failure, so adding one keeps protocol 1."""

    BAD_FRAME = "bad_frame"
    HELLO_REQUIRED = "hello_required"
    HELLO_TIMEOUT = "hello_timeout"
    ALREADY_AUTHENTICATED = "already_authenticated"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 (an error code, not a secret)
    SESSION_NOT_FOUND = "session_not_found"
    BAD_CURSOR = "bad_cursor"
    RATE_LIMITED = "rate_limited"
    BUDGET_EXCEEDED = "budget_exceeded"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"
    UNKNOWN_CONVERSATION = "unknown_conversation"
    CONVERSATION_EXISTS = "conversation_exists"
    TOO_MANY_CONVERSATIONS = "too_many_conversations"
    REPLY_IN_PROGRESS = "reply_in_progress"
    NOTHING_TO_CANCEL = "nothing_to_cancel"
    INVALID_PROFILE = "invalid_profile"
    UNKNOWN_MESSAGE = "unknown_message"
    SESSION_FULL = "session_full"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


# Client ids: what the client chooses (conversation ids, client message ids, request ids).
ClientId = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- client to server -------------------------------------------------------------------------


class Hello(_Frame):
    """First frame of every connection: prove the session, say where to resume from."""

    type: Literal["hello"] = "hello"
    protocol: int = PROTOCOL_VERSION
    token: str = Field(min_length=1, max_length=1024)
    # Any string: one that is not a cursor of this session is refused with bad_cursor (4002).
    last_event_id: str | None = None


class Send(_Frame):
    type: Literal["send"] = "send"
    request_id: ClientId | None = None
    conversation_id: ClientId
    client_message_id: ClientId
    text: str


class Cancel(_Frame):
    type: Literal["cancel"] = "cancel"
    request_id: ClientId | None = None
    conversation_id: ClientId


class StartConversation(_Frame):
    type: Literal["start_conversation"] = "start_conversation"
    request_id: ClientId | None = None
    conversation_id: ClientId | None = None
    title: str | None = Field(default=None, max_length=200)


class RenameConversation(_Frame):
    type: Literal["rename_conversation"] = "rename_conversation"
    request_id: ClientId | None = None
    conversation_id: ClientId
    title: str = Field(max_length=200)


class SetProfile(_Frame):
    """The welcome step's answers: how to address the user and in which language to reply.

    A partial update: a field left out keeps its value, ``null`` clears it, a string sets it
    (a blank one is refused with ``invalid_profile``).
    """

    type: Literal["set_profile"] = "set_profile"
    request_id: ClientId | None = None
    display_name: str | None = Field(default=None, max_length=200)
    language: str | None = Field(default=None, max_length=64)


class Ping(_Frame):
    type: Literal["ping"] = "ping"
    request_id: ClientId | None = None
    nonce: str | None = Field(default=None, max_length=64)


class Regenerate(_Frame):
    """Answer the user message ``message_id`` again; its earlier answers are kept as other
    versions (``reply_requested``, then the reply's events as for any message)."""

    type: Literal["regenerate"] = "regenerate"
    request_id: ClientId | None = None
    conversation_id: ClientId
    message_id: ClientId


class Edit(_Frame):
    """A new version of the user message ``message_id`` with ``text``: a new branch from
    there, answered like a ``send`` (idempotent per ``client_message_id`` in the same way)."""

    type: Literal["edit"] = "edit"
    request_id: ClientId | None = None
    conversation_id: ClientId
    message_id: ClientId
    client_message_id: ClientId
    text: str


class SelectBranch(_Frame):
    """Make the version ``message_id`` (a user message or an answer) part of the active path,
    for every tab and device of the session (``branch_selected``)."""

    type: Literal["select_branch"] = "select_branch"
    request_id: ClientId | None = None
    conversation_id: ClientId
    message_id: ClientId


class DeleteConversation(_Frame):
    """Delete a conversation for good (``conversation_deleted``)."""

    type: Literal["delete_conversation"] = "delete_conversation"
    request_id: ClientId | None = None
    conversation_id: ClientId


class DeleteSession(_Frame):
    """Delete the whole session for good; the server then closes every connection of it with
    4001."""

    type: Literal["delete_session"] = "delete_session"
    request_id: ClientId | None = None


ClientFrame: TypeAlias = Annotated[
    Hello
    | Send
    | Cancel
    | StartConversation
    | RenameConversation
    | SetProfile
    | Ping
    | Regenerate
    | Edit
    | SelectBranch
    | DeleteConversation
    | DeleteSession,
    Field(discriminator="type"),
]
CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


# --- server to client -------------------------------------------------------------------------


class Limits(_Frame):
    """This server's limits, announced in ``welcome``: a client keeps within them."""

    max_message_chars: int = Field(
        description="The longest ``send`` text, in characters (Unicode code points)."
    )
    max_frame_bytes: int = Field(
        description="The largest frame the server reads, in bytes of its UTF-8 text (close 1009)."
    )
    messages_per_minute: int = Field(
        description="``send`` frames a session may make per minute, on average (``rate_limited``)."
    )
    idle_timeout: float = Field(
        description="Seconds without any frame from the client before the server closes with "
        "4008: send a ping at least every ``idle_timeout / 3`` seconds, whatever arrives."
    )


class Welcome(_Frame):
    """Answer to ``hello``: the session is proven. ``token`` is a fresh one to store."""

    type: Literal["welcome"] = "welcome"
    protocol: int = PROTOCOL_VERSION
    session_id: str
    token: str
    token_expires_at: datetime
    model: str
    limits: Limits
    resume: Literal["snapshot", "events"]


class PendingReply(_Frame):
    reply_id: str
    text: str
    model: str
    attempt: int
    started_at: datetime


class PendingState(_Frame):
    message_id: str
    client_message_id: str
    cancel_requested: bool
    reply: PendingReply | None


class MessageState(_Frame):
    message_id: str
    role: Literal["user", "assistant"]
    text: str
    cursor: str
    at: datetime
    status: Literal["complete", "failed", "cancelled"]
    client_message_id: str | None = None
    in_reply_to: str | None = None
    models: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    error_code: str | None = None
    error: str | None = None
    # The message this one follows in the conversation's tree (null: the first of a branch
    # at the start). Versions of a message are the messages with its parent_id.
    parent_id: str | None = None


class ConversationState(_Frame):
    """``messages`` is the active path; ``branches`` every other message of the conversation
    (other versions and what follows them), in the order recorded."""

    conversation_id: str
    title: str
    started_at: datetime
    messages: list[MessageState]
    pending: PendingState | None
    branches: list[MessageState] = Field(default_factory=list)


class ProfileState(_Frame):
    display_name: str | None
    language: str | None


class Snapshot(_Frame):
    """The whole session as of ``cursor`` (sent when the client has no cursor, or is more than
    ``max_replay_events`` behind). A session always has an event, so ``cursor`` is never null."""

    type: Literal["snapshot"] = "snapshot"
    cursor: str
    profile: ProfileState
    conversations: list[ConversationState]


class EventFrame(_Frame):
    """One event of the session's log; ``cursor`` is its position."""

    type: Literal["event"] = "event"
    cursor: str
    event: AnyEvent


class CaughtUp(_Frame):
    """Everything up to ``cursor`` has been sent; what follows is live. ``cursor`` is where the
    client now is: the last event sent, or the snapshot's cursor, or (nothing being newer) the
    cursor it resumed from. Never null."""

    type: Literal["caught_up"] = "caught_up"
    cursor: str


class Ack(_Frame):
    """Delivery confirmation: the command was recorded at ``cursor`` (``null`` when it changed
    nothing: a ``set_profile`` to the current values, a second ``cancel`` of the same reply)."""

    type: Literal["ack"] = "ack"
    request_id: str | None = None
    for_type: Literal[
        "send",
        "cancel",
        "start_conversation",
        "rename_conversation",
        "set_profile",
        "regenerate",
        "edit",
        "select_branch",
        "delete_conversation",
        "delete_session",
    ]
    cursor: str | None
    conversation_id: str | None = None
    client_message_id: str | None = None
    message_id: str | None = None
    duplicate: bool = False


class Error(_Frame):
    """A refused frame. The connection stays usable unless the server then closes it."""

    type: Literal["error"] = "error"
    code: str
    message: str
    request_id: str | None = None
    retry_after: float | None = None


class Pong(_Frame):
    """The answer to ``ping``: its ``nonce`` and ``request_id``, echoed."""

    type: Literal["pong"] = "pong"
    request_id: str | None = None
    nonce: str | None = None


ServerFrame: TypeAlias = Annotated[
    Welcome | Snapshot | EventFrame | CaughtUp | Ack | Error | Pong,
    Field(discriminator="type"),
]
SERVER_FRAME: TypeAdapter[ServerFrame] = TypeAdapter(ServerFrame)


def message_state(m: ChatMessage) -> MessageState:
    return MessageState(
        message_id=m.message_id,
        role=m.role,
        text=m.text,
        cursor=m.position,
        at=m.at,
        status=m.status,
        client_message_id=m.client_message_id,
        in_reply_to=m.in_reply_to,
        models=list(m.models),
        usage=m.usage,
        error_code=m.error_code,
        error=m.error,
        parent_id=m.parent_id,
    )


def snapshot_of(view: SessionView) -> Snapshot:
    conversations = []
    for conv in view.conversations.values():
        pending = None
        if conv.pending is not None:
            draft = conv.pending.reply
            pending = PendingState(
                message_id=conv.pending.message_id,
                client_message_id=conv.pending.client_message_id,
                cancel_requested=conv.pending.cancel_requested,
                reply=PendingReply(
                    reply_id=draft.reply_id,
                    text=draft.text,
                    model=draft.model,
                    attempt=draft.attempt,
                    started_at=draft.started_at,
                )
                if draft is not None
                else None,
            )
        conversations.append(
            ConversationState(
                conversation_id=conv.conversation_id,
                title=conv.title,
                started_at=conv.started_at,
                messages=[message_state(m) for m in conv.messages],
                pending=pending,
                branches=[message_state(m) for m in conv.branches],
            )
        )
    if view.version is None:
        raise ValueError("a view with no events has no snapshot")
    return Snapshot(
        cursor=view.version,
        profile=ProfileState(
            display_name=view.profile.display_name, language=view.profile.language
        ),
        conversations=conversations,
    )
