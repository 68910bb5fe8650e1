"""LLM settings: defaults, environment variables, strict validation, no secrets."""

from __future__ import annotations

import os

import pytest
from chatcore_adapters.llm import DemoLLM, LLMSettings, ModelSettings, build_llm
from chatcore_adapters.llm.litellm_adapter import LiteLLMModel
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    """How the app reads its settings: prefix CHATCORE_, nested delimiter __."""

    model_config = SettingsConfigDict(env_prefix="CHATCORE_", env_nested_delimiter="__")

    llm: LLMSettings = LLMSettings()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHATCORE_"):
            monkeypatch.delenv(name)


def test_the_default_is_the_offline_demo_model() -> None:
    settings = LLMSettings()

    assert settings.is_demo
    assert settings.fallbacks == ()
    llm = build_llm(settings)
    assert isinstance(llm, DemoLLM)
    assert "demo" in llm.name
    assert isinstance(build_llm(), DemoLLM)


def test_a_litellm_model_builds_the_litellm_adapter() -> None:
    llm = build_llm(LLMSettings(model="groq/llama-3.1-8b-instant"))

    assert isinstance(llm, LiteLLMModel)
    assert llm.name == "groq/llama-3.1-8b-instant"


def test_environment_variables_configure_the_model_and_its_fallbacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATCORE_LLM__MODEL", "openai/gpt-4o-mini")
    monkeypatch.setenv("CHATCORE_LLM__TEMPERATURE", "0.2")
    monkeypatch.setenv("CHATCORE_LLM__FIRST_TOKEN_TIMEOUT", "5")
    monkeypatch.setenv("CHATCORE_LLM__RETRIES", "1")
    monkeypatch.setenv(
        "CHATCORE_LLM__FALLBACKS",
        '[{"model": "groq/llama-3.1-8b-instant", "timeout": 30}, "ollama_chat/llama3.2"]',
    )

    llm = AppSettings().llm

    assert llm.model == "openai/gpt-4o-mini"
    assert llm.temperature == 0.2
    assert llm.first_token_timeout == 5
    assert llm.retries == 1
    assert [f.model for f in llm.fallbacks] == ["groq/llama-3.1-8b-instant", "ollama_chat/llama3.2"]
    assert llm.fallbacks[0].timeout == 30
    assert llm.fallbacks[1] == ModelSettings(model="ollama_chat/llama3.2")
    assert [t.model for t in llm.chain] == [
        "openai/gpt-4o-mini",
        "groq/llama-3.1-8b-instant",
        "ollama_chat/llama3.2",
    ]


def test_a_config_file_shape_validates_too() -> None:
    settings = LLMSettings.model_validate(
        {
            "model": "openai/my-model",
            "api_base": "http://localhost:8000/v1",
            "api_key_env": "MY_SERVER_KEY",
            "fallbacks": [{"model": "anthropic/claude-3-5-haiku-latest", "max_tokens": 512}],
        }
    )
    assert settings.fallbacks[0].max_tokens == 512


def test_an_unknown_key_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATCORE_LLM__MODLE", "openai/gpt-4o-mini")

    with pytest.raises(ValidationError, match="modle"):
        AppSettings()


def test_an_unknown_key_in_a_fallback_fails() -> None:
    with pytest.raises(ValidationError, match=r"fallbacks\.0\.tmeout"):
        LLMSettings.model_validate(
            {"model": "openai/gpt-4o-mini", "fallbacks": [{"model": "groq/x", "tmeout": 3}]}
        )


@pytest.mark.parametrize("value", ['{"model": "groq/llama-3.1-8b-instant"}', '"groq/x"', "3"])
def test_fallbacks_that_are_not_a_list_fail_with_a_clear_message(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATCORE_LLM__MODEL", "openai/gpt-4o-mini")
    monkeypatch.setenv("CHATCORE_LLM__FALLBACKS", value)

    with pytest.raises(ValidationError, match="fallbacks must be a list of model settings"):
        AppSettings()


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"model": "demo", "fallbacks": [{"model": "groq/x"}]}, "need a real primary model"),
        ({"model": "openai/x", "fallbacks": ["demo"]}, "cannot be a fallback"),
        ({"model": "openai/gpt 4o"}, "must not contain spaces"),
        ({"model": ""}, "at least 1 character"),
        ({"model": "openai/x", "api_base": "localhost:8000"}, "http:// or https://"),
        ({"model": "openai/x", "api_base": "https://u:p@example.test/v1"}, "credentials"),
        ({"model": "openai/x", "api_key_env": "sk-abc123secret"}, "NAME of an environment"),
        ({"model": "openai/x", "timeout": 5, "first_token_timeout": 10}, "must not exceed"),
        ({"model": "openai/x", "timeout": 0}, "greater than 0"),
        ({"model": "openai/x", "retries": -1}, "greater than or equal to 0"),
        ({"model": "openai/x", "temperature": 3}, "less than or equal to 2"),
        ({"model": "openai/x", "api_key": "sk-abc"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_are_refused(options: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        LLMSettings.model_validate(options)


def test_settings_hold_no_secret_only_the_name_of_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_SERVER_KEY", "sk-very-secret-value-123456")
    settings = LLMSettings(model="openai/x", api_key_env="MY_SERVER_KEY")

    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "sk-very-secret-value-123456" not in shown
    assert "MY_SERVER_KEY" in shown


def test_settings_are_immutable() -> None:
    settings = LLMSettings()
    with pytest.raises(ValidationError):
        settings.model = "openai/gpt-4o-mini"  # type: ignore[misc]
