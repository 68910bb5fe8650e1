"""The LLM contract, run against the offline demo model."""

from __future__ import annotations

import pytest
from chatcore_adapters.llm import DemoLLM

from tests.contract.llm_contract import LLMContract, LLMSubject


class TestDemoLLMContract(LLMContract):
    @pytest.fixture
    def subject(self) -> LLMSubject:
        return LLMSubject(llm=DemoLLM(delay=0), slow=DemoLLM(delay=0.05))
