"""Small builders shared by tests: ids, events and a controllable clock."""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime, timedelta

from chatcore.events import (
    ConversationStarted,
    Event,
    MessageSubmitted,
    ReplyDelta,
    SessionOpened,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def session_id() -> str:
    return secrets.token_urlsafe(24)


class ManualClock:
    """A clock tests move by hand (``advance``); wall time and monotonic time move together."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self._now = start
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


class CountingIds:
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def session_id(self) -> str:
        return secrets.token_urlsafe(24)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._n):06d}"


def opening(sid: str, conversation_id: str = "c1") -> list[Event]:
    return [
        SessionOpened(at=EPOCH, session_id=sid),
        ConversationStarted(at=EPOCH, conversation_id=conversation_id, title="New chat"),
    ]


def message(n: int, conversation_id: str = "c1") -> MessageSubmitted:
    return MessageSubmitted(
        at=EPOCH,
        conversation_id=conversation_id,
        message_id=f"m{n}",
        client_message_id=f"cm{n}",
        text=f"hello {n}",
    )


def delta(n: int, reply_id: str = "r1", conversation_id: str = "c1") -> ReplyDelta:
    return ReplyDelta(at=EPOCH, conversation_id=conversation_id, reply_id=reply_id, text=f"t{n} ")


HOSTILE_SESSION_IDS = [
    "",
    "*",
    "a:b",
    "{x}",
    "a" * 500,
    "abc def ghi jkl mno",
    "../../etc/passwd",
    "ab",
]
