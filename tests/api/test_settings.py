"""Settings: environment, config file and flags; a malformed configuration stops the process
at start-up with a message naming the setting; secrets never show."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from chatcore_api.cli import main
from chatcore_api.settings import (
    SettingsError,
    load_settings,
    signing_keys,
    unknown_environment,
)

KEY = "k" * 40


def test_the_defaults_are_the_embedded_mode_on_localhost() -> None:
    settings = load_settings(environ={})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.backend == "sqlite" and settings.redis_url is None
    assert settings.database_path == settings.data_dir / "chatcore.db"
    assert settings.worker.enabled is True
    assert settings.llm.is_demo
    assert settings.token_ttl == timedelta(days=7)
    assert settings.allowed_origins == []
    assert (settings.max_frame_bytes, settings.max_message_chars) == (65536, 8000)


def test_the_data_directory_and_the_storage_are_settings() -> None:
    chosen = load_settings(environ={"CHATCORE_DATA_DIR": "/srv/chat", "CHATCORE_STORAGE": "memory"})
    assert chosen.data_dir == Path("/srv/chat") and chosen.backend == "memory"
    with_redis = load_settings(
        environ={"CHATCORE_REDIS_URL": "redis://h", "CHATCORE_SECRET_KEY": KEY}
    )
    assert with_redis.backend == "redis"
    with pytest.raises(SettingsError, match="storage is sqlite but redis_url is set"):
        load_settings(
            environ={
                "CHATCORE_REDIS_URL": "redis://h",
                "CHATCORE_SECRET_KEY": KEY,
                "CHATCORE_STORAGE": "sqlite",
            }
        )
    with pytest.raises(SettingsError, match="storage is redis but redis_url is not set"):
        load_settings(environ={"CHATCORE_STORAGE": "redis"})


def test_the_embedded_default_keeps_its_signing_key_in_the_data_directory(
    tmp_path: Path,
) -> None:
    settings = load_settings(environ={"CHATCORE_DATA_DIR": str(tmp_path)})
    (key,), per_process = signing_keys(settings)
    assert per_process is False and len(key) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert signing_keys(settings) == ([key], False)  # the same key next time
    (tmp_path / "secret_key").chmod(0o644)
    with pytest.raises(SettingsError, match="may be read by other users"):
        signing_keys(settings)
    memory = load_settings(environ={"CHATCORE_STORAGE": "memory"})
    assert signing_keys(memory)[1] is True  # a key per process: sessions die with it
    given = "k" * 40
    rotated = load_settings(
        environ={"CHATCORE_DATA_DIR": str(tmp_path), "CHATCORE_SECRET_KEYS": f"{given},{'j' * 40}"}
    )
    assert signing_keys(rotated) == ([given.encode(), b"j" * 40], False)  # the file is unused


def test_environment_variables_set_nested_values() -> None:
    settings = load_settings(
        environ={
            "CHATCORE_PORT": "9000",
            "CHATCORE_WORKER__CONCURRENCY": "4",
            "CHATCORE_LLM__DEMO_DELAY": "0",
            "CHATCORE_TOKEN_TTL": "3600",
            "CHATCORE_ALLOWED_ORIGINS": "https://a.example, http://b.example:8080/",
            "CHATCORE_LOG_LEVEL": "DEBUG",
        }
    )
    assert settings.port == 9000 and settings.worker.concurrency == 4
    assert settings.llm.demo_delay == 0
    assert settings.token_ttl == timedelta(hours=1)
    assert settings.allowed_origins == ["https://a.example", "http://b.example:8080"]
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"CHATCORE_PORT": "eighty"}, ["port", "CHATCORE_PORT"]),
        ({"CHATCORE_WORKER__CONCURENCY": "4"}, ["worker.concurency", "unknown setting"]),
        ({"CHATCORE_LLM__MODLE": "x"}, ["llm.modle", "unknown setting"]),
        ({"CHATCORE_MAX_FRAME_BYTES": "10"}, ["max_frame_bytes"]),
        ({"CHATCORE_ALLOWED_ORIGINS": "*"}, ["allowed_origins", "wildcard"]),
        ({"CHATCORE_ALLOWED_ORIGINS": "chat.example.com"}, ["allowed_origins", "origin"]),
        ({"CHATCORE_REDIS_URL": "http://localhost"}, ["redis_url", "redis://"]),
        ({"CHATCORE_REDIS_URL": "redis://localhost"}, ["CHATCORE_SECRET_KEY", "required"]),
        ({"CHATCORE_SECRET_KEY": "short"}, ["secret_key", "32"]),
        ({"CHATCORE_LOG_FORMAT": "xml"}, ["log_format"]),
        ({"CHATCORE_WEB_DIR": "/no/such/dir"}, ["web_dir", "not a directory"]),
        ({"CHATCORE_LLM__FALLBACKS": '[{"model": "groq/x"}]'}, ["llm", "fallbacks"]),
        ({"CHATCORE_REDIS__RECLAIM_AFTER": "2"}, ["keepalive_interval", "reclaim_after"]),
        ({"CHATCORE_WORKER__LEASE_TTL": "8"}, ["keepalive_interval", "lease_ttl"]),
        ({"CHATCORE_RETENTION__IDLE_TTL": "soon"}, ["retention.idle_ttl"]),
        ({"CHATCORE_RETENTION__IDLE_TTL": "3600"}, ["retention.idle_ttl", "token_ttl"]),
        (
            {"CHATCORE_RETENTION__MAX_EVENTS": "500", "CHATCORE_RETENTION__REPLY_RESERVE": "500"},
            ["reply_reserve", "max_events"],
        ),
    ],
)
def test_a_malformed_setting_fails_with_a_message_naming_it(
    environ: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(SettingsError) as failed:
        load_settings(environ=environ)
    message = str(failed.value)
    for name in names:
        assert name in message, message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("864000", 864000.0), ("P10D", 864000.0), ("null", None), ("never", None), ("", None)],
)
def test_retention_is_seconds_an_iso_duration_or_never(value: str, seconds: float | None) -> None:
    settings = load_settings(environ={"CHATCORE_RETENTION__IDLE_TTL": value})
    assert settings.retention.idle_ttl == seconds
    assert settings.service_settings.limits.max_events == 100_000
    assert settings.cache_ttl == settings.redis.cache_ttl  # (an hour: shorter than both)


def test_an_empty_web_dir_turns_the_web_client_off() -> None:
    assert load_settings(environ={"CHATCORE_WEB_DIR": ""}).web_dir is None


def test_secrets_never_show_in_repr_or_errors() -> None:
    settings = load_settings(
        environ={
            "CHATCORE_SECRET_KEY": KEY,
            "CHATCORE_REDIS_URL": "redis://user:hunter2@redis.internal:6379/0",
        }
    )
    shown = repr(settings) + str(settings) + json.dumps(settings.model_dump(mode="json"))
    assert KEY not in shown and "hunter2" not in shown
    assert settings.redis_url_display == "redis://user:***@redis.internal:6379/0"
    with pytest.raises(SettingsError) as failed:
        load_settings(environ={"CHATCORE_SECRET_KEY": "too-short-secret"})
    assert "too-short-secret" not in str(failed.value)
    with pytest.raises(SettingsError) as failed:
        load_settings(environ={"CHATCORE_REDIS_URL": "http://user:hunter2@host"})
    assert "redis_url" in str(failed.value) and "hunter2" not in str(failed.value)


def test_a_toml_or_json_config_file_is_read_below_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "chatcore.toml"
    toml.write_text('port = 9100\nhost = "0.0.0.0"\n[worker]\nconcurrency = 3\n')
    settings = load_settings(toml, environ={"CHATCORE_PORT": "9200"})
    assert (settings.host, settings.port, settings.worker.concurrency) == ("0.0.0.0", 9200, 3)
    assert load_settings(toml, environ={}, port=9300).port == 9300
    as_json = tmp_path / "chatcore.json"
    as_json.write_text(json.dumps({"max_message_chars": 100, "llm": {"demo_delay": 0.5}}))
    from_env = load_settings(environ={"CHATCORE_CONFIG": str(as_json)})
    assert from_env.max_message_chars == 100 and from_env.llm.demo_delay == 0.5


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.toml", "port = [", "not valid"),
        ("bad.json", "{", "not valid"),
        ("list.json", "[1]", "table/object"),
        ("extra.toml", "prot = 1\n", "prot (CHATCORE_PROT): unknown setting"),
        ("secret.toml", f'secret_key = "{KEY}"\n', "environment only"),
        ("nested.toml", "[worker]\nenabled = 'maybe'\n", "worker.enabled"),
    ],
)
def test_a_malformed_config_file_fails_clearly(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SettingsError) as failed:
        load_settings(path, environ={})
    assert expected in str(failed.value)
    assert KEY not in str(failed.value)


def test_a_missing_config_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the config file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_serve_refuses_to_start_on_bad_settings_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "chatcore.toml"
    path.write_text("max_frame_bytes = 'big'\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "max_frame_bytes" in err and "invalid settings" in err


def test_the_cli_rejects_malformed_flags() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "eighty"])
    assert exited.value.code == 2


def test_misspelt_top_level_variables_are_found() -> None:
    environ = {
        "CHATCORE_PROT": "9000",
        "CHATCORE_PORT": "9000",
        "CHATCORE_WORKER__ENABLED": "true",
        "CHATCORE_CONFIG": "x.toml",
        "CHATCORE_REQUIRE_REDIS": "1",
        "CHATCORE_TEST_REDIS_URL": "redis://x",
        "CHATCORE_E2E_URL": "http://127.0.0.1:1",
        "CHATCORE_EVENT_LOOP": "asyncio",
        "CHATCORE_EVENT_LOOPS": "asyncio",
        "HOME": "/root",
    }
    assert unknown_environment(environ) == ["CHATCORE_EVENT_LOOPS", "CHATCORE_PROT"]


def test_the_event_loop_variable_is_not_refused() -> None:
    # Read by chatcore_api.loops before the settings (the benchmarks' asyncio-loop runs set it).
    settings = load_settings(
        environ={"CHATCORE_EVENT_LOOP": "asyncio", "CHATCORE_STORAGE": "memory"}
    )
    assert settings.backend == "memory"


def test_a_misspelt_top_level_variable_stops_the_start_up_naming_it() -> None:
    # One underscore instead of two: it would have been ignored and the demo model served.
    with pytest.raises(SettingsError) as failed:
        load_settings(environ={"CHATCORE_LLM_MODEL": "openai/gpt-4o-mini"})
    lines = str(failed.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert len(lines) == 2 and "CHATCORE_LLM_MODEL" in lines[1]
    assert "CHATCORE_LLM__MODEL" in lines[1], "it says how a nested setting is spelt"


@pytest.mark.parametrize("value", ["notjson", "[{'model': 'groq/x'}]", "groq/x, openai/y"])
def test_a_value_that_must_be_json_and_is_not_stops_the_start_up_naming_it(value: str) -> None:
    with pytest.raises(SettingsError) as failed:
        load_settings(
            environ={"CHATCORE_LLM__MODEL": "openai/gpt-4o-mini", "CHATCORE_LLM__FALLBACKS": value}
        )
    lines = str(failed.value).splitlines()
    assert len(lines) == 2
    assert "llm.fallbacks (CHATCORE_LLM__FALLBACKS): not valid JSON" in lines[1]


def test_the_serve_command_stops_on_both_with_one_line_each(tmp_path: Path) -> None:
    from tests.support.worker_processes import run_cli

    done = run_cli(
        "serve",
        "--port",
        "0",
        env={"CHATCORE_LLM_MODEL": "openai/gpt-4o-mini", "CHATCORE_LLM__FALLBACKS": "nope"},
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "chatcore: invalid settings:",
        "- CHATCORE_LLM_MODEL: names no setting (nested settings take two underscores, e.g. "
        "CHATCORE_LLM__MODEL)",
        "- llm.fallbacks (CHATCORE_LLM__FALLBACKS): not valid JSON (Expecting value at "
        "character 0)",
    ]


@pytest.mark.parametrize(
    ("environ", "secrets"),
    [
        ({"CHATCORE_LLM__API_BASE": "http://bob:secret@host"}, ["bob", "secret"]),
        (
            {
                "CHATCORE_LLM__MODEL": "openai/x",
                "CHATCORE_LLM__FALLBACKS": json.dumps(
                    [{"model": "y", "api_base": "https://carol:pa55word@proxy.example/v1"}]
                ),
            },
            ["carol", "pa55word"],
        ),
        ({"CHATCORE_LLM__MODEL": "sk-proj-abcdefghijklmnop1234 x"}, ["abcdefghijklmnop1234"]),
        ({"CHATCORE_LLM__API_BASE": "ftp://host/?api_key=live-7f3a9c"}, ["live-7f3a9c"]),
        ({"CHATCORE_ALLOWED_ORIGINS": "https://dave:hunter2@app.example"}, ["hunter2"]),
    ],
)
def test_a_settings_error_never_prints_a_credential(
    environ: dict[str, str], secrets: list[str]
) -> None:
    with pytest.raises(SettingsError) as failed:
        load_settings(environ=environ)
    message = str(failed.value)
    assert "invalid settings" in message
    for secret in secrets:
        assert secret not in message, message


def test_redaction_keeps_what_is_not_a_credential() -> None:
    from chatcore_api.redaction import redact

    text = "llm.model: the model name must not contain spaces (got 'anthropic/claude-3-5-haiku')"
    assert redact(text) == text
    assert redact("http://bob:secret@host:8000/v1") == "http://***@host:8000/v1"
    assert redact("Authorization: Bearer abcdefghijklmnop") == "Authorization: Bearer ***"
    assert redact("key " + "Ab1" * 12) == "key ***"
    assert redact("x" * 40) == "x" * 40, "a run without digits is not a key"
