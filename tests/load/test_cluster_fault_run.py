"""The short load test with faults on a Redis Cluster (``python -m benchmarks.faults --short
--cluster``), as CI runs it: three masters with a replica each, durable writes, the work queue
in one shard per master; workers SIGKILLed, an API process SIGKILLed, and one master SIGKILLed
in the middle of the load, its replica promoted by the Cluster itself. Afterwards every
acknowledged message has exactly one terminal reply and no client saw a gap or a duplicate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.load.test_short_fault_run import REPO, _env
from tests.support.redis_server import redis_server_binary

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]

HARD_LIMIT = 240.0


def test_no_message_is_lost_when_a_cluster_master_fails_over(tmp_path: Path) -> None:
    redis_server_binary()
    out = tmp_path / "faults.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faults", "--short", "--cluster", "--json", str(out)],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=HARD_LIMIT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"the cluster fault run took over {HARD_LIMIT:.0f}s:\n{output}")
    assert out.exists(), output
    result = json.loads(out.read_text())
    logs, clients, failover = result["from_logs"], result["from_clients"], result["failover"]

    assert result["worker_kills"] >= 2 and result["api_restarts"] == 1, output
    assert failover["sessions_on_the_dead_master"] >= 1, output
    assert failover["promoted_after_s"] is not None, output
    assert failover["served_again_s"] is not None, output
    assert logs["acked"] >= 100, output

    for bad in (
        "messages_without_terminal_bad",
        "messages_with_several_terminals_bad",
        "terminals_without_message_bad",
        "acked_but_not_in_log_bad",
        "incomplete_replies_in_log_bad",
        "sessions_without_log_bad",
        "client_text_differs_from_log_bad",
        "client_status_differs_from_log_bad",
    ):
        assert logs.get(bad, 0) == 0, output
    for bad in (
        "cursor_violations",
        "duplicate_terminals",
        "missing_terminals",
        "bad_replies",
        "turn_timeouts",
    ):
        assert clients[bad] == 0, output
    assert result["ok"], output
    assert process.returncode == 0, output
