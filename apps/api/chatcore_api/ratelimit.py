"""The API's limits, on the :class:`~chatcore.ports.RateLimits` port (GCRA).

What is limited, under which key, and where it is kept (``limit_settings`` has the settings):

* ``sessions:<client>``: ``POST /api/sessions`` per client address (shared);
* ``messages:<client>``: ``send`` per client address, over all its sessions (shared);
* ``messages:session:<id>``: ``send`` per session (shared);
* ``tokens:<client>``, ``tokens:total``: model tokens, checked before a ``send`` and charged by
  the worker when the reply ends (shared);
* ``conversations:session:<id>``: ``start_conversation`` per session (shared);
* ``frames:<connection>``: every client frame of one connection (this process: exact, since a
  connection lives in one process).

*Shared* is the deployment's store (Redis in Redis mode), so N API processes enforce the limit
one would. ``<client>`` is :class:`~chatcore_api.client_address.ClientKeys`' key of the address,
never the address itself. A refusal says when to retry (``retry_after``, seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatcore.gcra import Rate, Step
from chatcore.ports import Charge, RateLimits
from chatcore.protocol import ClientFrame, Edit, ErrorCode, Regenerate, Send, StartConversation
from chatcore_adapters.memory import MemoryRateLimits
from chatcore_api.limit_settings import LimitSettings

TOTAL_BUDGET = "tokens:total"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why something was not let through, and when to try again."""

    code: ErrorCode  # rate_limited or budget_exceeded
    message: str
    retry_after: float  # seconds, rounded up to a tenth
    what: str  # the metric's label: session, message, budget, conversation, frame


def _refusal(code: ErrorCode, message: str, wait: float, what: str) -> Refusal:
    return Refusal(code, message, max(0.1, math.ceil(wait * 10) / 10), what)


class ApiLimits:
    def __init__(
        self, settings: LimitSettings, *, shared: RateLimits, local: MemoryRateLimits
    ) -> None:
        s = settings
        self._shared = shared
        self._local = local
        self.settings = settings
        self.sessions = Rate.per_minute(s.sessions_per_minute, max(1, s.sessions_per_minute // 4))
        self.session_messages = Rate.per_minute(s.messages_per_minute, s.messages_burst)
        self.client_messages = Rate.per_minute(s.ip_messages_per_minute, s.ip_messages_burst)
        self.conversations = Rate.per_minute(s.conversations_per_minute, s.conversations_burst)
        self.frames = Rate.per_minute(s.frames_per_minute, s.frames_burst)
        self.client_tokens = (
            Rate.per_minute(s.ip_tokens_per_minute) if s.ip_tokens_per_minute else None
        )
        self.total_tokens = (
            Rate.per_minute(s.total_tokens_per_minute) if s.total_tokens_per_minute else None
        )

    async def new_session(self, client: str) -> Refusal | None:
        wait = await self._shared.acquire(f"sessions:{client}", self.sessions)
        if wait:
            return _refusal(
                ErrorCode.RATE_LIMITED, "too many new sessions from this address", wait, "session"
            )
        return None

    def frame(self, connection: str) -> Refusal | None:
        wait = self._local.acquire_now(f"frames:{connection}", self.frames)
        if wait:
            per_minute = self.settings.frames_per_minute
            return _refusal(
                ErrorCode.RATE_LIMITED,
                f"too many frames on this connection; at most {per_minute} a minute",
                wait,
                "frame",
            )
        return None

    def forget_connection(self, connection: str) -> None:
        self._local.forget(f"frames:{connection}")

    async def message(self, client: str, session_id: str) -> Refusal | None:
        """A ``send`` (or an ``edit``, a ``regenerate``): refused while a token budget is
        spent, else counted against the session's and the address's rates, all in one
        ``admit`` (one round trip; on one Redis server, a refusal counts nothing)."""
        s = self.settings
        steps: list[tuple[Step, ErrorCode, str, str]] = []
        if self.client_tokens is not None:
            budget = Step(f"tokens:{client}", self.client_tokens, count=False)
            steps.append(
                (
                    budget,
                    ErrorCode.BUDGET_EXCEEDED,
                    "the model budget of this address is spent for now",
                    "budget",
                )
            )
        if self.total_tokens is not None:
            total = Step(TOTAL_BUDGET, self.total_tokens, count=False)
            steps.append(
                (
                    total,
                    ErrorCode.BUDGET_EXCEEDED,
                    "the server's model budget is spent for now",
                    "budget",
                )
            )
        steps.append(
            (
                Step(f"messages:session:{session_id}", self.session_messages),
                ErrorCode.RATE_LIMITED,
                f"too many messages; at most {s.messages_per_minute} a minute",
                "message",
            )
        )
        steps.append(
            (
                Step(f"messages:{client}", self.client_messages),
                ErrorCode.RATE_LIMITED,
                f"too many messages from this address; at most {s.ip_messages_per_minute} a minute",
                "message",
            )
        )
        refused = await self._shared.admit([step for step, _, _, _ in steps])
        if refused is None:
            return None
        _, code, message, what = steps[refused.index]
        return _refusal(code, message, refused.retry_after, what)

    def charges(self, client: str) -> tuple[Charge, ...]:
        """The budgets a message from ``client`` charges its reply's tokens to."""
        found = []
        if self.client_tokens is not None:
            found.append(self._charge(f"tokens:{client}", self.client_tokens))
        if self.total_tokens is not None:
            found.append(self._charge(TOTAL_BUDGET, self.total_tokens))
        return tuple(found)

    @staticmethod
    def _charge(key: str, rate: Rate) -> Charge:
        return Charge(key=key, tokens_per_minute=rate.limit, burst=rate.burst)

    async def conversation(self, session_id: str) -> Refusal | None:
        wait = await self._shared.acquire(f"conversations:session:{session_id}", self.conversations)
        if wait:
            per_minute = self.settings.conversations_per_minute
            return _refusal(
                ErrorCode.RATE_LIMITED,
                f"too many new conversations; at most {per_minute} a minute",
                wait,
                "conversation",
            )
        return None


class FrameGuard:
    """The limits one connection's frames go through before they are carried out."""

    # Slots: one of these per open WebSocket (figure 4 counts the bytes per connection).
    __slots__ = (
        "client",
        "connection",
        "limits",
        "session_id",
    )

    def __init__(self, limits: ApiLimits, *, connection: str, client: str, session_id: str) -> None:
        self.limits = limits
        self.connection = connection
        self.client = client
        self.session_id = session_id

    async def admit(self, frame: ClientFrame) -> Refusal | None:
        refusal = self.limits.frame(self.connection)
        # A new answer costs what a message does: a send, an edit, a regenerate.
        if refusal is None and isinstance(frame, Send | Edit | Regenerate):
            refusal = await self.limits.message(self.client, self.session_id)
        elif refusal is None and isinstance(frame, StartConversation):
            refusal = await self.limits.conversation(self.session_id)
        return refusal

    @property
    def charges(self) -> tuple[Charge, ...]:
        return self.limits.charges(self.client)

    def close(self) -> None:
        self.limits.forget_connection(self.connection)
