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
    type: Literal["message_submitted"] = "message_submitted"
    conversation_id: str
    message_id: str
    client_message_id: str
    text: str


# --- replies ----------------------------------------------------------------------------------


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
