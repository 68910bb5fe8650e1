"""Retries and fallbacks over a chain of models, also in the middle of a streamed answer.

:func:`stream_with_failover` drives one answer through the chain (the primary model, then each
fallback) with a :data:`ModelCall` that streams one call to one model:

* before the first token, a retryable failure (timeout, 429, 5xx, connection) is retried
  with exponential backoff and jitter (honouring ``Retry-After``), then the next model is
  tried;
* after some text, a failure (connection lost, error event, stalled stream) moves on to the
  next model, asked to continue after the text said so far; what its continuation repeats of
  that text is dropped (:class:`RepeatGuard`), a :class:`ModelSwitch` is yielded before its
  first delta, and every delta names the model that wrote it;
* when every model has failed, :class:`LLMError` is raised with a message a user can read.
  The failures' own details go only to the log, redacted.

Nothing here knows how a model is called: the LiteLLM adapter supplies the call and the prices.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from chatcore.errors import LLMError
from chatcore.events import Usage
from chatcore.ports import LLMChunk, ModelSwitch, TextDelta, UsageReport
from chatcore.prompt import estimate_text_tokens
from chatcore_adapters.llm.repeat_guard import RepeatGuard
from chatcore_adapters.llm.settings import ModelSettings

logger = logging.getLogger(__name__)

_SWITCH_REASONS = {
    "timeout": "timed out",
    "rate_limited": "rate-limited",
    "auth": "credentials rejected",
    "unavailable": "unavailable",
    "bad_request": "request refused",
    "cancelled": "cancelled",
    "internal": "failed",
}

_MAX_BACKOFF = 30.0


class AttemptFailed(Exception):
    """One call failed: the error to report, the raw detail for the log, and how long the
    provider asked us to wait before trying again (if it did)."""

    def __init__(self, error: LLMError, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


@dataclass
class CallRecord:
    """What one call to one model produced.

    The call fills in ``prompt``, ``text_received``, ``usage`` and ``finish_reason`` as it
    goes; ``text`` is what the failover passed on from it, after the repeat guard.
    """

    prompt: str = ""
    text_received: bool = False
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens, as the provider counted
    finish_reason: str | None = None
    text: str = ""


ModelCall = Callable[[ModelSettings, str, CallRecord], AsyncGenerator[str, None]]
"""One streamed call to a model (``target``), continuing after ``said`` when that is not
empty: the text as it comes. It fills in the :class:`CallRecord` and raises
:class:`AttemptFailed` when the call fails; closing it closes the call."""

Pricing = Callable[[str, int, int], float | None]
"""Cost in USD of (model, prompt tokens, completion tokens); ``None`` when unknown."""


@dataclass
class _Spent:
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


async def stream_with_failover(
    chain: Sequence[ModelSettings],
    said: str,
    call: ModelCall,
    *,
    price: Pricing,
    redact: Callable[[str], str],
    sleep: Callable[[float], Awaitable[None]],
) -> AsyncGenerator[LLMChunk, None]:
    """The answer of the first model in ``chain`` that gives one, retrying and falling back as
    the module's docstring says; ``said`` is text already said that the answer continues.

    The one :class:`UsageReport` at the end adds up every call that produced text.
    """
    speaking = 0  # index in the chain of the model whose text the stream is showing
    switch_reason = ""
    spent: list[_Spent] = []
    failures: list[LLMError] = []
    retry_after: float | None = None
    index = attempt = 0
    while index < len(chain):
        target = chain[index]
        if attempt:
            await sleep(_backoff(target, attempt, retry_after))
        record = CallRecord()
        try:
            pieces = _guarded(call(target, said, record), said, record)
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if index != speaking:
                        before = chain[speaking].model
                        logger.info(
                            "LLM answer continues on %s after %s failed",
                            target.model,
                            before,
                            extra={
                                "llm_from_model": before,
                                "llm_to_model": target.model,
                                "llm_chars_said": len(said),
                            },
                        )
                        yield ModelSwitch(
                            from_model=before, to_model=target.model, reason=switch_reason
                        )
                        speaking = index
                    said += piece
                    yield TextDelta(text=piece, model=target.model)
        except AttemptFailed as failed:
            error = failed.error
            failures.append(error)
            retry_after = failed.retry_after
            if record.text_received:
                spent.append(_spent(target, record, price))
            mid_stream = bool(record.text)
            last = index == len(chain) - 1
            detail = redact(failed.detail)
            logger.warning(
                "LLM call to %s failed (%s): %s",
                target.model,
                error.kind,
                detail,
                extra={
                    "llm_model": target.model,
                    "llm_attempt": attempt + 1,
                    "llm_error_kind": error.kind,
                    "llm_error_detail": detail,
                    "llm_mid_stream": mid_stream,
                    "llm_chars_said": len(said),
                },
            )
            switch_reason = _SWITCH_REASONS[error.kind] + (
                " mid-answer" if mid_stream else " before answering"
            )
            if error.retryable and attempt < target.retries and (not mid_stream or last):
                attempt += 1
            else:
                index, attempt = index + 1, 0
            continue
        spent.append(_spent(target, record, price))
        yield UsageReport(usage=_add_up(spent), model=target.model)
        return
    raise _give_up(failures, len(chain))


async def _guarded(
    pieces: AsyncGenerator[str, None], said: str, record: CallRecord
) -> AsyncGenerator[str, None]:
    """``pieces`` without what repeats ``said``; what passes goes into ``record.text``.

    What the guard still holds back when the call fails is dropped with the call.
    """
    guard = RepeatGuard(said if said.strip() else "")
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            out = guard.feed(piece)
            if out:
                record.text += out
                yield out
    out = guard.flush()
    if out:
        record.text += out
        yield out


def _backoff(target: ModelSettings, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter (50-100% of the step), at least ``Retry-After``."""
    step = target.retry_backoff * 2.0 ** (attempt - 1)
    delay = step * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, _MAX_BACKOFF)


def _spent(target: ModelSettings, record: CallRecord, price: Pricing) -> _Spent:
    """Tokens (and cost) of one call: as the provider counted them, else estimated."""
    if record.usage is not None:
        prompt_tokens, completion_tokens = record.usage
    else:
        prompt_tokens = estimate_text_tokens(record.prompt)
        completion_tokens = estimate_text_tokens(record.text)
    return _Spent(
        prompt_tokens, completion_tokens, price(target.model, prompt_tokens, completion_tokens)
    )


def _add_up(spent: list[_Spent]) -> Usage:
    costs = [s.cost_usd for s in spent if s.prompt_tokens or s.completion_tokens]
    return Usage(
        prompt_tokens=sum(s.prompt_tokens for s in spent),
        completion_tokens=sum(s.completion_tokens for s in spent),
        cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
    )


def _give_up(failures: list[LLMError], models: int) -> LLMError:
    last = failures[-1]
    if models == 1:
        return LLMError(last.kind, last.message, retryable=last.retryable)
    return LLMError(
        last.kind,
        f"None of the configured models could answer. {last.message}",
        retryable=any(f.retryable for f in failures),
    )
