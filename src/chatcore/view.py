"""A session's state, as the fold of its events: ``view = fold(events)``.

``SessionView`` is what every reader needs: the conversations with their messages in order,
the turn being answered in each, the user's profile, and ``version``, the position of the last
event folded in. It is built only by :func:`apply`; the ``session:`` cache stores it together
with that version, so reading a session is "cached view + the events after its version".

A conversation is a tree of messages: editing a user message adds a sibling of it (a new
branch), regenerating an answer adds a sibling of that answer. Nothing is overwritten. The
conversation has one *active path* at a time, from its first message to a leaf:
``Conversation.messages`` is that path (what a reader before branches read, and what a prompt
is built from), ``Conversation.branches`` every other message. Each message names its
``parent_id``, so the tree is the fold of the events, not a document stored anywhere.

``apply`` mutates the view it is given (folding 10,000 events must not copy 10,000 times);
:func:`fold` starts from a copy, so callers that keep a view are never surprised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from chatcore.events import (
    BranchSelected,
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    Event,
    MessageEdited,
    MessageSubmitted,
    ProfileUpdated,
    Recorded,
    ReplyAbandoned,
    ReplyCancelled,
    ReplyCancelRequested,
    ReplyCompleted,
    ReplyDelta,
    ReplyFailed,
    ReplyModelSwitched,
    ReplyRequested,
    ReplyStarted,
    SessionDeleted,
    SessionOpened,
    SessionRestored,
    TokensRevoked,
    Usage,
)
from chatcore.ids import parse_position

MessageStatus = Literal["complete", "failed", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class _Fixed(BaseModel):
    """A part of a view the fold replaces but never changes: copies of a view share it
    (:meth:`SessionView.copy_view`), so it is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(_Fixed):
    """A finished message of the history: the user's, or the assistant's final reply."""

    message_id: str
    role: Literal["user", "assistant"]
    text: str
    position: str
    at: datetime
    client_message_id: str | None = None
    in_reply_to: str | None = None
    status: MessageStatus = "complete"
    models: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    error_code: str | None = None
    error: str | None = None
    # The message this one follows in the conversation's tree (``None``: the first of a
    # branch that starts at the beginning). An answer's parent is the message it answers.
    parent_id: str | None = None


class ReplyDraft(_Model):
    """The reply being streamed right now."""

    reply_id: str
    in_reply_to: str
    attempt: int
    started_at: datetime
    position: str
    models: list[str]
    chunks: list[str] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def model(self) -> str:
        return self.models[-1]


class PendingTurn(_Model):
    """A user message accepted and not yet answered (no terminal reply event yet)."""

    message_id: str
    client_message_id: str
    reply: ReplyDraft | None = None
    cancel_requested: bool = False
    attempts: int = 0
    # A regenerated answer (``reply_requested``), not the message's first one.
    regenerated: bool = False
    # When this turn was asked for (the message, its edit, or the regeneration).
    since: datetime | None = None

    def copy_turn(self) -> PendingTurn:
        """An independent copy (what the fold changes in place: the turn's fields and its
        draft's lists), without a generic deep copy's cost."""
        draft = self.reply
        return self.model_copy(
            update={
                "reply": (
                    None
                    if draft is None
                    else draft.model_copy(
                        update={"chunks": list(draft.chunks), "models": list(draft.models)}
                    )
                )
            }
        )


# The key of the start of a conversation in ``Conversation.selected`` (ids are never empty).
START = ""


