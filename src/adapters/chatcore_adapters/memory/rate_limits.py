"""Rate limits in memory (one process): the GCRA of :mod:`chatcore.gcra` on the clock port.

Exact within the process that holds it: the embedded mode's limits, and the API's limits of
one connection (which lives in one process whatever the backend).
"""

from __future__ import annotations

from collections.abc import Sequence

from chatcore.gcra import Rate, Refused, Step, charged, decide, validate_cost, validate_limit_key
from chatcore.ports import Clock


class MemoryRateLimits:
    """The :class:`chatcore.ports.RateLimits` of one process. At most ``max_keys`` keys are
    kept: past that, keys whose allowance is full again are forgotten (they behave exactly
    like new ones), and if that is not enough the oldest quarter goes."""

    def __init__(self, clock: Clock, *, max_keys: int = 100_000) -> None:
        if max_keys < 4:
            raise ValueError("max_keys must be at least 4")
        self._clock = clock
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}

    @property
    def size(self) -> int:
        """How many keys are kept."""
        return len(self._tats)

    async def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        return self.acquire_now(key, rate, cost)

    def acquire_now(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        """:meth:`acquire` without awaiting (a limit that is only ever in this process)."""
        validate_limit_key(key)
        validate_cost(rate, cost, prepaid=True)
        now = self._clock.monotonic()
        verdict = decide(self._tats.get(key), now, rate, cost)
        if verdict.allowed:
            self._store(key, verdict.tat, now)
        return verdict.retry_after

    async def check(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        validate_limit_key(key)
        validate_cost(rate, cost, prepaid=True)
        return decide(self._tats.get(key), self._clock.monotonic(), rate, cost).retry_after

    async def charge(self, key: str, rate: Rate, cost: float) -> None:
        validate_limit_key(key)
        validate_cost(rate, cost, prepaid=False)
        now = self._clock.monotonic()
        self._store(key, charged(self._tats.get(key), now, rate, cost), now)

    async def admit(self, steps: Sequence[Step]) -> Refused | None:
        for step in steps:
            validate_limit_key(step.key)
            validate_cost(step.rate, step.cost, prepaid=True)
        now = self._clock.monotonic()
        taken: dict[str, float] = {}  # (a key named twice sees its earlier step)
        for index, step in enumerate(steps):
            tat = taken[step.key] if step.key in taken else self._tats.get(step.key)
            verdict = decide(tat, now, step.rate, step.cost)
            if not verdict.allowed:
                return Refused(index, verdict.retry_after)
            if step.count:
                taken[step.key] = verdict.tat
        for key, tat in taken.items():
            self._store(key, tat, now)
        return None

    def forget(self, key: str) -> None:
        """Drop a key's state (a connection that closed)."""
        self._tats.pop(key, None)

    def _store(self, key: str, tat: float, now: float) -> None:
        if key not in self._tats and len(self._tats) >= self._max_keys:
            self._prune(now)
        self._tats[key] = tat

    def _prune(self, now: float) -> None:
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]
        if len(self._tats) >= self._max_keys:
            for key in list(self._tats)[: self._max_keys // 4]:
                del self._tats[key]
