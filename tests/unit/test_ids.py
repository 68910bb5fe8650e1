"""Positions (cursors): their format and their order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatcore.errors import InvalidIdentifier
from chatcore.ids import parse_position, position_after, position_before

U64 = 2**64
positions = st.tuples(st.integers(0, U64 - 1), st.integers(0, U64 - 1)).map(
    lambda p: f"{p[0]}-{p[1]}"
)


@given(positions)
def test_position_before_is_the_position_right_before(value: str) -> None:
    before = position_before(value)
    if value == "0-0":
        assert before is None
        return
    assert before is not None
    assert position_after(value, before)
    ms, seq = parse_position(value)
    b_ms, b_seq = parse_position(before)
    # Nothing fits between the two: the next position after ``before`` is ``value``.
    assert (b_ms, b_seq + 1) == (ms, seq) or (b_seq == U64 - 1 and (b_ms + 1, 0) == (ms, seq))


@given(positions, positions)
def test_positions_are_ordered_as_pairs_of_integers(a: str, b: str) -> None:
    assert position_after(a, b) == (parse_position(a) > parse_position(b))


@pytest.mark.parametrize("bad", ["", "1", "1-", "-1", "01-2", "1-02", "a-b", f"{U64}-0", "1-2-3"])
def test_a_position_that_is_not_canonical_is_refused(bad: str) -> None:
    with pytest.raises(InvalidIdentifier):
        parse_position(bad)