class Conversation(_Model):
    conversation_id: str
    title: str
    started_at: datetime
    titled: bool = False
    # The active path, oldest first: the messages a reader shows and a prompt is built from.
    messages: list[ChatMessage] = Field(default_factory=list)
    # Every other message of the conversation (other versions and what follows them), in the
    # order they were recorded.
    branches: list[ChatMessage] = Field(default_factory=list)
    # The last message of the active path (kept apart from ``messages`` so that a turns-only
    # copy, which has no history, still knows what a new message follows).
    leaf_id: str | None = None
    # For each message (``START`` for the beginning), its child last on the active path:
    # selecting a version follows these down to a leaf.
    selected: dict[str, str] = Field(default_factory=dict)
    pending: PendingTurn | None = None
    # Events of this conversation folded into the view: what its deletion takes off the
    # session's count (a view cached before a deletion counted exactly these).
    event_count: int = 0

    def find(self, message_id: str) -> ChatMessage | None:
        """The message ``message_id`` of this conversation, on the active path or not."""
        for msg in reversed(self.messages):
            if msg.message_id == message_id:
                return msg
        for msg in self.branches:
            if msg.message_id == message_id:
                return msg
        return None

    def siblings(self, message_id: str) -> list[ChatMessage]:
        """The versions of a message: every message with its parent, in recorded order (the
        message itself included; ``[]`` for an unknown id)."""
        msg = self.find(message_id)
        if msg is None:
            return []
        same = [m for m in (*self.messages, *self.branches) if m.parent_id == msg.parent_id]
        return sorted(same, key=lambda m: parse_position(m.position))

    def descend(self, message_id: str) -> str:
        """The leaf reached from ``message_id`` by following, at each step, the child last on
        the active path (the leaf a ``branch_selected`` of ``message_id`` makes active)."""
        known = {m.message_id for m in (*self.messages, *self.branches)}
        leaf, seen = message_id, {message_id}
        while (child := self.selected.get(leaf)) is not None and child in known:
            if child in seen:  # (never: parents come before children; a guard, not a rule)
                break
            seen.add(child)
            leaf = child
        return leaf


class Profile(_Fixed):
    display_name: str | None = None
    language: str | None = None


class MessageRef(_Fixed):
    """Where a client message id was recorded; the key of idempotent submission (I4)."""

    conversation_id: str
    message_id: str
    position: str


class SessionView(_Model):
    # 3: conversations are trees (branches, leaf_id, selected; parent_id on messages).
    SNAPSHOT_VERSION: ClassVar[int] = 3

    session_id: str | None = None
    opened_at: datetime | None = None
    profile: Profile = Field(default_factory=Profile)
    conversations: dict[str, Conversation] = Field(default_factory=dict)
    client_messages: dict[str, MessageRef] = Field(default_factory=dict)
    version: str | None = None
    event_count: int = 0
    restores: int = 0
    last_restored_at: datetime | None = None
    # Tokens of a lower generation are refused (a TokensRevoked raised it; 0: never revoked).
    token_generation: int = 0
    anomalies: int = 0
    _partial: bool = PrivateAttr(default=False)

    @property
    def opened(self) -> bool:
        return self.session_id is not None

    @property
    def partial(self) -> bool:
        """True for a :meth:`for_turns` copy: it lacks the history and is never cached."""
        return self._partial

    def for_turns(self) -> SessionView:
        """A copy without the finished history: each conversation keeps its pending turn but
        not its messages, and the index of client message ids is left out.

        The decisions on a turn read nothing else (a property test holds them to it), so a
        worker streaming a reply keeps this copy instead of the whole session: what a reply
        in progress holds stays the same size however long the session grows. Later events
        fold into it as into any view. It is marked :attr:`partial`, and the service refuses
        to cache it."""
        slim = SessionView(
            session_id=self.session_id,
            opened_at=self.opened_at,
            profile=self.profile.model_copy(),
            conversations={
                cid: Conversation(
                    conversation_id=conv.conversation_id,
                    title=conv.title,
                    started_at=conv.started_at,
                    titled=conv.titled,
                    leaf_id=conv.leaf_id,
                    pending=conv.pending.copy_turn() if conv.pending else None,
                    event_count=conv.event_count,
                )
                for cid, conv in self.conversations.items()
            },
            version=self.version,
            event_count=self.event_count,
            restores=self.restores,
            last_restored_at=self.last_restored_at,
            token_generation=self.token_generation,
            anomalies=self.anomalies,
        )
        slim._partial = True
        return slim

    def conversation(self, conversation_id: str) -> Conversation | None:
        return self.conversations.get(conversation_id)

    def find_turn(self, message_id: str) -> tuple[Conversation, PendingTurn] | None:
        for conv in self.conversations.values():
            if conv.pending is not None and conv.pending.message_id == message_id:
                return conv, conv.pending
        return None

    def is_answered(self, message_id: str) -> bool:
        """True once ``message_id`` has its terminal reply on its conversation's active path
        (a regenerated answer in progress: not yet)."""
        for conv in self.conversations.values():
            for msg in conv.messages:
                if msg.in_reply_to == message_id:
                    return True
        return False

    def pending_turns(self) -> list[tuple[Conversation, PendingTurn]]:
        return [(c, c.pending) for c in self.conversations.values() if c.pending is not None]

    def copy_view(self) -> SessionView:
        """An independent copy: folding into either leaves the other as it was.

        The fold never changes a :class:`ChatMessage`, :class:`MessageRef` or
        :class:`Profile` once made (it makes new ones), so the copy shares them and copies
        only what the fold changes in place: the containers, the conversations and their
        pending turns. A deep copy cost time in proportion to the whole history on every
        load of a session a process follows; this costs a list copy per conversation."""
        return self.model_copy(
            update={
                "conversations": {
                    cid: conv.model_copy(
                        update={
                            "messages": list(conv.messages),
                            "branches": list(conv.branches),
                            "selected": dict(conv.selected),
                            "pending": (conv.pending.copy_turn() if conv.pending else None),
                        }
                    )
                    for cid, conv in self.conversations.items()
                },
                "client_messages": dict(self.client_messages),
            }
        )


