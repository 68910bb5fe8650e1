"""Rates and the generic cell rate algorithm (GCRA) behind every limit.

A :class:`Rate` is ``limit`` units per ``period`` seconds, ``burst`` of them at once. GCRA keeps
one number per key: the *theoretical arrival time* (TAT), the moment the key would be back to
a full allowance if nothing more happened. Taking ``cost`` units moves it ``cost`` emission
intervals (``period / limit``) later, starting from now if it lies in the past; they may be
taken as long as the new TAT is at most ``burst`` intervals ahead of now. The wait of a refusal
is how far beyond that it would land. One number per key, no timer, no refill loop: the same
formula runs here (the in-memory adapter, on the clock port) and in the Redis adapter's Lua
script (on the server's clock), so both keep the same contract.

Charging is the post-paid form: the units are counted whether or not they fit, so a key may go
into debt (a model's usage, known only once its reply ended), and nothing more is let through
until the debt has run off.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from chatcore.errors import InvalidIdentifier

# A wait shorter than this is no wait: it absorbs the rounding of adding many intervals.
EPSILON = 1e-6

# The keys a limit may have: short, and nothing a storage key must not contain.
_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` units per ``period`` seconds, with at most ``burst`` units at once."""

    limit: float
    period: float = 60.0
    burst: float = 1.0

    def __post_init__(self) -> None:
        for name in ("limit", "period"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"a rate's {name} must be positive (got {value!r})")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"a rate's burst must be at least 1 (got {self.burst!r})")

    @classmethod
    def per_minute(cls, limit: float, burst: float | None = None) -> Rate:
        """``limit`` a minute; ``burst`` defaults to one minute's worth."""
        return cls(limit=limit, period=60.0, burst=limit if burst is None else burst)

    @property
    def interval(self) -> float:
        """Seconds one unit takes to come back (the emission interval)."""
        return self.period / self.limit

    @property
    def tolerance(self) -> float:
        """How far ahead of now the TAT may be after a take: ``burst`` intervals."""
        return self.burst * self.interval


@dataclass(frozen=True, slots=True)
class Step:
    """One limit a request goes through (:meth:`chatcore.ports.RateLimits.admit`): ``cost``
    units of ``rate`` under ``key``, counted when the request is let through, or (``count``
    false) only required to fit, as :meth:`~chatcore.ports.RateLimits.check` does."""

    key: str
    rate: Rate
    cost: float = 1.0
    count: bool = True


@dataclass(frozen=True, slots=True)
class Refused:
    """The step of an :meth:`~chatcore.ports.RateLimits.admit` that did not fit: its index
    in the steps, and the seconds until it would."""

    index: int
    retry_after: float


def validate_limit_key(key: object) -> str:
    """The key of a limit: 1 to 200 of ``A-Za-z0-9_.:-`` (else :class:`InvalidIdentifier`)."""
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise InvalidIdentifier("limit key", key if isinstance(key, str) else repr(key))
    return key


def validate_cost(rate: Rate, cost: float, *, prepaid: bool) -> None:
    """A cost is a positive number; one taken in advance must fit in the burst (it could
    never be allowed otherwise)."""
    if not (math.isfinite(cost) and cost > 0):
        raise ValueError(f"a cost must be positive (got {cost!r})")
    if prepaid and cost > rate.burst:
        raise ValueError(f"a cost of {cost:g} can never fit a burst of {rate.burst:g}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of asking for ``cost`` units: ``retry_after`` seconds to wait (0: allowed)
    and the TAT the key would have if they were counted."""

    retry_after: float
    tat: float

    @property
    def allowed(self) -> bool:
        return self.retry_after == 0.0


def decide(tat: float | None, now: float, rate: Rate, cost: float) -> Verdict:
    """Whether ``cost`` units may be taken at ``now`` from a key whose TAT is ``tat``
    (``None``: a key never used, or forgotten)."""
    start = now if tat is None or tat < now else tat
    new_tat = start + cost * rate.interval
    wait = new_tat - rate.tolerance - now
    return Verdict(wait if wait >= EPSILON else 0.0, new_tat)


def charged(tat: float | None, now: float, rate: Rate, cost: float) -> float:
    """The TAT after ``cost`` units are charged whether they fit or not (post-paid)."""
    start = now if tat is None or tat < now else tat
    return start + cost * rate.interval
