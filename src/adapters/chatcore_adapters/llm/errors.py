"""What a model's failure means: its :class:`LLMError` kind, the text a user reads, and how long
the provider asked us to wait.

Exceptions are judged by their HTTP status and the names of their types, never by importing
the libraries that raise them (LiteLLM, the provider SDKs, httpx, aiohttp), so this module
costs nothing to import. The message of an :class:`LLMError` made here is always one of the
fixed user-safe texts below, never the provider's own words.
"""

from __future__ import annotations

import contextlib

from chatcore.errors import LLMError

USER_MESSAGES = {
    "timeout": "The model took too long to answer; please try again.",
    "rate_limited": "The model provider is rate-limiting requests; please try again shortly.",
    "auth": (
        "The model provider did not accept the configured credentials; "
        "an administrator needs to check them."
    ),
    "unavailable": "The model provider is unavailable right now; please try again later.",
    "bad_request": "The model provider could not process this request.",
    "cancelled": "The answer was cancelled.",
    "internal": "Something went wrong while generating the answer.",
}
CONTEXT_TOO_LONG = (
    "The conversation is too long for the model; start a new conversation or send a "
    "shorter message."
)
CONTENT_POLICY = "The model provider declined to answer this request (content policy)."
BILLING = "The model provider account cannot be used right now (billing or quota)."

_TIMEOUT_TYPES = frozenset(
    {"Timeout", "APITimeoutError", "TimeoutException", "TimeoutError", "ServerTimeoutError"}
)
_CONNECTION_TYPES = frozenset(
    {
        "APIConnectionError",
        "ServiceUnavailableError",
        "BadGatewayError",
        "InternalServerError",
        "TransportError",
        "ClientError",
        "ConnectionError",
        "OSError",
    }
)


def classify_error(exc: BaseException) -> LLMError:
    """The :class:`LLMError` for an exception of LiteLLM, its provider SDKs, httpx or aiohttp.

    The message is always one of the fixed user-safe texts, never the provider's.
    """
    if isinstance(exc, LLMError):
        return exc
    # A stream failing part-way comes wrapped (MidStreamFallbackError): judge its cause.
    cause = getattr(exc, "original_exception", None)
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    if "ContextWindowExceededError" in names:
        return LLMError("bad_request", CONTEXT_TOO_LONG)
    if "ContentPolicyViolationError" in names:
        return LLMError("bad_request", CONTENT_POLICY)
    if names & _TIMEOUT_TYPES:
        return LLMError("timeout", USER_MESSAGES["timeout"])
    if isinstance(status, int) and not isinstance(status, bool):
        if status == 429:
            return LLMError("rate_limited", USER_MESSAGES["rate_limited"])
        if status in {401, 403}:
            return LLMError("auth", USER_MESSAGES["auth"])
        if status == 402:
            return LLMError("auth", BILLING)
        if status == 408:
            return LLMError("timeout", USER_MESSAGES["timeout"])
        if 400 <= status < 500:
            return LLMError("bad_request", USER_MESSAGES["bad_request"])
        if status >= 500:
            return LLMError("unavailable", USER_MESSAGES["unavailable"])
    if names & _CONNECTION_TYPES:
        return LLMError("unavailable", USER_MESSAGES["unavailable"])
    return LLMError("internal", USER_MESSAGES["internal"])


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the provider asked us to wait (``Retry-After``), when it said so in seconds."""
    for candidate in (exc, getattr(exc, "original_exception", None)):
        for headers in (
            getattr(candidate, "litellm_response_headers", None),  # where LiteLLM keeps them
            getattr(candidate, "headers", None),
            getattr(getattr(candidate, "response", None), "headers", None),
        ):
            # An HTTP date, or anything unreadable, is ignored: the backoff applies.
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                value = headers.get("retry-after")  # type: ignore[union-attr]
                if value is not None:
                    return max(0.0, float(value))
    return None