# --- the fold ---------------------------------------------------------------------------------

_Handler = Callable[[SessionView, Event, str], None]
_HANDLERS: dict[type[Event], _Handler] = {}


def _on(cls: type[Event]) -> Callable[[_Handler], _Handler]:
    def register(fn: _Handler) -> _Handler:
        _HANDLERS[cls] = fn
        return fn

    return register


def apply(view: SessionView, record: Recorded) -> SessionView:
    """Fold one recorded event into ``view`` (in place) and return it."""
    event = record.event
    handler = _HANDLERS[type(event)]
    handler(view, event, record.position)
    view.version = record.position
    view.event_count += 1
    conversation_id = getattr(event, "conversation_id", None)
    if conversation_id is not None and not isinstance(event, ConversationDeleted):
        conv = view.conversations.get(conversation_id)
        if conv is not None:
            conv.event_count += 1
    return view


def fold(records: Iterable[Recorded], initial: SessionView | None = None) -> SessionView:
    """``reduce(apply, records, initial)``, leaving ``initial`` untouched."""
    view = initial.copy_view() if initial is not None else SessionView()
    for record in records:
        apply(view, record)
    return view


def project(view: SessionView, records: Iterable[Recorded]) -> SessionView:
    """Fold ``records`` into ``view`` in place (the cache path: the view is a fresh copy)."""
    for record in records:
        apply(view, record)
    return view


def _turn(view: SessionView, conversation_id: str, in_reply_to: str) -> PendingTurn | None:
    conv = view.conversations.get(conversation_id)
    if conv is None or conv.pending is None or conv.pending.message_id != in_reply_to:
        view.anomalies += 1
        return None
    return conv.pending


def _draft(view: SessionView, conversation_id: str, reply_id: str) -> ReplyDraft | None:
    conv = view.conversations.get(conversation_id)
    if conv is None or conv.pending is None or conv.pending.reply is None:
        view.anomalies += 1
        return None
    if conv.pending.reply.reply_id != reply_id:
        view.anomalies += 1
        return None
    return conv.pending.reply


@_on(SessionOpened)
def _session_opened(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, SessionOpened)
    view.session_id = e.session_id
    view.opened_at = e.at


@_on(SessionRestored)
def _session_restored(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, SessionRestored)
    view.restores += 1
    view.last_restored_at = e.at


@_on(TokensRevoked)
def _tokens_revoked(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, TokensRevoked)
    view.token_generation = max(view.token_generation, e.generation)


@_on(ProfileUpdated)
def _profile_updated(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ProfileUpdated)
    view.profile = Profile(display_name=e.display_name, language=e.language)


@_on(ConversationStarted)
def _conversation_started(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ConversationStarted)
    if e.conversation_id in view.conversations:
        view.anomalies += 1
        return
    view.conversations[e.conversation_id] = Conversation(
        conversation_id=e.conversation_id, title=e.title, started_at=e.at
    )


