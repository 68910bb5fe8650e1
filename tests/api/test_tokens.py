"""Session tokens: signed, expiring, bound to their session, never shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatcore_api.errors import TokenExpired, Unauthorized
from chatcore_api.tokens import TokenSigner
from tests.support.factories import ManualClock

KEY = b"unit-test-key-" * 3


def signer(clock: ManualClock, ttl: timedelta = timedelta(hours=1)) -> TokenSigner:
    return TokenSigner(KEY, ttl=ttl, clock=clock)


def test_a_token_names_its_session_until_it_expires() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    issued = signer(clock).issue("S" * 32)
    assert signer(clock).verify(issued.token) == "S" * 32
    assert issued.expires_at == datetime(2026, 1, 1, 1, tzinfo=UTC)
    clock.advance(3599)
    assert signer(clock).verify(issued.token) == "S" * 32
    clock.advance(1)
    with pytest.raises(TokenExpired):
        signer(clock).verify(issued.token)


@pytest.mark.parametrize("part", [1, 2, 3])
def test_changing_any_part_of_a_token_invalidates_it(part: int) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    token = signer(clock).issue("S" * 32).token
    pieces = token.split(".")
    original = pieces[part]
    pieces[part] = ("T" if original[0] != "T" else "U") + original[1:]
    if part == 2:
        pieces[part] = str(int(original) + 86_400)  # stretch the expiry by a day
    with pytest.raises(Unauthorized) as refused:
        signer(clock).verify(".".join(pieces))
    assert not isinstance(refused.value, TokenExpired)


def test_a_token_from_another_key_or_garbage_is_refused() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    other = TokenSigner(b"another-key-0123456789", ttl=timedelta(hours=1), clock=clock)
    for token in (other.issue("S" * 32).token, "", "v1...", "x" * 2000, "v2.a.b.c"):
        with pytest.raises(Unauthorized):
            signer(clock).verify(token)


def test_tokens_do_not_show_in_reprs() -> None:
    issued = signer(ManualClock()).issue("S" * 32)
    assert issued.token not in repr(issued)
    assert KEY.decode() not in repr(signer(ManualClock()))
