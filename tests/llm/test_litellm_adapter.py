"""The LiteLLM adapter against real local HTTP servers speaking the OpenAI protocol.

Nothing is mocked: each test starts one or two :class:`FakeOpenAI` servers on 127.0.0.1,
scripts what they answer, and checks what the adapter streams and what the servers saw.
Backoff sleeps go through an injected recorder so retries are instant and inspectable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chatcore_adapters.llm import LLMSettings, build_llm
from chatcore_adapters.llm.litellm_adapter import (
    CONTINUE_INSTRUCTION,
    LiteLLMModel,
    load_litellm,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatcore.errors import LLMError
from chatcore.ports import (
    CompletionRequest,
    LLMChunk,
    ModelSwitch,
    PromptMessage,
    TextDelta,
    UsageReport,
)
from tests.support.fake_openai import Fail, FakeOpenAI, Stream, echo_answer, split_tokens

KEY_ENV = "CHATCORE_TEST_FAKE_KEY"
SECRET = "sk-test-do-not-leak-0123456789abcdef"
WAIT = 10.0

MESSAGES = (
    PromptMessage(role="system", content="You are terse."),
    PromptMessage(role="user", content="What is a write-ahead log?"),
)
REQUEST = CompletionRequest(messages=MESSAGES)
EXPECTED = echo_answer([m.model_dump() for m in MESSAGES])


class Sleeps:
    """Stands in for ``asyncio.sleep`` between retries: records the delay, waits no longer."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


@pytest.fixture
async def primary() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def fallback() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def target(
    server: FakeOpenAI, model: str = "openai/primary-model", **options: Any
) -> dict[str, Any]:
    return {
        "model": model,
        "api_base": server.base_url,
        "api_key_env": KEY_ENV,
        "timeout": WAIT,
        "first_token_timeout": WAIT,
        "retry_backoff": 0.1,
        **options,
    }


def make(
    sleeps: Sleeps, primary: dict[str, Any], *fallbacks: dict[str, Any], **options: Any
) -> LiteLLMModel:
    settings = LLMSettings.model_validate({**primary, "fallbacks": list(fallbacks), **options})
    return LiteLLMModel(settings, sleep=sleeps)


async def run(llm: LiteLLMModel, request: CompletionRequest = REQUEST) -> list[LLMChunk]:
    chunks: list[LLMChunk] = []
    async with asyncio.timeout(WAIT):
        async for chunk in llm.stream(request):
            chunks.append(chunk)
    return chunks


