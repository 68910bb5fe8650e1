"""The LLM adapters: the offline demo model and chat models through LiteLLM.

``build_llm(settings)`` turns :class:`LLMSettings` into an :class:`chatcore.ports.LLM`.
Nothing here imports LiteLLM: the LiteLLM adapter imports it the first time it is used.

``demo`` is the offline model, ``settings`` the settings of both; ``litellm_adapter`` is the
LiteLLM call, ``failover`` the retries and fallbacks around the calls (also mid-answer),
``repeat_guard`` keeps a continuation from repeating, ``errors`` says what a failure means and
``redaction`` keeps secrets out of the log.
"""

from __future__ import annotations

from chatcore.ports import LLM
from chatcore_adapters.llm.demo import DEMO_NAME, DemoLLM
from chatcore_adapters.llm.settings import DEMO_MODEL, LLMSettings, ModelSettings

__all__ = ["DEMO_MODEL", "DEMO_NAME", "DemoLLM", "LLMSettings", "ModelSettings", "build_llm"]


def build_llm(settings: LLMSettings | None = None) -> LLM:
    """The chat model ``settings`` describe: the demo model for ``model="demo"`` (the
    default), else a :class:`~chatcore_adapters.llm.litellm_adapter.LiteLLMModel`."""
    settings = settings if settings is not None else LLMSettings()
    if settings.is_demo:
        return DemoLLM(delay=settings.demo_delay, system_prompt=settings.system_prompt)
    from chatcore_adapters.llm.litellm_adapter import LiteLLMModel

    return LiteLLMModel(settings)
