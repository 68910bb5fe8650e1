"""The token bucket behind the API's rate limits."""

from __future__ import annotations

import pytest

from chatcore_api.ratelimit import RateLimiter
from tests.support.factories import ManualClock


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = ManualClock()
    limiter = RateLimiter.per_minute(6, 2, clock.monotonic)  # one every 10 s, two at once
    assert limiter.try_acquire("a") == 0 and limiter.try_acquire("a") == 0
    wait = limiter.try_acquire("a")
    assert wait == pytest.approx(10.0)
    assert limiter.try_acquire("b") == 0, "keys are independent"
    clock.advance(5)
    assert limiter.try_acquire("a") == pytest.approx(5.0)
    clock.advance(5)
    assert limiter.try_acquire("a") == 0


def test_the_limiter_forgets_idle_keys_when_full() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=1.0, burst=1, now=clock.monotonic, max_keys=10)
    for n in range(10):
        limiter.try_acquire(f"k{n}")
    clock.advance(5)
    limiter.try_acquire("new")
    assert len(limiter._buckets) <= 10
