"""Errors of the core: domain errors (a command refused) and port errors (infrastructure).

Every error carries a stable machine-readable ``code``; the message is safe to show a user.
Adapters translate their drivers' exceptions into the port errors below, so nothing above a
port ever sees a ``redis`` or ``httpx`` exception.
"""

from __future__ import annotations


class ChatcoreError(Exception):
    """Base of every error chatcore raises on purpose."""

    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- domain errors: a command was refused; nothing was recorded -------------------------------


class DomainError(ChatcoreError):
    code = "domain_error"


class InvalidIdentifier(DomainError):
    code = "invalid_id"

    def __init__(self, kind: str, value: str) -> None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        super().__init__(f"invalid {kind}: {shown!r}")
        self.kind = kind


class SessionNotFound(DomainError):
    code = "session_not_found"

    def __init__(self, session_id: str) -> None:
        super().__init__("no such session")
        self.session_id = session_id


class EmptyMessage(DomainError):
    code = "empty_message"

    def __init__(self) -> None:
        super().__init__("the message is empty")


class MessageTooLong(DomainError):
    code = "message_too_long"

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"the message has {length} characters; the limit is {limit}")
        self.length = length
        self.limit = limit


class UnknownConversation(DomainError):
    code = "unknown_conversation"

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"no conversation {conversation_id!r} in this session")
        self.conversation_id = conversation_id


class ConversationExists(DomainError):
    code = "conversation_exists"

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id!r} already exists")


class TooManyConversations(DomainError):
    code = "too_many_conversations"

    def __init__(self, limit: int) -> None:
        super().__init__(f"a session holds at most {limit} conversations")


class ReplyInProgress(DomainError):
    """A conversation answers one message at a time; send the next once this one is answered."""

    code = "reply_in_progress"

    def __init__(self, conversation_id: str) -> None:
        super().__init__("the assistant is still answering the previous message")
        self.conversation_id = conversation_id


class NothingToCancel(DomainError):
    code = "nothing_to_cancel"

    def __init__(self, conversation_id: str) -> None:
        super().__init__("no reply is in progress in this conversation")
        self.conversation_id = conversation_id


class InvalidProfile(DomainError):
    code = "invalid_profile"


class UnknownMessage(DomainError):
    """The message to edit, answer again or select is not one of the conversation's (or not
    of the kind the command needs: only a user message is edited or answered again)."""

    code = "unknown_message"

    def __init__(self, message_id: str, why: str = "") -> None:
        shown = message_id if len(message_id) <= 40 else message_id[:37] + "..."
        super().__init__(why or f"no message {shown!r} in this conversation")
        self.message_id = message_id


class SessionFull(DomainError):
    """The session's log is at its cap (``CommandLimits.max_events``): no new message, and no
    other command that would grow it, until a conversation is deleted."""

    code = "session_full"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this session is full (at most {limit} events): delete a conversation, or start "
            "a new session"
        )
        self.limit = limit


class StaleReply(DomainError):
    """A worker tried to write to a reply that is no longer the conversation's current one
    (another worker took over, or it was cancelled and closed)."""

    code = "stale_reply"

    def __init__(self, reply_id: str) -> None:
        super().__init__(f"reply {reply_id} is no longer in progress")
        self.reply_id = reply_id


class AlreadyAnswered(DomainError):
    code = "already_answered"

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message {message_id} already has its reply")
        self.message_id = message_id


# --- port errors ------------------------------------------------------------------------------


class PortError(ChatcoreError):
    code = "unavailable"


class ConcurrencyConflict(PortError):
    """An append's expected version was not the stream's last position (I3)."""

    code = "conflict"

    def __init__(self, session_id: str, expected: str | None, actual: str | None) -> None:
        super().__init__(
            f"session {session_id}: expected version {expected}, stream is at {actual}"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


class StoreUnavailable(PortError):
    """The storage behind a port could not be reached or answered with an error."""

    code = "store_unavailable"


class CorruptRecord(PortError):
    code = "corrupt_record"


class LLMError(PortError):
    """A model call failed. ``kind`` says how; the message is safe for a user to read."""

    code = "llm_error"
    KINDS = frozenset(
        {"timeout", "rate_limited", "auth", "unavailable", "bad_request", "cancelled", "internal"}
    )

    def __init__(self, kind: str, message: str, *, retryable: bool | None = None) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown LLM error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.retryable = (
            retryable
            if retryable is not None
            else kind in {"timeout", "rate_limited", "unavailable"}
        )
