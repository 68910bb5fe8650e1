"""The LLM contract, run against the LiteLLM adapter talking to a local fake OpenAI server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from chatcore_adapters.llm import LLMSettings
from chatcore_adapters.llm.litellm_adapter import LiteLLMModel

from tests.contract.llm_contract import WAIT, LLMContract, LLMSubject
from tests.support.fake_openai import Fail, FakeOpenAI, Stream

KEY_ENV = "CHATCORE_TEST_FAKE_KEY"


def model_for(
    server: FakeOpenAI, name: str = "openai/fake-contract", **options: object
) -> LiteLLMModel:
    settings = LLMSettings.model_validate(
        {
            "model": name,
            "api_base": server.base_url,
            "api_key_env": KEY_ENV,
            "retries": 0,
            "timeout": WAIT,
            "first_token_timeout": WAIT,
            **options,
        }
    )
    return LiteLLMModel(settings)


class TestLiteLLMContract(LLMContract):
    @pytest.fixture
    async def subject(self, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LLMSubject]:
        monkeypatch.setenv(KEY_ENV, "sk-contract-test-key-0123456789")
        async with (
            FakeOpenAI() as fast,
            FakeOpenAI(default=Stream(token_delay=0.05)) as slow,
            FakeOpenAI(default=Stream()) as broken,
        ):
            broken.script(*[Fail(503, "scripted outage")] * 10)

            async def stopped() -> None:
                seen = await slow.wait_for_request(0)
                await seen.disconnected.wait()

            yield LLMSubject(
                llm=model_for(fast),
                slow=model_for(slow),
                stopped=stopped,
                failing=model_for(broken),
            )