@_on(ConversationRenamed)
def _conversation_renamed(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ConversationRenamed)
    conv = view.conversations.get(e.conversation_id)
    if conv is None:
        view.anomalies += 1
        return
    conv.title = e.title
    conv.titled = True


def _append_on_path(conv: Conversation, msg: ChatMessage) -> None:
    """``msg`` (whose parent is the active leaf) joins the end of the active path."""
    conv.messages.append(msg)
    conv.selected[msg.parent_id or START] = msg.message_id
    conv.leaf_id = msg.message_id


def _activate(view: SessionView, conv: Conversation, leaf_id: str | None) -> bool:
    """Make the path from the start to ``leaf_id`` the active one (``None``: an empty path,
    before a new first message). A turns-only view has no history to rearrange: it only
    remembers the leaf. False (an anomaly) when ``leaf_id`` or an ancestor is unknown."""
    if view.partial:
        conv.messages = []
        conv.leaf_id = leaf_id
        return True
    if leaf_id == conv.leaf_id:
        return True
    by_id = {m.message_id: m for m in (*conv.messages, *conv.branches)}
    path: list[ChatMessage] = []
    at = leaf_id
    while at is not None:
        msg = by_id.get(at)
        if msg is None or len(path) > len(by_id):
            view.anomalies += 1
            return False
        path.append(msg)
        at = msg.parent_id
    path.reverse()
    on_path = {m.message_id for m in path}
    rest = [m for m in by_id.values() if m.message_id not in on_path]
    rest.sort(key=lambda m: parse_position(m.position))
    conv.messages, conv.branches, conv.leaf_id = path, rest, leaf_id
    for msg in path:
        conv.selected[msg.parent_id or START] = msg.message_id
    return True


def _user_message(
    e: MessageSubmitted | MessageEdited, pos: str, parent_id: str | None
) -> ChatMessage:
    return ChatMessage(
        message_id=e.message_id,
        role="user",
        text=e.text,
        position=pos,
        at=e.at,
        client_message_id=e.client_message_id,
        parent_id=parent_id,
    )


@_on(MessageSubmitted)
def _message_submitted(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, MessageSubmitted)
    conv = view.conversations.get(e.conversation_id)
    if conv is None or e.client_message_id in view.client_messages:
        view.anomalies += 1
        return
    _append_on_path(conv, _user_message(e, pos, conv.leaf_id))
    conv.pending = PendingTurn(
        message_id=e.message_id, client_message_id=e.client_message_id, since=e.at
    )
    view.client_messages[e.client_message_id] = MessageRef(
        conversation_id=e.conversation_id, message_id=e.message_id, position=pos
    )


@_on(MessageEdited)
def _message_edited(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, MessageEdited)
    conv = view.conversations.get(e.conversation_id)
    if conv is None or e.client_message_id in view.client_messages or conv.pending is not None:
        view.anomalies += 1
        return
    if not view.partial and conv.find(e.edit_of) is None:
        view.anomalies += 1
        return
    if not _activate(view, conv, e.parent_id):
        return
    _append_on_path(conv, _user_message(e, pos, e.parent_id))
    conv.pending = PendingTurn(
        message_id=e.message_id, client_message_id=e.client_message_id, since=e.at
    )
    view.client_messages[e.client_message_id] = MessageRef(
        conversation_id=e.conversation_id, message_id=e.message_id, position=pos
    )


@_on(ReplyRequested)
def _reply_requested(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyRequested)
    conv = view.conversations.get(e.conversation_id)
    if conv is None or conv.pending is not None:
        view.anomalies += 1
        return
    if not _activate(view, conv, e.in_reply_to):
        return
    conv.pending = PendingTurn(
        message_id=e.in_reply_to,
        client_message_id=e.client_message_id,
        regenerated=True,
        since=e.at,
    )


@_on(BranchSelected)
def _branch_selected(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, BranchSelected)
    conv = view.conversations.get(e.conversation_id)
    if conv is None or conv.pending is not None:
        view.anomalies += 1
        return
    _activate(view, conv, e.leaf_id)


