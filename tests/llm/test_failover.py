"""The failover on its own: any model call (here a scripted one, no LiteLLM) gets the retries,
the mid-answer switch with its repeat guard, and one usage report that adds up every call.

``tests/llm/test_litellm_adapter.py`` runs the same rules through LiteLLM against real local
HTTP servers; these show they belong to the failover, not to the LiteLLM call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import pytest

from chatcore.errors import LLMError
from chatcore.ports import LLMChunk, ModelSwitch, TextDelta, UsageReport
from chatcore.prompt import estimate_text_tokens
from chatcore_adapters.llm.errors import USER_MESSAGES
from chatcore_adapters.llm.failover import (
    AttemptFailed,
    CallRecord,
    Pricing,
    stream_with_failover,
)
from chatcore_adapters.llm.settings import ModelSettings

SAID = "A write-ahead log records each change "
UNAVAILABLE = LLMError("unavailable", USER_MESSAGES["unavailable"])


@dataclass
class Script:
    """What one call of a model does: stream ``pieces``, then fail with ``failure`` if set."""

    pieces: Sequence[str] = ()
    failure: AttemptFailed | None = None
    usage: tuple[int, int] | None = None


@dataclass
class ScriptedCalls:
    """A :data:`ModelCall` playing each model's scripts in order; records every call."""

    scripts: dict[str, list[Script]]
    calls: list[tuple[str, str]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    async def __call__(
        self, target: ModelSettings, said: str, record: CallRecord
    ) -> AsyncGenerator[str, None]:
        self.calls.append((target.model, said))
        script = self.scripts[target.model].pop(0)
        record.prompt = "question" + said
        finished = False
        try:
            for piece in script.pieces:
                record.text_received = True
                yield piece
            if script.failure is not None:
                raise script.failure
            record.usage = script.usage
            finished = True
        finally:
            if not finished:
                self.closed.append(target.model)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def no_price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    return None


def cent_a_token(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    return (prompt_tokens + completion_tokens) / 100


def redact_nothing(text: str) -> str:
    return text


def failover(
    chain: Sequence[ModelSettings],
    calls: ScriptedCalls,
    *,
    said: str = "",
    sleeps: Sleeps | None = None,
    price: Pricing = no_price,
) -> AsyncGenerator[LLMChunk, None]:
    return stream_with_failover(
        chain,
        said,
        calls,
        price=price,
        redact=redact_nothing,
        sleep=sleeps if sleeps is not None else Sleeps(),
    )


async def collect(stream: AsyncGenerator[LLMChunk, None]) -> list[LLMChunk]:
    return [chunk async for chunk in stream]


async def test_a_mid_answer_failure_continues_on_the_next_model_without_repeating() -> None:
    calls = ScriptedCalls(
        {
            "primary": [Script([SAID, "so a crash "], AttemptFailed(UNAVAILABLE, "reset"))],
            # Asked to continue, the fallback restates what was said before going on.
            "fallback": [Script([SAID, "so a crash loses", " nothing."], usage=(30, 4))],
        }
    )
    chain = (ModelSettings(model="primary"), ModelSettings(model="fallback"))

    chunks = await collect(failover(chain, calls, price=cent_a_token))

    assert chunks[:-1] == [
        TextDelta(text=SAID, model="primary"),
        TextDelta(text="so a crash ", model="primary"),
        ModelSwitch(from_model="primary", to_model="fallback", reason="unavailable mid-answer"),
        TextDelta(text="loses", model="fallback"),
        TextDelta(text=" nothing.", model="fallback"),
    ]
    assert calls.calls == [("primary", ""), ("fallback", SAID + "so a crash ")]
    report = chunks[-1]
    assert isinstance(report, UsageReport)
    assert report.model == "fallback"
    # The primary reported no usage: its tokens are estimated from its prompt and its text.
    primary_prompt = estimate_text_tokens("question")
    primary_answer = estimate_text_tokens(SAID + "so a crash ")
    assert report.usage.prompt_tokens == primary_prompt + 30
    assert report.usage.completion_tokens == primary_answer + 4
    assert report.usage.cost_usd == pytest.approx((primary_prompt + primary_answer + 34) / 100)


async def test_a_failure_before_any_text_is_retried_after_at_least_retry_after() -> None:
    rate_limited = LLMError("rate_limited", USER_MESSAGES["rate_limited"])
    calls = ScriptedCalls(
        {
            "only": [
                Script(failure=AttemptFailed(rate_limited, "429", retry_after=5.0)),
                Script(["fine"], usage=(1, 1)),
            ]
        }
    )
    sleeps = Sleeps()

    chunks = await collect(
        failover((ModelSettings(model="only", retries=1, retry_backoff=0.1),), calls, sleeps=sleeps)
    )

    assert [c for c in chunks if isinstance(c, TextDelta)] == [TextDelta("fine", "only")]
    assert not any(isinstance(c, ModelSwitch) for c in chunks)
    assert sleeps.delays == [5.0]
    assert len(calls.calls) == 2


async def test_closing_the_answer_closes_the_model_call() -> None:
    calls = ScriptedCalls({"only": [Script(["one ", "two ", "three"])]})
    stream = failover((ModelSettings(model="only"),), calls)

    assert await anext(stream) == TextDelta("one ", "only")
    await stream.aclose()

    assert calls.closed == ["only"]


async def test_when_every_model_fails_the_last_error_is_raised_for_the_user() -> None:
    calls = ScriptedCalls(
        {
            "a": [Script(failure=AttemptFailed(UNAVAILABLE, "down"))],
            "b": [Script(failure=AttemptFailed(LLMError("auth", USER_MESSAGES["auth"]), "401"))],
        }
    )
    chain = (ModelSettings(model="a", retries=0), ModelSettings(model="b", retries=0))

    with pytest.raises(LLMError) as caught:
        await collect(failover(chain, calls))

    assert caught.value.kind == "auth"
    assert caught.value.message.startswith("None of the configured models could answer.")
    assert caught.value.retryable  # the first failure was worth another try later
