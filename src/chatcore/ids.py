"""Identifiers and stream positions.

A *position* is the id the event store gave an event: ``"<milliseconds>-<sequence>"``, the
format of Redis stream entry ids, which every adapter uses so that a client's cursor means the
same thing whatever stores the log.
"""

from __future__ import annotations

import functools
import re
from typing import NewType

from chatcore.errors import InvalidIdentifier

Position = NewType("Position", str)

_POSITION = re.compile(r"^(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})$")
# Session ids are secrets' token_urlsafe output: 16 to 64 characters of the URL-safe alphabet.
# Nothing else may reach a storage key (no '*', ':', '{', '}', spaces, ...).
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")

_U64 = 2**64


# Remembered for the positions seen last: a feed compares each event's position several times
# on its way to the sockets.
@functools.lru_cache(maxsize=4096)
def parse_position(value: str) -> tuple[int, int]:
    """Return ``(milliseconds, sequence)`` of a position, or raise :class:`InvalidIdentifier`."""
    match = _POSITION.fullmatch(value)
    if match is None:
        raise InvalidIdentifier("position", value)
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms >= _U64 or seq >= _U64:
        raise InvalidIdentifier("position", value)
    return ms, seq


def position(value: str) -> Position:
    """Validate ``value`` as a position."""
    parse_position(value)
    return Position(value)


def position_after(a: str, b: str | None) -> bool:
    """True when position ``a`` comes strictly after ``b`` (``None`` is before everything)."""
    if b is None:
        return True
    return parse_position(a) > parse_position(b)


def position_before(value: str) -> str | None:
    """The position just before ``value``: reading after it starts at ``value`` itself.
    ``None`` when ``value`` is the first position there can be (``0-0``)."""
    ms, seq = parse_position(value)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{_U64 - 1}"
    return None


def validate_session_id(value: object) -> str:
    """Return ``value`` if it is a well-formed session id, else raise :class:`InvalidIdentifier`."""
    if not isinstance(value, str) or _SESSION_ID.fullmatch(value) is None:
        raise InvalidIdentifier("session id", value if isinstance(value, str) else repr(value))
    return value


def validate_plain_id(kind: str, value: object) -> str:
    """Ids chosen by clients (conversation ids, client message ids): short, no spaces."""
    if not isinstance(value, str) or _PLAIN_ID.fullmatch(value) is None:
        raise InvalidIdentifier(kind, value if isinstance(value, str) else repr(value))
    return value
