"""The repeat guard: a continuation after a model switch does not say the said text again."""

from __future__ import annotations

from chatcore_adapters.llm.repeat_guard import RepeatGuard

SAID = "The write-ahead log records every change before it is applied, "


def guarded(said: str, pieces: list[str]) -> str:
    guard = RepeatGuard(said)
    return "".join(guard.feed(piece) for piece in pieces) + guard.flush()


def test_a_proper_continuation_passes_unchanged() -> None:
    assert guarded(SAID, ["so a ", "crash loses ", "nothing."]) == "so a crash loses nothing."


def test_nothing_is_held_back_when_nothing_was_said() -> None:
    guard = RepeatGuard("")
    assert guard.feed("Hello") == "Hello"
    assert guard.flush() == ""


def test_a_continuation_that_starts_over_loses_the_restated_part() -> None:
    pieces = [SAID[:10], SAID[10:30], SAID[30:], "so a crash ", "loses nothing."]
    assert guarded(SAID, pieces) == "so a crash loses nothing."


def test_a_repeated_tail_is_dropped() -> None:
    pieces = ["before it is applied, ", "so a crash loses nothing."]
    assert guarded(SAID, pieces) == "so a crash loses nothing."


def test_a_short_coincidental_overlap_is_kept() -> None:
    # "applied" ends the said text and starts the continuation: too short to be a repeat.
    said = "Each change is logged, then applied"
    assert guarded(said, ["applied changes are never lost."]) == "applied changes are never lost."


def test_leading_space_is_not_doubled_after_a_trailing_space() -> None:
    assert guarded(SAID, [" so a crash", " loses nothing."]) == "so a crash loses nothing."


def test_text_is_held_back_at_most_a_window() -> None:
    guard = RepeatGuard(SAID, window=20)
    assert guard.feed("so a crash loses ") == ""
    assert guard.feed("nothing at all.") == "so a crash loses nothing at all."
    assert guard.feed(" More.") == " More."