@_on(ConversationDeleted)
def _conversation_deleted(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ConversationDeleted)
    # A view folded from the log as it is now never saw the conversation (its events were
    # erased); one cached before the deletion holds what it had folded of it, and lets go of
    # exactly that here. Both end equal.
    conv = view.conversations.pop(e.conversation_id, None)
    if conv is not None:
        view.event_count -= conv.event_count
    view.client_messages = {
        key: ref
        for key, ref in view.client_messages.items()
        if ref.conversation_id != e.conversation_id
    }


@_on(SessionDeleted)
def _session_deleted(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, SessionDeleted)
    view.session_id = None
    view.conversations.clear()
    view.client_messages.clear()


@_on(ReplyStarted)
def _reply_started(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyStarted)
    turn = _turn(view, e.conversation_id, e.in_reply_to)
    if turn is None:
        return
    turn.reply = ReplyDraft(
        reply_id=e.reply_id,
        in_reply_to=e.in_reply_to,
        attempt=e.attempt,
        started_at=e.at,
        position=pos,
        models=[e.model],
    )
    turn.attempts += 1


@_on(ReplyDelta)
def _reply_delta(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyDelta)
    draft = _draft(view, e.conversation_id, e.reply_id)
    if draft is not None:
        draft.chunks.append(e.text)


@_on(ReplyModelSwitched)
def _reply_model_switched(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyModelSwitched)
    draft = _draft(view, e.conversation_id, e.reply_id)
    if draft is not None:
        draft.models.append(e.to_model)


@_on(ReplyAbandoned)
def _reply_abandoned(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyAbandoned)
    turn = _turn(view, e.conversation_id, e.in_reply_to)
    if turn is None:
        return
    if turn.reply is None or turn.reply.reply_id != e.reply_id:
        view.anomalies += 1
        return
    turn.reply = None


@_on(ReplyCancelRequested)
def _reply_cancel_requested(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyCancelRequested)
    turn = _turn(view, e.conversation_id, e.in_reply_to)
    if turn is not None:
        turn.cancel_requested = True


def _close_turn(
    view: SessionView,
    e: ReplyCompleted | ReplyFailed | ReplyCancelled,
    pos: str,
    status: MessageStatus,
    text: str | None,
) -> None:
    conv = view.conversations.get(e.conversation_id)
    turn = _turn(view, e.conversation_id, e.in_reply_to)
    if conv is None or turn is None:
        return
    draft = turn.reply
    if e.reply_id is not None and (draft is None or draft.reply_id != e.reply_id):
        view.anomalies += 1
        return
    body = text if text is not None else (draft.text if draft is not None else "")
    _append_on_path(
        conv,
        ChatMessage(
            message_id=e.reply_id or answer_id(e.in_reply_to, pos, regenerated=turn.regenerated),
            role="assistant",
            text=body,
            position=pos,
            at=e.at,
            in_reply_to=e.in_reply_to,
            status=status,
            models=list(draft.models) if draft is not None else [],
            usage=e.usage if isinstance(e, ReplyCompleted) else None,
            error_code=e.code if isinstance(e, ReplyFailed) else None,
            error=e.reason if isinstance(e, ReplyFailed) else None,
            parent_id=e.in_reply_to,
        ),
    )
    conv.pending = None


def answer_id(in_reply_to: str, position: str, *, regenerated: bool) -> str:
    """The id of an answer closed before any attempt of it started (its terminal event has no
    ``reply_id``): ``<message>.reply``, or ``<message>.reply.<position>`` for a regenerated
    one (a message may then have several)."""
    return f"{in_reply_to}.reply.{position}" if regenerated else f"{in_reply_to}.reply"


@_on(ReplyCompleted)
def _reply_completed(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyCompleted)
    _close_turn(view, e, pos, "complete", None)


@_on(ReplyFailed)
def _reply_failed(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyFailed)
    _close_turn(view, e, pos, "failed", e.partial_text)


@_on(ReplyCancelled)
def _reply_cancelled(view: SessionView, e: Event, pos: str) -> None:
    assert isinstance(e, ReplyCancelled)
    _close_turn(view, e, pos, "cancelled", e.partial_text)