def text(chunks: list[LLMChunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def switches(chunks: list[LLMChunk]) -> list[ModelSwitch]:
    return [c for c in chunks if isinstance(c, ModelSwitch)]


def usage(chunks: list[LLMChunk]) -> UsageReport:
    reports = [c for c in chunks if isinstance(c, UsageReport)]
    assert len(reports) == 1
    assert chunks[-1] is reports[0]
    return reports[0]


# --- the normal case ----------------------------------------------------------------------------


async def test_a_normal_stream_sends_our_options_and_streams_the_answer(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    llm = make(sleeps, target(primary, temperature=0.3, max_tokens=200), system_prompt="Be kind.")

    chunks = await run(llm)

    assert text(chunks) == EXPECTED
    deltas = [c for c in chunks if isinstance(c, TextDelta)]
    assert len(deltas) == len(split_tokens(EXPECTED))
    assert {d.model for d in deltas} == {"openai/primary-model"}
    assert not switches(chunks)
    [seen] = primary.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert seen.body["model"] == "primary-model"
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["temperature"] == 0.3
    assert seen.body["max_tokens"] == 200
    assert seen.messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is a write-ahead log?"},
    ]
    assert sleeps.delays == []


async def test_usage_and_cost_come_from_the_provider_usage_chunk(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(usage=(123, 45)), Stream(usage=(123, 45)))
    priced = make(sleeps, target(primary, model="openai/gpt-4o-mini"))
    unpriced = make(sleeps, target(primary, model="openai/some-local-model"))

    priced_report = usage(await run(priced))
    unpriced_report = usage(await run(unpriced))

    litellm = load_litellm()
    prompt_cost, completion_cost = litellm.cost_per_token(
        model="openai/gpt-4o-mini", prompt_tokens=123, completion_tokens=45
    )
    assert priced_report.model == "openai/gpt-4o-mini"
    assert priced_report.usage.prompt_tokens == 123
    assert priced_report.usage.completion_tokens == 45
    assert priced_report.usage.cost_usd is not None
    assert priced_report.usage.cost_usd > 0
    assert priced_report.usage.cost_usd == pytest.approx(prompt_cost + completion_cost)
    assert unpriced_report.usage.prompt_tokens == 123
    assert unpriced_report.usage.cost_usd is None


async def test_usage_is_estimated_when_the_provider_sends_none(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(usage=None))

    report = usage(await run(make(sleeps, target(primary))))

    assert report.usage.prompt_tokens > 0
    assert report.usage.completion_tokens > 0


# --- retries --------------------------------------------------------------------------------------


async def test_a_429_is_retried_and_then_answers(primary: FakeOpenAI, sleeps: Sleeps) -> None:
    primary.script(Fail(429, "slow down", "rate_limit_exceeded"))

    chunks = await run(make(sleeps, target(primary, retries=2)))

    assert text(chunks) == EXPECTED
    assert len(primary.requests) == 2
    assert len(sleeps.delays) == 1
    assert not switches(chunks)


async def test_retry_after_is_honoured(primary: FakeOpenAI, sleeps: Sleeps) -> None:
    primary.script(Fail(429, "slow down", headers=(("Retry-After", "7"),)))

    await run(make(sleeps, target(primary, retries=1, retry_backoff=0.01)))

    assert sleeps.delays[0] >= 7


async def test_backoff_doubles_with_jitter(primary: FakeOpenAI, sleeps: Sleeps) -> None:
    primary.script(Fail(503), Fail(502), Fail(500))

    chunks = await run(make(sleeps, target(primary, retries=3, retry_backoff=0.2)))

    assert text(chunks) == EXPECTED
    assert len(primary.requests) == 4
    first, second, third = sleeps.delays
    assert 0.1 <= first <= 0.2
    assert 0.2 <= second <= 0.4
    assert 0.4 <= third <= 0.8


async def test_retries_are_bounded(primary: FakeOpenAI, sleeps: Sleeps) -> None:
    primary.script(*[Fail(503)] * 5)

    with pytest.raises(LLMError) as caught:
        await run(make(sleeps, target(primary, retries=2)))

    assert caught.value.kind == "unavailable"
    assert caught.value.retryable
    assert len(primary.requests) == 3


# --- failover -------------------------------------------------------------------------------------


async def test_a_500_on_the_primary_moves_to_the_fallback(
    primary: FakeOpenAI, fallback: FakeOpenAI, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    primary.script(Fail(500), Fail(500))
    llm = make(sleeps, target(primary, retries=1), target(fallback, model="openai/backup-model"))

    with caplog.at_level(logging.WARNING, logger="chatcore_adapters.llm"):
        chunks = await run(llm)

    assert text(chunks) == EXPECTED
    assert len(primary.requests) == 2
    assert len(fallback.requests) == 1
    assert isinstance(chunks[0], ModelSwitch)
    assert chunks[0] == ModelSwitch(
        from_model="openai/primary-model",
        to_model="openai/backup-model",
        reason="unavailable before answering",
    )
    assert {c.model for c in chunks if isinstance(c, TextDelta)} == {"openai/backup-model"}
    assert usage(chunks).model == "openai/backup-model"
    assert all(m["role"] != "assistant" for m in fallback.requests[0].messages)
    failures = [r for r in caplog.records if getattr(r, "llm_error_kind", None) == "unavailable"]
    assert len(failures) == 2
    assert {getattr(r, "llm_model", None) for r in failures} == {"openai/primary-model"}


async def test_a_client_error_is_not_retried_but_the_fallback_is_tried(
    primary: FakeOpenAI, fallback: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Fail(400, "bad request", "invalid_request_error"))
    llm = make(sleeps, target(primary, retries=2), target(fallback, model="openai/backup-model"))

    chunks = await run(llm)

    assert text(chunks) == EXPECTED
    assert len(primary.requests) == 1
    assert sleeps.delays == []
    assert switches(chunks)[0].reason == "request refused before answering"


@pytest.mark.parametrize(
    "failure",
    [Stream(drop_after=4), Stream(error_after=4)],
    ids=["connection-dropped", "error-event"],
)
async def test_a_failure_mid_stream_continues_on_the_fallback(
    failure: Stream, primary: FakeOpenAI, fallback: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(failure)
    llm = make(sleeps, target(primary), target(fallback, model="openai/backup-model"))

    chunks = await run(llm)

    said = "".join(split_tokens(EXPECTED)[:4])
    assert text(chunks) == EXPECTED, "the answer is the said text plus its continuation"
    before = [c for c in chunks[:5] if isinstance(c, TextDelta)]
    assert "".join(d.text for d in before) == said
    assert {d.model for d in before} == {"openai/primary-model"}
    assert chunks[4] == ModelSwitch(
        from_model="openai/primary-model",
        to_model="openai/backup-model",
        reason="unavailable mid-answer",
    )
    after = [c for c in chunks[5:] if isinstance(c, TextDelta)]
    assert after
    assert {d.model for d in after} == {"openai/backup-model"}
    assert len(primary.requests) == 1, "a failure after text is not retried on the same model"
    [continued] = fallback.requests
    assert continued.messages[:2] == [m.model_dump() for m in MESSAGES]
    assert continued.messages[2] == {"role": "assistant", "content": said.rstrip()}
    assert continued.messages[3] == {"role": "system", "content": CONTINUE_INSTRUCTION}
    report = usage(chunks)
    assert report.model == "openai/backup-model"
    assert report.usage.completion_tokens > fallback.requests[0].tokens_sent


async def test_without_a_fallback_a_mid_stream_failure_retries_the_same_model_continuing(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(drop_after=3))

    chunks = await run(make(sleeps, target(primary, retries=1)))

    assert text(chunks) == EXPECTED
    assert not switches(chunks)
    assert len(primary.requests) == 2
    said = "".join(split_tokens(EXPECTED)[:3])
    assert primary.requests[1].messages[-2] == {"role": "assistant", "content": said.rstrip()}


async def test_continue_from_is_sent_as_the_start_of_the_reply(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    said = "".join(split_tokens(EXPECTED)[:6])

    chunks = await run(
        make(sleeps, target(primary)),
        CompletionRequest(messages=MESSAGES, continue_from=said),
    )

    assert said + text(chunks) == EXPECTED
    assert primary.requests[0].messages[-2:] == [
        {"role": "assistant", "content": said.rstrip()},
        {"role": "system", "content": CONTINUE_INSTRUCTION},
    ]


async def test_a_model_that_starts_over_is_not_repeated(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    said = "".join(split_tokens(EXPECTED)[:6])
    primary.script(Stream(tokens=tuple(split_tokens(EXPECTED))))  # ignores the continuation

    chunks = await run(
        make(sleeps, target(primary)), CompletionRequest(messages=MESSAGES, continue_from=said)
    )

    assert said + text(chunks) == EXPECTED


# --- timeouts -------------------------------------------------------------------------------------


async def test_a_slow_first_token_times_out_and_the_fallback_answers(
    primary: FakeOpenAI, fallback: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(first_token_delay=30))
    llm = make(
        sleeps,
        target(primary, first_token_timeout=0.3, retries=0),
        target(fallback, model="openai/backup-model"),
    )

    chunks = await run(llm)

    assert text(chunks) == EXPECTED
    assert switches(chunks)[0].reason == "timed out before answering"
    async with asyncio.timeout(WAIT):
        await primary.requests[0].disconnected.wait()


async def test_a_slow_first_token_without_fallback_is_a_timeout_error(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(first_token_delay=30), Stream(first_token_delay=30))

    with pytest.raises(LLMError) as caught:
        await run(make(sleeps, target(primary, first_token_timeout=0.2, retries=1)))

    assert caught.value.kind == "timeout"
    assert caught.value.retryable
    assert len(primary.requests) == 2


async def test_a_stream_that_stalls_past_its_timeout_continues_on_the_fallback(
    primary: FakeOpenAI, fallback: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(token_delay=2.0))
    llm = make(
        sleeps,
        target(primary, timeout=1.0, first_token_timeout=1.0),
        target(fallback, model="openai/backup-model"),
    )

    chunks = await run(llm)

    assert text(chunks) == EXPECTED
    assert switches(chunks)[0].reason == "timed out mid-answer"
    assert fallback.requests[0].messages[-2]["role"] == "assistant"


# --- cancellation ---------------------------------------------------------------------------------


async def test_cancelling_mid_stream_closes_the_upstream_connection(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(token_delay=0.05))
    llm = make(sleeps, target(primary))
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for chunk in llm.stream(REQUEST):
            if isinstance(chunk, TextDelta):
                first_delta.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(WAIT):
        await first_delta.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await primary.requests[0].disconnected.wait()
    assert primary.requests[0].tokens_sent < len(split_tokens(EXPECTED))
    assert not primary.requests[0].completed.is_set()


async def test_cancelling_before_the_first_token_closes_the_upstream_connection(
    primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Stream(first_token_delay=30))
    task = asyncio.create_task(run(make(sleeps, target(primary))))
    async with asyncio.timeout(WAIT):
        await primary.wait_for_request(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await primary.requests[0].disconnected.wait()


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "bad_request"),
        (401, "auth"),
        (402, "auth"),
        (403, "auth"),
        (404, "bad_request"),
        (422, "bad_request"),
        (429, "rate_limited"),
        (500, "unavailable"),
        (503, "unavailable"),
    ],
)
async def test_http_errors_map_to_error_kinds(
    status: int, kind: str, primary: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Fail(status))

    with pytest.raises(LLMError) as caught:
        await run(make(sleeps, target(primary, retries=0)))

    assert caught.value.kind == kind
    assert caught.value.message.endswith(".")
    assert "scripted" not in caught.value.message, "the provider's text is not for users"


async def test_an_auth_error_names_no_key_anywhere(
    primary: FakeOpenAI, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    primary.script(Fail(401, f"Incorrect API key provided: {SECRET}", "invalid_api_key"))

    with caplog.at_level(logging.DEBUG), pytest.raises(LLMError) as caught:
        await run(make(sleeps, target(primary, retries=3)))

    error = caught.value
    assert error.kind == "auth"
    assert not error.retryable
    assert len(primary.requests) == 1, "bad credentials are not retried"
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert error.__cause__ is None
    assert error.__context__ is None
    assert caplog.records, "the failure is logged"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert all(SECRET not in str(value) for value in vars(record).values())
    assert any("Incorrect API key provided" in r.getMessage() for r in caplog.records)


async def test_a_missing_key_variable_fails_before_any_request(
    primary: FakeOpenAI, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)

    with pytest.raises(LLMError) as caught:
        await run(make(sleeps, target(primary, retries=2)))

    assert caught.value.kind == "auth"
    assert primary.requests == []


async def test_when_every_model_fails_the_error_says_so_plainly(
    primary: FakeOpenAI, fallback: FakeOpenAI, sleeps: Sleeps
) -> None:
    primary.script(Fail(503))
    fallback.script(Fail(429))
    llm = make(
        sleeps, target(primary, retries=0), target(fallback, model="openai/backup", retries=0)
    )

    with pytest.raises(LLMError) as caught:
        await run(llm)

    message = caught.value.message
    assert caught.value.kind == "rate_limited"
    assert message.startswith("None of the configured models could answer.")
    assert "rate-limiting" in message
    assert str(primary.port) not in message
    assert str(fallback.port) not in message


# --- configuration only ---------------------------------------------------------------------------


class AppSettings(BaseSettings):
    """How the app reads its settings (the lead's real class has more sections)."""

    model_config = SettingsConfigDict(env_prefix="CHATCORE_", env_nested_delimiter="__")

    llm: LLMSettings = LLMSettings()


async def test_swapping_the_provider_is_configuration_only(
    primary: FakeOpenAI, fallback: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: dict[str, list[LLMChunk]] = {}
    for server, model in ((primary, "openai/model-a"), (fallback, "openai/model-b")):
        monkeypatch.setenv("CHATCORE_LLM__MODEL", model)
        monkeypatch.setenv("CHATCORE_LLM__API_BASE", server.base_url)
        monkeypatch.setenv("CHATCORE_LLM__API_KEY_ENV", KEY_ENV)
        llm = build_llm(AppSettings().llm)
        assert llm.name == model
        chunks: list[LLMChunk] = []
        async with asyncio.timeout(WAIT):
            async for chunk in llm.stream(REQUEST):
                chunks.append(chunk)
        answers[model] = chunks

    assert [r.body["model"] for r in primary.requests] == ["model-a"]
    assert [r.body["model"] for r in fallback.requests] == ["model-b"]
    for model, chunks in answers.items():
        assert text(chunks) == EXPECTED
        assert {c.model for c in chunks if isinstance(c, TextDelta)} == {model}


async def test_fallbacks_configured_by_environment_are_used(
    primary: FakeOpenAI, fallback: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary.script(Fail(401))
    monkeypatch.setenv("CHATCORE_LLM__MODEL", "openai/model-a")
    monkeypatch.setenv("CHATCORE_LLM__API_BASE", primary.base_url)
    monkeypatch.setenv("CHATCORE_LLM__API_KEY_ENV", KEY_ENV)
    monkeypatch.setenv(
        "CHATCORE_LLM__FALLBACKS",
        f'[{{"model": "openai/model-b", "api_base": "{fallback.base_url}", '
        f'"api_key_env": "{KEY_ENV}"}}]',
    )

    chunks: list[LLMChunk] = []
    async with asyncio.timeout(WAIT):
        async for chunk in build_llm(AppSettings().llm).stream(REQUEST):
            chunks.append(chunk)

    assert text(chunks) == EXPECTED
    assert switches(chunks)[0].reason == "credentials rejected before answering"


# --- start-up checks ------------------------------------------------------------------------------


def test_preload_accepts_known_providers_and_rejects_unknown_ones() -> None:
    LiteLLMModel(
        LLMSettings(model="openai/gpt-4o-mini", fallbacks=({"model": "ollama_chat/llama3.2"},))
    ).preload()

    with pytest.raises(ValueError, match="provider/model"):
        LiteLLMModel(LLMSettings(model="no-such-provider/some-model")).preload()


def test_the_adapter_shows_no_secret_in_its_repr() -> None:
    llm = LiteLLMModel(LLMSettings(model="openai/gpt-4o-mini", api_key_env=KEY_ENV))
    assert SECRET not in repr(llm)
    assert "openai/gpt-4o-mini" in repr(llm)
