"""Token buckets per key (a session's messages, a client address's new sessions).

The buckets live in this process: with several API processes a client that spreads its
connections over them gets at most that many times the rate, which still bounds abuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``rate`` tokens per second, at most ``burst`` saved up, one token per action."""

    def __init__(
        self, *, rate: float, burst: int, now: Callable[[], float], max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._now = now
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    @classmethod
    def per_minute(cls, per_minute: float, burst: int, now: Callable[[], float]) -> RateLimiter:
        return cls(rate=per_minute / 60.0, burst=burst, now=now)

    def try_acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they behave exactly like new ones)."""
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:  # still full: drop the oldest quarter
            for key in list(self._buckets)[: self._max_keys // 4]:
                del self._buckets[key]
