"""How long to wait before trying again: exponential backoff with jitter.

Pure arithmetic (the random source is injectable), shared by every loop that retries: the
worker's claims, the API's live feed, the supervisor's restarts.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each drawn uniformly from the
    upper half of its ceiling ("equal jitter": never less than half the ceiling, so a storm of
    retries spreads out without any of them retrying at once)."""

    def __init__(
        self, initial: float, maximum: float, rand: Callable[[], float] = random.random
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        ceiling: float = min(self.maximum, self.initial * 2.0**self.failures)
        self.failures += 1
        return ceiling * (0.5 + self.rand() / 2)

    def reset(self) -> None:
        self.failures = 0
