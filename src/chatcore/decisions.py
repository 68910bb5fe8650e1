"""Pure decisions: ``decide(view, command) -> events`` or a :class:`DomainError`.

Nothing here reads a clock or makes an id: the caller passes ``now`` and fresh ids, so every
decision is a plain function of its arguments (and the hypothesis tests can drive it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Literal, TypeAlias

from chatcore.errors import (
    AlreadyAnswered,
    ConversationExists,
    EmptyMessage,
    InvalidProfile,
    MessageTooLong,
    NothingToCancel,
    ReplyInProgress,
    SessionFull,
    SessionNotFound,
    StaleReply,
    TooManyConversations,
    UnknownConversation,
    UnknownMessage,
)
from chatcore.events import (
    BranchSelected,
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    Event,
    MessageEdited,
    MessageSubmitted,
    ProfileUpdated,
    ReplyAbandoned,
    ReplyCancelled,
    ReplyCancelRequested,
    ReplyCompleted,
    ReplyDelta,
    ReplyFailed,
    ReplyModelSwitched,
    ReplyRequested,
    ReplyStarted,
    SessionOpened,
    SessionRestored,
    TokensRevoked,
    Usage,
)
from chatcore.ids import validate_plain_id
from chatcore.view import Conversation, MessageRef, PendingTurn, ReplyDraft, SessionView

DEFAULT_TITLE = "New chat"


@dataclass(frozen=True, slots=True)
class CommandLimits:
    """Bounds every command is checked against.

    ``max_events`` caps a session's log. A command that would start a new turn (a message, an
    edit, a regeneration) or otherwise grow the log is refused with ``session_full`` once fewer
    than ``reply_reserve`` events are left below the cap: that room is kept for the replies in
    progress. A reply's own events stop at the cap itself, and the reply then ends with
    ``reply_failed`` (``session_full``). A Stop, a reply's end and a deletion are always
    recorded, so the log may pass the cap by at most two events per reply in progress."""

    max_message_chars: int = 8000
    max_conversations: int = 200
    max_title_chars: int = 120
    max_name_chars: int = 64
    max_language_chars: int = 32
    max_events: int = 100_000
    reply_reserve: int = 10_000

    def __post_init__(self) -> None:
        if not 0 <= self.reply_reserve < self.max_events:
            raise ValueError("reply_reserve must be at least 0 and less than max_events")


def _require_open(view: SessionView) -> None:
    if not view.opened:
        raise SessionNotFound(view.session_id or "")


def has_room(view: SessionView, count: int, limits: CommandLimits) -> bool:
    """True when a command may add ``count`` events (the reply reserve stays free)."""
    return view.event_count + count <= limits.max_events - limits.reply_reserve


def _require_room(view: SessionView, events: list[Event], limits: CommandLimits) -> list[Event]:
    if events and not has_room(view, len(events), limits):
        raise SessionFull(limits.max_events)
    return events


def _require_reply_room(
    view: SessionView, events: list[Event], limits: CommandLimits
) -> list[Event]:
    """A reply's own (non-terminal) events may use the reserve, up to the cap itself."""
    if view.event_count + len(events) > limits.max_events:
        raise SessionFull(limits.max_events)
    return events


def _clean_title(title: str, limits: CommandLimits) -> str:
    title = " ".join(title.split())
    if len(title) > limits.max_title_chars:
        title = title[: limits.max_title_chars - 1].rstrip() + "…"
    return title or DEFAULT_TITLE


def open_session(
    session_id: str, conversation_id: str, now: datetime, *, title: str = DEFAULT_TITLE
) -> list[Event]:
    return [
        SessionOpened(at=now, session_id=session_id),
        ConversationStarted(at=now, conversation_id=conversation_id, title=title),
    ]


