"""How ``chatcore worker`` reads its settings and flags, and how ``--check`` judges heartbeats
(in-process: no Redis, no child processes)."""

from __future__ import annotations

import argparse
import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest

from chatcore.ports import WorkerStatus
from chatcore_adapters.bootstrap import bootstrap, load_llm, new_worker_id, redis_settings
from chatcore_adapters.llm import DemoLLM
from chatcore_adapters.redis import RedisWorkQueue
from chatcore_api.settings import ApiSettings, SettingsError, load_settings
from chatcore_api.worker_health import assess, exit_code, render_json, render_table
from chatcore_api.worker_main import (
    add_worker_arguments,
    child_arguments,
    flag_overrides,
    load_worker_settings,
    run_worker_command,
    worker_children,
)

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
REDIS = {"CHATCORE_REDIS_URL": "redis://127.0.0.1:1/0", "CHATCORE_SECRET_KEY": "k" * 40}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    return parser.parse_args(argv)


def settings(**env: str) -> ApiSettings:
    return load_settings(environ={**REDIS, **env})


def worker_settings(*argv: str, **env: str) -> ApiSettings:
    """What ``chatcore worker <argv>`` runs with, in an environment of ``env``."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("CHATCORE_")]:
            mp.delenv(name)
        for name, value in {**REDIS, **env}.items():
            mp.setenv(name, value)
        return load_worker_settings(None, flag_overrides(parse(*argv)))


def test_the_worker_process_is_built_from_the_app_settings() -> None:
    config = worker_settings(
        CHATCORE_REDIS__PREFIX="p:",
        CHATCORE_REDIS__RECLAIM_AFTER="12",
        CHATCORE_WORKER__CONCURRENCY="3",
        CHATCORE_WORKER__LEASE_TTL="20",
        CHATCORE_WORKER__MAX_ATTEMPTS="7",
        CHATCORE_WORKER__SHUTDOWN_GRACE="4",
        CHATCORE_WORKER__SWEEP_INTERVAL="6",
        CHATCORE_LLM__DEMO_DELAY="0.5",
    )
    core = bootstrap(config, client_name="chatcore-worker", max_block=config.worker.claim_block)
    worker = core.worker("w1")
    assert isinstance(core.queue, RedisWorkQueue)
    assert core.queue.reclaim_after == 12.0
    assert core.generator.settings.lease_ttl == 20.0
    assert (worker.settings.concurrency, worker.settings.max_attempts) == (3, 7)
    assert worker.settings.sweep_interval == 6.0
    assert config.worker.shutdown_grace == 4.0
    assert core.redis is not None
    assert core.redis.settings.prefix == "p:"
    assert core.redis.settings.url == "redis://127.0.0.1:1/0"
    assert isinstance(core.llm, DemoLLM)
    assert config.llm.demo_delay == 0.5


def test_flags_override_the_settings() -> None:
    config = worker_settings(
        "--concurrency", "9", "--reclaim-after", "40", "--grace", "1.5",
        CHATCORE_WORKER__CONCURRENCY="3",
    )  # fmt: skip
    assert config.worker.concurrency == 9
    assert config.redis.reclaim_after == 40.0
    assert config.worker.shutdown_grace == 1.5


def test_the_socket_timeout_outlasts_the_claim_block() -> None:
    config = worker_settings("--claim-block", "7")
    redis = redis_settings(config, client_name="chatcore-worker", max_block=7.0)
    assert redis.max_block == 7.0
    assert redis.socket_timeout > config.worker.claim_block


def test_a_worker_without_redis_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("CHATCORE_")]:
        monkeypatch.delenv(name)
    assert run_worker_command(parse()) == 2
    assert "workers need Redis: set CHATCORE_REDIS_URL" in capsys.readouterr().err


def test_a_keepalive_too_slow_for_the_reclaim_timeout_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"keepalive_interval.*must be at most half"):
        worker_settings(CHATCORE_WORKER__KEEPALIVE_INTERVAL="20")


def test_a_worker_does_not_need_the_api_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATCORE_SECRET_KEY", raising=False)
    monkeypatch.setenv("CHATCORE_REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(SettingsError, match="CHATCORE_SECRET_KEY is required"):
        load_settings()
    assert load_worker_settings(None).redis_url is not None


def test_supervised_children_get_the_same_flags_but_not_processes() -> None:
    args = parse("--processes", "3", "--concurrency", "2", "--log-level", "debug")
    assert child_arguments(args) == ["--concurrency", "2", "--log-level", "debug"]
    children = worker_children(3, args)
    assert [c.name for c in children] == ["worker-1", "worker-2", "worker-3"]
    argv = children[0].argv
    assert argv[1:4] == ("-m", "chatcore_api", "worker")
    assert "--processes" not in argv
    assert argv[-2] == "--supervised-by"


def test_worker_ids_name_the_host_and_process_and_are_unique() -> None:
    ids = {new_worker_id() for _ in range(50)}
    assert len(ids) == 50
    for worker_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9.-]+-\d+-[0-9a-f]{6}", worker_id)
    assert new_worker_id("api").startswith("api-")


def test_a_model_factory_replaces_the_llm_settings() -> None:
    factory = settings(CHATCORE_WORKER__LLM_FACTORY="tests.worker.models:crash_on_poison")
    assert load_llm(factory).name == "crash-on-poison"
    assert isinstance(load_llm(settings()), DemoLLM)
    with pytest.raises(TypeError, match="did not return"):
        load_llm(settings(CHATCORE_WORKER__LLM_FACTORY="os:getcwd"))


def status(worker_id: str, age: float, **fields: object) -> WorkerStatus:
    return WorkerStatus.model_validate(
        {
            "worker_id": worker_id,
            "started_at": NOW - timedelta(minutes=5),
            "beat_at": NOW - timedelta(seconds=age),
            "host": "h1",
            "pid": 42,
            **fields,
        }
    )


def test_a_worker_that_missed_a_beat_is_stale_and_not_live() -> None:
    health = assess(
        [
            status("fresh", 0.5, completed=3),
            status("late", 5.0),
            status("leaving", 0.1, state="stopping"),
        ],
        now=NOW,
        stale_after=4.0,
    )
    states = {h.status.worker_id: (h.state, h.live) for h in health}
    assert states == {
        "fresh": ("running", True),
        "late": ("stale", False),
        "leaving": ("stopping", False),
    }
    assert exit_code(health) == 0
    assert exit_code([h for h in health if h.status.worker_id != "fresh"]) == 1
    assert exit_code([]) == 1


def test_the_check_prints_one_line_per_worker_and_a_summary() -> None:
    health = assess(
        [status("w-1", 0.5, completed=3, failed=1, in_flight=("s/m",)), status("w-2", 9.0)],
        now=NOW,
        stale_after=4.0,
    )
    lines = render_table(health).splitlines()
    assert lines[0].split() == [
        "WORKER", "HOST", "PID", "STATE", "IN-FLIGHT", "LAST", "BEAT", "COMPLETED", "FAILED",
    ]  # fmt: skip
    assert lines[1].split() == ["w-1", "h1", "42", "running", "1", "0.5s", "ago", "3", "1"]
    assert lines[2].split()[3] == "stale"
    assert lines[-1] == "1 live, 1 stale, 2 listed"
    data = json.loads(render_json(health))
    assert data["live"] == 1
    assert [w["state"] for w in data["workers"]] == ["running", "stale"]
    assert data["workers"][1]["last_beat_age"] == 9.0


def test_the_check_of_an_empty_deployment_says_so() -> None:
    assert render_table([]).splitlines()[-1] == "0 live, 0 stale, 0 listed"
    assert json.loads(render_json([])) == {"live": 0, "queue": [], "workers": []}


def test_the_check_shows_every_queue_shard() -> None:
    shards = [("{chatcore:work:0.1}", 3, 1), ("{chatcore:work:1.4}", 0, 0)]
    lines = render_table([], shards).splitlines()
    assert lines[1:3] == [
        "queue {chatcore:work:0.1}: 3 waiting, 1 being answered",
        "queue {chatcore:work:1.4}: 0 waiting, 0 being answered",
    ]
    assert json.loads(render_json([], shards))["queue"] == [
        {"stream": "{chatcore:work:0.1}", "waiting": 3, "pending": 1},
        {"stream": "{chatcore:work:1.4}", "waiting": 0, "pending": 0},
    ]


def test_the_worker_redis_client_never_waits_silently() -> None:
    from chatcore_adapters.redis import create_client

    config = worker_settings("--claim-block", "3")
    client = create_client(redis_settings(config, client_name="w", max_block=3.0))
    kwargs = client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert kwargs["socket_timeout"] > config.worker.claim_block
    assert kwargs["socket_keepalive"] is True
    assert kwargs["health_check_interval"] > 0
    assert kwargs["socket_connect_timeout"] > 0


def test_a_worker_with_the_demo_model_never_imports_litellm() -> None:
    import subprocess
    import sys

    from tests.support.worker_processes import checkout_env

    code = (
        "import sys\n"
        "from chatcore_api.cli import main\n"
        "from chatcore_adapters.bootstrap import bootstrap\n"
        "from chatcore_adapters.settings import ChatcoreSettings\n"
        "bootstrap(ChatcoreSettings(redis_url='redis://127.0.0.1:1/0')).worker('w')\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=checkout_env({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_api_and_the_worker_processes_build_the_same_worker() -> None:
    """One composition root: the in-process worker of ``chatcore serve`` and a ``chatcore
    worker`` process get every worker setting, not only the ones someone remembered to copy."""
    from chatcore_api.container import Container

    env = {
        "CHATCORE_WORKER__FLUSH_INTERVAL": "0.002",
        "CHATCORE_WORKER__SWEEP_INTERVAL": "5",
        "CHATCORE_WORKER__INTENT_AGE": "8",
        "CHATCORE_WORKER__CANCEL_POLL_INTERVAL": "0.1",
    }
    app_settings = settings(**env)
    in_process = Container(settings=app_settings).worker()
    process = bootstrap(worker_settings(**env)).worker("w")
    for loop in (in_process, process):
        assert loop.settings.sweep_interval == 5.0
        assert loop.settings.intent_age == 8.0
        assert loop.generator.settings.flush_interval == 0.002
        assert loop.generator.settings.cancel_poll_interval == 0.1
    assert settings().worker.flush_interval == 0.015
    with pytest.raises(SettingsError, match="flush_interval"):
        settings(CHATCORE_WORKER__FLUSH_INTERVAL="-1")


def test_the_in_process_worker_uses_the_model_factory_too() -> None:
    from chatcore_api.container import Container

    container = Container(
        settings=load_settings(
            environ={
                "CHATCORE_STORAGE": "memory",
                "CHATCORE_WORKER__LLM_FACTORY": "tests.worker.models:crash_on_poison",
            }
        )
    )
    assert container.core().llm.name == "crash-on-poison"
    memory = load_settings(environ={"CHATCORE_STORAGE": "memory"})
    assert isinstance(Container(settings=memory).core().llm, DemoLLM)
