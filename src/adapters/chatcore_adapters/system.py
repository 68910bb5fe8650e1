"""The real clock and id generator."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class RandomIds:
    """Session ids carry 192 random bits; other ids 96 bits after a readable prefix."""

    def session_id(self) -> str:
        return secrets.token_urlsafe(24)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{secrets.token_urlsafe(12)}"
