"""The ``chatcore worker`` command line as an operator uses it: ``--check`` on live, stale and
missing workers, the error without Redis, and ``chatcore serve --workers N``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import pytest

from chatcore.events import ReplyCompleted
from tests.support.redis_chat import RedisChat, terminal_events
from tests.support.redis_server import free_port
from tests.support.worker_processes import run_cli, wait_until
from tests.worker.conftest import Deployment

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_a_worker_without_redis_stops_at_once_and_says_why() -> None:
    result = run_cli("worker", env={})
    assert result.returncode == 2
    assert "workers need Redis: set CHATCORE_REDIS_URL" in result.stderr


def test_check_says_when_redis_cannot_be_reached() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli("worker", "--check", env={"CHATCORE_REDIS_URL": url})
    assert result.returncode == 2
    assert "cannot read the workers' heartbeats" in result.stderr


async def test_check_lists_live_workers_and_reports_a_frozen_one_as_stale(
    deployment: Deployment, chat: RedisChat
) -> None:
    env = deployment.env
    nobody = run_cli("worker", "--check", env=env)
    assert (nobody.returncode, nobody.stdout.splitlines()[-1]) == (1, "0 live, 0 stale, 0 listed")

    # A long heartbeat ttl leaves room to see the worker stale before its record expires.
    a = deployment.pool.worker("a", env={"CHATCORE_WORKER__HEARTBEAT_TTL": "10"})
    a.wait_for_log("worker started", timeout=20)
    (worker_id,) = {line["worker_id"] for line in a.lines("worker started")}

    async def listed() -> set[str]:
        return {w.worker_id for w in await chat.heartbeats.workers()}

    deadline = time.monotonic() + 20
    while worker_id not in await listed():
        assert time.monotonic() < deadline, "the worker never beat"
        await asyncio.sleep(0.1)

    live = run_cli("worker", "--check", env=env)
    assert live.returncode == 0, live.stderr
    (row,) = [line.split() for line in live.stdout.splitlines() if line.startswith(worker_id)]
    assert row[2:4] == [str(a.pid), "running"]

    a.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(1.5)  # over twice the 0.5 s heartbeat interval
        stale = run_cli("worker", "--check", "--json", env=env)
    finally:
        a.signal(signal.SIGCONT)
    assert stale.returncode == 1
    report = json.loads(stale.stdout)
    assert report["live"] == 0
    assert [(w["worker_id"], w["state"]) for w in report["workers"]] == [(worker_id, "stale")]
    assert report["workers"][0]["last_beat_age"] > 1.0

    wait_until(
        lambda: run_cli("worker", "--check", env=env).returncode == 0, 20, "the worker to be live"
    )


def _readiness(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            body: dict[str, object] = json.loads(response.read())
            return body
    except (urllib.error.URLError, OSError):
        return None


async def test_serve_with_workers_runs_worker_processes_beside_the_api(
    deployment: Deployment, chat: RedisChat
) -> None:
    port = free_port()
    server = deployment.pool.start(
        "serve",
        "serve",
        "--workers",
        "2",
        "--port",
        str(port),
        env={"CHATCORE_SECRET_KEY": "s" * 48},
    )
    wait_until(
        lambda: (_readiness(port) or {}).get("workers") == 2,
        40,
        "/readyz to report two workers",
    )
    ready = _readiness(port)
    assert ready is not None
    assert (ready["status"], ready["in_process_worker"]) == ("ready", False)

    asked = await chat.ask("Who answers behind the API?")
    records = await chat.wait_terminal(asked, timeout=30)
    (done,) = terminal_events(records, asked.message_id)
    assert isinstance(done, ReplyCompleted)
    children = {line["pid"] for line in server.lines("child process started")}
    assert len(children) == 2

    server.signal(signal.SIGTERM)
    assert server.wait(40) == 0
    assert len(server.lines("worker stopped")) == 2
    assert server.lines("supervisor stopped", exit_code=0)


def test_serve_with_workers_needs_redis() -> None:
    result = run_cli("serve", "--workers", "2", env={})
    assert result.returncode == 2
    assert "--workers needs Redis (CHATCORE_REDIS_URL)" in result.stderr


async def test_dead_letters_are_listed_for_the_operator(
    deployment: Deployment, chat: RedisChat
) -> None:
    env = deployment.env
    empty = run_cli("worker", "--dead-letters", env=env)
    assert (empty.returncode, empty.stdout.splitlines()[-1]) == (0, "0 dead letters")

    asked = await chat.ask("Doomed question")
    (delivery,) = await chat.queue.claim("operator-test", count=1, block=2)
    await chat.queue.dead_letter(delivery, "delivered 6 times without an answer")

    listed = run_cli("worker", "--dead-letters", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["dead_letters"]
    assert (row["session_id"], row["message_id"]) == (asked.session_id, asked.message_id)
    assert (row["attempts"], row["reason"]) == (1, "delivered 6 times without an answer")
    table = run_cli("worker", "--dead-letters", "--limit", "5", env=env).stdout.splitlines()
    assert table[-1] == "1 dead letter"
    assert asked.message_id in table[1]