def restore_session(
    view: SessionView,
    now: datetime,
    last_seen: str | None,
    *,
    min_interval: timedelta = timedelta(0),
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    """Record that a client came back, at most once per ``min_interval``: a reconnect storm
    (flaky networks, many tabs, a server restart) must not grow the log without bound. A full
    session records nothing (the client is welcome all the same)."""
    _require_open(view)
    if view.last_restored_at is not None and now - view.last_restored_at < min_interval:
        return []
    if not has_room(view, 1, limits):
        return []
    return [SessionRestored(at=now, last_seen=last_seen)]


def revoke_tokens(view: SessionView, now: datetime) -> list[Event]:
    """Log the session out everywhere: tokens issued before are refused from now on."""
    _require_open(view)
    return [TokensRevoked(at=now, generation=view.token_generation + 1)]


class Keep(Enum):
    """The value of a profile field an update leaves as it is (it was not named)."""

    KEEP = "keep"


KEEP = Keep.KEEP
ProfileChange: TypeAlias = str | Literal[Keep.KEEP] | None


def _profile_value(given: ProfileChange, current: str | None, what: str, limit: int) -> str | None:
    if given is KEEP:
        return current
    if given is None:
        return None
    value = " ".join(given.split())
    if not value:
        raise InvalidProfile(f"the {what} is blank; send null to clear it")
    if len(value) > limit:
        raise InvalidProfile(f"the {what} may have at most {limit} characters")
    return value


def update_profile(
    view: SessionView,
    now: datetime,
    *,
    display_name: ProfileChange = KEEP,
    language: ProfileChange = KEEP,
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    """A partial update: a field given as :data:`KEEP` (the default) keeps its value, ``None``
    clears it, a string (spaces collapsed) sets it; a blank string is refused. The event
    carries the whole profile after the update, so it folds (and old events fold) the same
    way. Nothing is recorded when nothing changes."""
    _require_open(view)
    current = view.profile
    name = _profile_value(display_name, current.display_name, "name", limits.max_name_chars)
    lang = _profile_value(language, current.language, "language", limits.max_language_chars)
    if (name, lang) == (current.display_name, current.language):
        return []
    return _require_room(view, [ProfileUpdated(at=now, display_name=name, language=lang)], limits)


def start_conversation(
    view: SessionView,
    now: datetime,
    conversation_id: str,
    title: str | None = None,
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    _require_open(view)
    validate_plain_id("conversation id", conversation_id)
    if conversation_id in view.conversations:
        raise ConversationExists(conversation_id)
    if len(view.conversations) >= limits.max_conversations:
        raise TooManyConversations(limits.max_conversations)
    started = ConversationStarted(
        at=now, conversation_id=conversation_id, title=_clean_title(title or "", limits)
    )
    return _require_room(view, [started], limits)


def rename_conversation(
    view: SessionView,
    now: datetime,
    conversation_id: str,
    title: str,
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    _require_open(view)
    if conversation_id not in view.conversations:
        raise UnknownConversation(conversation_id)
    renamed = ConversationRenamed(
        at=now, conversation_id=conversation_id, title=_clean_title(title, limits)
    )
    return _require_room(view, [renamed], limits)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The client message id was already recorded: nothing new to append (I4)."""

    ref: MessageRef


def submit_message(
    view: SessionView,
    now: datetime,
    *,
    conversation_id: str,
    client_message_id: str,
    message_id: str,
    text: str,
    limits: CommandLimits = CommandLimits(),
) -> list[Event] | Duplicate:
    _require_open(view)
    validate_plain_id("client message id", client_message_id)
    known = view.client_messages.get(client_message_id)
    if known is not None:
        return Duplicate(known)
    conv = view.conversations.get(conversation_id)
    if conv is None:
        raise UnknownConversation(conversation_id)
    if not text.strip():
        raise EmptyMessage()
    if len(text) > limits.max_message_chars:
        raise MessageTooLong(len(text), limits.max_message_chars)
    if conv.pending is not None:
        raise ReplyInProgress(conversation_id)
    events: list[Event] = [
        MessageSubmitted(
            at=now,
            conversation_id=conversation_id,
            message_id=message_id,
            client_message_id=client_message_id,
            text=text,
        )
    ]
    if not conv.titled and not conv.messages and not conv.branches:
        events.append(
            ConversationRenamed(
                at=now, conversation_id=conversation_id, title=_clean_title(text, limits)
            )
        )
    return _require_room(view, events, limits)


def _conversation(view: SessionView, conversation_id: str) -> Conversation:
    conv = view.conversations.get(conversation_id)
    if conv is None:
        raise UnknownConversation(conversation_id)
    return conv


def _check_text(text: str, limits: CommandLimits) -> None:
    if not text.strip():
        raise EmptyMessage()
    if len(text) > limits.max_message_chars:
        raise MessageTooLong(len(text), limits.max_message_chars)


def edit_message(
    view: SessionView,
    now: datetime,
    *,
    conversation_id: str,
    edit_of: str,
    client_message_id: str,
    message_id: str,
    text: str,
    limits: CommandLimits = CommandLimits(),
) -> list[Event] | Duplicate:
    """A new version of the user message ``edit_of``: a sibling of it, the start of a new
    branch that becomes the active path and is answered like any message. Idempotent per
    ``client_message_id``, like a message (I4)."""
    _require_open(view)
    validate_plain_id("client message id", client_message_id)
    known = view.client_messages.get(client_message_id)
    if known is not None:
        return Duplicate(known)
    conv = _conversation(view, conversation_id)
    original = conv.find(edit_of)
    if original is None:
        raise UnknownMessage(edit_of)
    if original.role != "user":
        raise UnknownMessage(edit_of, "only a message of the user can be edited")
    _check_text(text, limits)
    if conv.pending is not None:
        raise ReplyInProgress(conversation_id)
    edited = MessageEdited(
        at=now,
        conversation_id=conversation_id,
        message_id=message_id,
        client_message_id=client_message_id,
        text=text,
        edit_of=edit_of,
        parent_id=original.parent_id,
    )
    return _require_room(view, [edited], limits)


def regenerate_reply(
    view: SessionView,
    now: datetime,
    *,
    conversation_id: str,
    message_id: str,
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    """Answer the user message ``message_id`` again. Its earlier answers stay, as other
    versions; the new one becomes the active path's end once it is written."""
    _require_open(view)
    conv = _conversation(view, conversation_id)
    question = conv.find(message_id)
    if question is None:
        raise UnknownMessage(message_id)
    if question.role != "user" or question.client_message_id is None:
        raise UnknownMessage(message_id, "only a message of the user can be answered again")
    if conv.pending is not None:
        raise ReplyInProgress(conversation_id)
    requested = ReplyRequested(
        at=now,
        conversation_id=conversation_id,
        in_reply_to=message_id,
        client_message_id=question.client_message_id,
    )
    return _require_room(view, [requested], limits)


def select_branch(
    view: SessionView,
    now: datetime,
    *,
    conversation_id: str,
    message_id: str,
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    """Make a version of a message (a user message or an answer) part of the active path:
    the path runs through it and on down the branch last seen below it. Nothing is recorded
    when that is already the active path."""
    _require_open(view)
    conv = _conversation(view, conversation_id)
    if conv.find(message_id) is None:
        raise UnknownMessage(message_id)
    if conv.pending is not None:
        raise ReplyInProgress(conversation_id)
    leaf = conv.descend(message_id)
    if leaf == conv.leaf_id:
        return []
    selected = BranchSelected(
        at=now, conversation_id=conversation_id, message_id=message_id, leaf_id=leaf
    )
    return _require_room(view, [selected], limits)


def delete_conversation(
    view: SessionView, now: datetime, *, conversation_id: str, erased: int
) -> list[Event]:
    """The tombstone of a conversation whose ``erased`` events the store removes along with
    appending it (a reply in progress there stops at its next write). Always allowed, also
    in a full session: it frees room."""
    _require_open(view)
    _conversation(view, conversation_id)
    return [ConversationDeleted(at=now, conversation_id=conversation_id, erased=erased)]


def _turn_for(view: SessionView, message_id: str) -> tuple[str, PendingTurn]:
    found = view.find_turn(message_id)
    if found is None:
        raise AlreadyAnswered(message_id)
    conv, turn = found
    return conv.conversation_id, turn


def start_reply(
    view: SessionView,
    now: datetime,
    *,
    message_id: str,
    reply_id: str,
    model: str,
    abandon_reason: str = "the worker generating this reply stopped; retrying",
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    """Begin answering ``message_id``. A reply left in progress by an earlier attempt (its
    worker died) is marked abandoned first; the new attempt starts from scratch."""
    _require_open(view)
    conversation_id, turn = _turn_for(view, message_id)
    events: list[Event] = []
    if turn.cancel_requested:
        partial = turn.reply.text if turn.reply is not None else ""
        return [
            ReplyCancelled(
                at=now,
                conversation_id=conversation_id,
                reply_id=turn.reply.reply_id if turn.reply is not None else None,
                in_reply_to=message_id,
                partial_text=partial,
            )
        ]
    if turn.reply is not None:
        events.append(
            ReplyAbandoned(
                at=now,
                conversation_id=conversation_id,
                reply_id=turn.reply.reply_id,
                in_reply_to=message_id,
                reason=abandon_reason,
            )
        )
    events.append(
        ReplyStarted(
            at=now,
            conversation_id=conversation_id,
            reply_id=reply_id,
            in_reply_to=message_id,
            model=model,
            attempt=turn.attempts + 1,
        )
    )
    return _require_reply_room(view, events, limits)


def current_draft(view: SessionView, message_id: str, reply_id: str) -> tuple[str, ReplyDraft]:
    """The reply in progress, if it is still ``reply_id``; else :class:`StaleReply`."""
    found = view.find_turn(message_id)
    if found is None:
        raise StaleReply(reply_id)
    conv, turn = found
    if turn.reply is None or turn.reply.reply_id != reply_id:
        raise StaleReply(reply_id)
    return conv.conversation_id, turn.reply


def append_text(
    view: SessionView,
    now: datetime,
    *,
    message_id: str,
    reply_id: str,
    text: str,
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    conversation_id, _ = current_draft(view, message_id, reply_id)
    if not text:
        return []
    delta = ReplyDelta(at=now, conversation_id=conversation_id, reply_id=reply_id, text=text)
    return _require_reply_room(view, [delta], limits)


def switch_model(
    view: SessionView,
    now: datetime,
    *,
    message_id: str,
    reply_id: str,
    to_model: str,
    reason: str,
    limits: CommandLimits = CommandLimits(),
) -> list[Event]:
    conversation_id, draft = current_draft(view, message_id, reply_id)
    switched = ReplyModelSwitched(
        at=now,
        conversation_id=conversation_id,
        reply_id=reply_id,
        from_model=draft.model,
        to_model=to_model,
        reason=reason,
    )
    return _require_reply_room(view, [switched], limits)


def complete_reply(
    view: SessionView, now: datetime, *, message_id: str, reply_id: str, usage: Usage
) -> list[Event]:
    conversation_id, draft = current_draft(view, message_id, reply_id)
    return [
        ReplyCompleted(
            at=now,
            conversation_id=conversation_id,
            reply_id=reply_id,
            in_reply_to=message_id,
            model=draft.model,
            usage=usage,
        )
    ]


def fail_reply(
    view: SessionView,
    now: datetime,
    *,
    message_id: str,
    reply_id: str | None,
    code: str,
    reason: str,
) -> list[Event]:
    """Close the turn as failed. With ``reply_id=None`` it closes whatever attempt is open
    (used when giving up on a message, e.g. after too many deliveries)."""
    conversation_id, turn = _turn_for(view, message_id)
    draft = turn.reply
    if reply_id is not None and (draft is None or draft.reply_id != reply_id):
        raise StaleReply(reply_id)
    return [
        ReplyFailed(
            at=now,
            conversation_id=conversation_id,
            reply_id=draft.reply_id if draft is not None else None,
            in_reply_to=message_id,
            code=code,
            reason=reason,
            partial_text=draft.text if draft is not None else "",
        )
    ]


def request_cancel(view: SessionView, now: datetime, *, conversation_id: str) -> list[Event]:
    """The user's Stop. Before any reply started it closes the turn at once; otherwise it
    records the request, which the generating worker turns into :class:`ReplyCancelled`."""
    _require_open(view)
    conv = view.conversations.get(conversation_id)
    if conv is None:
        raise UnknownConversation(conversation_id)
    turn = conv.pending
    if turn is None:
        raise NothingToCancel(conversation_id)
    if turn.reply is None:
        return [
            ReplyCancelled(
                at=now, conversation_id=conversation_id, reply_id=None, in_reply_to=turn.message_id
            )
        ]
    if turn.cancel_requested:
        return []
    return [
        ReplyCancelRequested(
            at=now,
            conversation_id=conversation_id,
            in_reply_to=turn.message_id,
            reply_id=turn.reply.reply_id,
        )
    ]


def cancel_reply(
    view: SessionView, now: datetime, *, message_id: str, reply_id: str
) -> list[Event]:
    """The worker's answer to a cancel request: close the turn, keeping the partial text."""
    conversation_id, draft = current_draft(view, message_id, reply_id)
    return [
        ReplyCancelled(
            at=now,
            conversation_id=conversation_id,
            reply_id=reply_id,
            in_reply_to=message_id,
            partial_text=draft.text,
        )
    ]
