"""What a benchmark "token" is, for chatcore and the bare-bones pipeline alike.

A token is :data:`TOKEN_CHARS` (8) characters: the time it was generated, as 7 hex digits of
``CLOCK_MONOTONIC`` microseconds (modulo 2**28, so it wraps every 268 s), then a space. The
monotonic clock is one clock for every process of the machine, so a client subtracts the
stamp from its own receive time and gets the token's latency from the model to the client,
batching included. A reply of N tokens is exactly ``8 * N`` characters, which is how a client
checks that nothing of a reply is missing or doubled.
"""

from __future__ import annotations

import time

TOKEN_CHARS = 8
_STAMP_BITS = 28
_MASK = (1 << _STAMP_BITS) - 1
_HEX = frozenset("0123456789abcdef")


def now_us() -> int:
    return time.monotonic_ns() // 1000


def stamp(at_us: int | None = None) -> str:
    """One token: the stamp of ``at_us`` (default: now) and a space."""
    value = now_us() if at_us is None else at_us
    return f"{value & _MASK:07x} "


def count(text: str) -> int:
    return len(text) // TOKEN_CHARS


def well_formed(text: str) -> bool:
    """Whole tokens only, each 7 hex digits and a space."""
    if len(text) % TOKEN_CHARS:
        return False
    for start in range(0, len(text), TOKEN_CHARS):
        token = text[start : start + TOKEN_CHARS]
        if token[-1] != " " or not _HEX.issuperset(token[:-1]):
            return False
    return True


def latencies_us(text: str, received_us: int) -> list[int]:
    """How long ago (in microseconds, as of ``received_us``) each token of ``text`` was made."""
    now = received_us & _MASK
    return [
        (now - int(text[start : start + 7], 16)) & _MASK
        for start in range(0, len(text) - TOKEN_CHARS + 1, TOKEN_CHARS)
    ]
