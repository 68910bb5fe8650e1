"""Pure helpers of the LiteLLM adapter: the continuation repeat guard, redaction, error kinds.

Importing the adapter module does not import LiteLLM, so these run without it.
"""

from __future__ import annotations

import pytest
from chatcore_adapters.llm.litellm_adapter import RepeatGuard, classify_error, redact

from chatcore.errors import LLMError

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


def test_redact_removes_given_secrets_and_key_shapes() -> None:
    raw = (
        "bad key sk-proj-abcdef123456 for Authorization: Bearer abc.def-ghi_jkl "
        'api_key="hunter2-hunter2" and my-own-secret-value'
    )
    clean = redact(raw, ["my-own-secret-value"])
    for secret in ("sk-proj-abcdef123456", "abc.def-ghi_jkl", "hunter2-hunter2", "my-own-secret"):
        assert secret not in clean
    assert clean.startswith("bad key [REDACTED]")


class FakeStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


class APIConnectionError(Exception):
    """Named like the SDK's: classification goes by the exception type's name."""


class Timeout(Exception):
    pass


class MidStreamFallbackError(Exception):
    def __init__(self, original_exception: BaseException) -> None:
        super().__init__("wrapped")
        self.original_exception = original_exception
        self.status_code = 503


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (FakeStatusError(429), "rate_limited"),
        (FakeStatusError(401), "auth"),
        (FakeStatusError(413), "bad_request"),
        (FakeStatusError(504), "unavailable"),
        (FakeStatusError(408), "timeout"),
        (APIConnectionError(), "unavailable"),
        (Timeout(), "timeout"),
        (TimeoutError(), "timeout"),
        (ConnectionResetError(), "unavailable"),
        (MidStreamFallbackError(FakeStatusError(429)), "rate_limited"),
        (RuntimeError("something odd"), "internal"),
    ],
)
def test_exceptions_are_classified_by_status_then_type(error: Exception, kind: str) -> None:
    classified = classify_error(error)
    assert isinstance(classified, LLMError)
    assert classified.kind == kind
    assert str(error) not in classified.message or not str(error)
