"""Settings of the chat model: which model answers, its limits, and the models to fall back on.

The app reads them from the environment with the prefix ``CHATCORE_`` and the nested
delimiter ``__`` (``CHATCORE_LLM__MODEL``, ``CHATCORE_LLM__FALLBACKS='[...]'``) or from its
config file. Validation is strict (``extra="forbid"``), so a misspelt key or a fallback that
is not a list stops the process at start-up with a message naming the problem.

No secret ever lives here: API keys stay in the environment, where LiteLLM reads the usual
``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``GROQ_API_KEY``... by itself; ``api_key_env``
names another variable to read the key from. This module imports nothing heavy (no LiteLLM),
so the API process can validate settings for free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from chatcore_adapters.llm.demo import DEFAULT_DELAY

DEMO_MODEL = "demo"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ModelSettings(BaseModel):
    """One model to call through LiteLLM, with its own limits (a primary or a fallback)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        min_length=1,
        max_length=200,
        description=(
            "LiteLLM model string, provider first: openai/gpt-4o-mini, "
            "anthropic/claude-3-5-haiku-latest, groq/llama-3.1-8b-instant, ollama_chat/llama3.2, "
            "or openai/<name> with api_base for any OpenAI-compatible server."
        ),
    )
    api_base: str | None = Field(
        default=None, description="Base URL of the provider's API (e.g. http://localhost:8000/v1)."
    )
    api_key_env: str | None = Field(
        default=None,
        description=(
            "Name of the environment variable holding the API key, when it is not the "
            "provider's usual one (OPENAI_API_KEY, ...). The key itself never goes in settings."
        ),
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0, description="Longest answer, in tokens.")
    timeout: float = Field(
        default=120.0, gt=0, le=3600, description="Seconds one call may take in total."
    )
    first_token_timeout: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds to wait for the first token of a call."
    )
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a retryable failure (timeout, 429, 5xx) before the first token.",
    )
    retry_backoff: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="First retry delay in seconds; doubles each retry, with jitter.",
    )

    @field_validator("model")
    @classmethod
    def _model_is_one_word(cls, value: str) -> str:
        if value != value.strip() or any(c.isspace() for c in value):
            raise ValueError("the model name must not contain spaces")
        return value

    @field_validator("api_base")
    @classmethod
    def _api_base_is_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("api_base must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "api_base must not carry credentials; put the key in an environment variable "
                "and name it with api_key_env"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _api_key_env_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "api_key_env is the NAME of an environment variable (e.g. MY_PROVIDER_KEY), "
                "not the key itself"
            )
        return value

    @model_validator(mode="after")
    def _first_token_within_total(self) -> ModelSettings:
        if self.first_token_timeout > self.timeout:
            raise ValueError(
                f"first_token_timeout ({self.first_token_timeout}s) must not exceed "
                f"timeout ({self.timeout}s)"
            )
        return self


class LLMSettings(ModelSettings):
    """The chat model of the app: ``model="demo"`` (the default) is the offline demo model;
    anything else is a LiteLLM model string, tried first, then each of ``fallbacks`` in order.
    """

    model: str = Field(
        default=DEMO_MODEL,
        min_length=1,
        max_length=200,
        description='"demo" for the offline demo model, else a LiteLLM model string.',
    )
    fallbacks: tuple[ModelSettings, ...] = Field(
        default=(),
        description='Models to use, in order, when the primary fails: [{"model": "..."}, ...].',
    )
    system_prompt: str | None = Field(
        default=None,
        max_length=20_000,
        description="Operator instructions sent first, before the conversation's own messages.",
    )
    demo_delay: float = Field(
        default=DEFAULT_DELAY,
        ge=0,
        le=5,
        description="Pause of the demo model between tokens, in seconds (0: as fast as it can).",
    )

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _fallbacks_are_a_list(cls, value: Any) -> Any:
        if isinstance(value, str | bytes | dict) or not isinstance(value, Sequence):
            raise PydanticCustomError(
                "fallbacks_not_a_list",
                "fallbacks must be a list of model settings, for example "
                '[{"model": "groq/llama-3.1-8b-instant"}] (as JSON in CHATCORE_LLM__FALLBACKS)',
            )
        # A bare model string is a model with default settings.
        return [{"model": item} if isinstance(item, str) else item for item in value]

    @model_validator(mode="after")
    def _demo_stands_alone(self) -> LLMSettings:
        if self.model == DEMO_MODEL and self.fallbacks:
            raise ValueError(
                "fallbacks need a real primary model: set model (CHATCORE_LLM__MODEL) to a "
                "LiteLLM model such as openai/gpt-4o-mini"
            )
        if any(fallback.model == DEMO_MODEL for fallback in self.fallbacks):
            raise ValueError("the offline demo model cannot be a fallback")
        return self

    @property
    def is_demo(self) -> bool:
        return self.model == DEMO_MODEL

    @property
    def chain(self) -> tuple[ModelSettings, ...]:
        """The models in the order they are tried: the primary, then the fallbacks."""
        return (self, *self.fallbacks)
