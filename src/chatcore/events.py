"""The events of a chat session: everything that ever happens to it, in order.

Events are immutable pydantic models. Each type has a ``type`` tag and a ``schema_version``;
stored records of an older version are brought up to date by the upcasters registered here
(the adapters' codecs call :func:`upcast` before validating). How events are turned into bytes
is the adapters' business, not the domain's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Event(BaseModel):
    """Base of all events. ``at`` is when it happened (UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: ClassVar[int] = 1
    at: datetime


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: float | None = Field(default=None, ge=0)


# --- the session ------------------------------------------------------------------------------


class SessionOpened(Event):
    type: Literal["session_opened"] = "session_opened"
    session_id: str


class SessionRestored(Event):
    """A client came back to the session (a reload, a reconnect, another device)."""

    type: Literal["session_restored"] = "session_restored"
    last_seen: str | None = None


class ProfileUpdated(Event):
    """The user's context: how the assistant should address them and answer.

    It carries the whole profile after the update (a field an update did not name is copied
    from the profile before it), so folding it replaces the profile, as it always has."""

    type: Literal["profile_updated"] = "profile_updated"
    display_name: str | None = None
    language: str | None = None


class TokensRevoked(Event):
    """The session was logged out everywhere: every token issued before this event (of a lower
    ``generation``) is refused from now on, and the connections holding one are closed."""

    type: Literal["tokens_revoked"] = "tokens_revoked"
    generation: int = Field(ge=1)


# --- conversations ----------------------------------------------------------------------------


class ConversationStarted(Event):
    type: Literal["conversation_started"] = "conversation_started"
    conversation_id: str
    title: str


class ConversationRenamed(Event):
    type: Literal["conversation_renamed"] = "conversation_renamed"
    conversation_id: str
    title: str


class MessageSubmitted(Event):
    """A user message, following the end of the conversation's active path."""

    type: Literal["message_submitted"] = "message_submitted"
    conversation_id: str
    message_id: str
    client_message_id: str
    text: str


class MessageEdited(Event):
    """A new version of the user message ``edit_of``: a sibling of it (the same ``parent_id``,
    ``None`` at the start of the conversation) that starts a new branch and becomes the end of
    the active path; it is answered like any message. The earlier branch is kept."""

    type: Literal["message_edited"] = "message_edited"
    conversation_id: str
    message_id: str
    client_message_id: str
    text: str
    edit_of: str
    parent_id: str | None


class BranchSelected(Event):
    """The conversation's active path now runs through ``message_id`` and ends at
    ``leaf_id`` (below ``message_id``, each step follows the child last on the path)."""

    type: Literal["branch_selected"] = "branch_selected"
    conversation_id: str
    message_id: str
    leaf_id: str


class ConversationDeleted(Event):
    """The conversation was deleted: its ``erased`` events are gone from the log, and this
    content-free tombstone is what remains of it."""

    type: Literal["conversation_deleted"] = "conversation_deleted"
    conversation_id: str
    erased: int = Field(ge=0)


class SessionDeleted(Event):
    """The session was deleted with its whole log. It is the last event a live client of the
    session receives; it is not kept (nothing of the session is)."""

    type: Literal["session_deleted"] = "session_deleted"


# --- replies ----------------------------------------------------------------------------------


class ReplyRequested(Event):
    """Regenerate: a new answer to the user message ``in_reply_to``, which already has one or
    more. The earlier answers stay (as other branches); this one follows like any reply."""

    type: Literal["reply_requested"] = "reply_requested"
    conversation_id: str
    in_reply_to: str
    # The client message id of ``in_reply_to`` (the turn being answered is named by both).
    client_message_id: str


class ReplyStarted(Event):
    """A worker began answering ``in_reply_to``; ``attempt`` counts takeovers from 1."""

    type: Literal["reply_started"] = "reply_started"
    conversation_id: str
    reply_id: str
    in_reply_to: str
    model: str
    attempt: int = Field(default=1, ge=1)


class ReplyDelta(Event):
    type: Literal["reply_delta"] = "reply_delta"
    conversation_id: str
    reply_id: str
    text: str


class ReplyModelSwitched(Event):
    """The model changed mid-reply: the one before failed (before or during its answer) and
    ``to_model`` continues the same reply from here on, after the text already said."""

    type: Literal["reply_model_switched"] = "reply_model_switched"
    conversation_id: str
    reply_id: str
    from_model: str
    to_model: str
    reason: str


class ReplyCompleted(Event):
    type: Literal["reply_completed"] = "reply_completed"
    schema_version: ClassVar[int] = 2
    conversation_id: str
    reply_id: str
    in_reply_to: str
    model: str
    usage: Usage


class ReplyFailed(Event):
    """Terminal: no answer could be produced. ``reason`` is written for the user."""

    type: Literal["reply_failed"] = "reply_failed"
    conversation_id: str
    reply_id: str | None
    in_reply_to: str
    code: str
    reason: str
    partial_text: str = ""


class ReplyCancelRequested(Event):
    type: Literal["reply_cancel_requested"] = "reply_cancel_requested"
    conversation_id: str
    in_reply_to: str
    reply_id: str | None


class ReplyCancelled(Event):
    """Terminal: the user stopped the reply; what was said so far is kept."""

    type: Literal["reply_cancelled"] = "reply_cancelled"
    conversation_id: str
    reply_id: str | None
    in_reply_to: str
    partial_text: str = ""


class ReplyAbandoned(Event):
    """Not terminal: an attempt was cut off (its worker died); another attempt follows."""

    type: Literal["reply_abandoned"] = "reply_abandoned"
    conversation_id: str
    reply_id: str
    in_reply_to: str
    reason: str


AnyEvent: TypeAlias = Annotated[
    SessionOpened
    | SessionRestored
    | ProfileUpdated
    | ConversationStarted
    | ConversationRenamed
    | MessageSubmitted
    | MessageEdited
    | BranchSelected
    | ConversationDeleted
    | SessionDeleted
    | ReplyRequested
    | ReplyStarted
    | ReplyDelta
    | ReplyModelSwitched
    | ReplyCompleted
    | ReplyFailed
    | ReplyCancelRequested
    | ReplyCancelled
    | ReplyAbandoned
    | TokensRevoked,
    Field(discriminator="type"),
]

TERMINAL_REPLY_EVENTS: tuple[type[Event], ...] = (ReplyCompleted, ReplyFailed, ReplyCancelled)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        SessionOpened,
        SessionRestored,
        ProfileUpdated,
        ConversationStarted,
        ConversationRenamed,
        MessageSubmitted,
        MessageEdited,
        BranchSelected,
        ConversationDeleted,
        SessionDeleted,
        ReplyRequested,
        ReplyStarted,
        ReplyDelta,
        ReplyModelSwitched,
        ReplyCompleted,
        ReplyFailed,
        ReplyCancelRequested,
        ReplyCancelled,
        ReplyAbandoned,
        TokensRevoked,
    )
}

EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def event_type(event: Event) -> str:
    tag = getattr(event, "type", None)
    if not isinstance(tag, str):
        raise TypeError(f"{type(event).__name__} has no type tag")
    return tag


# --- upcasting --------------------------------------------------------------------------------

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_tag: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register a function that turns a record of ``from_version`` into ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        key = (type_tag, from_version)
        if key in _UPCASTERS:
            raise ValueError(f"an upcaster for {key} is already registered")
        _UPCASTERS[key] = fn
        return fn

    return register


def upcast(type_tag: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring the payload of a stored event up to the current schema version of its type."""
    cls = EVENT_TYPES.get(type_tag)
    if cls is None:
        raise ValueError(f"unknown event type {type_tag!r}")
    current = cls.schema_version
    if version > current:
        raise ValueError(f"{type_tag} v{version} is newer than this code (v{current})")
    while version < current:
        step = _UPCASTERS.get((type_tag, version))
        if step is None:
            raise ValueError(f"no upcaster for {type_tag} v{version}")
        data = step(dict(data))
        version += 1
    return data


@upcaster("reply_completed", 1)
def _reply_completed_v1(data: dict[str, Any]) -> dict[str, Any]:
    # v1 recorded a single ``tokens`` count (the completion's) and no ``in_reply_to``/``model``.
    tokens = int(data.pop("tokens", 0))
    data.setdefault("in_reply_to", "")
    data.setdefault("model", "unknown")
    data["usage"] = {"prompt_tokens": 0, "completion_tokens": tokens, "cost_usd": None}
    return data


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event as stored: its position in the session's log, and the event."""

    position: str
    event: Event
