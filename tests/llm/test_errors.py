"""Error kinds: any exception of LiteLLM, a provider SDK, httpx or aiohttp becomes an
:class:`LLMError` with a fixed user-safe message. Judged by status and type names, so these run
without any of those libraries."""

from __future__ import annotations

import pytest

from chatcore.errors import LLMError
from chatcore_adapters.llm.errors import classify_error


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
