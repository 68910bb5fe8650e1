"""The short load test with faults (``python -m benchmarks.faults --short``), as CI runs it.

50 sessions chat for 50 s against two API processes and two worker processes; workers are
SIGKILLed and restarted at random, and one API process is SIGKILLed and restarted halfway.
This test checks the counts, not the speed: every acknowledged message got exactly one terminal
reply event (read from the Redis logs directly and from what the clients received), no client
saw a gap or a duplicate, and the text each client assembled is the text in the log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.redis_server import redis_server_binary

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# The run itself takes about a minute; this bounds it whatever happens.
HARD_LIMIT = 150.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATCORE_", "BENCH_"))}
    paths = [REPO / "src", REPO / "src" / "adapters", REPO / "apps" / "api", REPO]
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_no_message_is_lost_or_answered_twice_while_processes_die(tmp_path: Path) -> None:
    redis_server_binary()  # skips (or fails with CHATCORE_REQUIRE_REDIS=1) without redis-server
    out = tmp_path / "faults.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faults", "--short", "--json", str(out)],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=HARD_LIMIT)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the run stop everything it started (redis, APIs, workers, clients).
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        pytest.fail(f"the short fault run took over {HARD_LIMIT:.0f}s:\n{output}")
    assert out.exists(), output
    result = json.loads(out.read_text())
    logs, clients = result["from_logs"], result["from_clients"]

    # Faults really happened, and messages really flowed.
    assert result["worker_kills"] >= 2, output
    assert result["api_restarts"] == 1, output
    assert logs["acked"] >= 100, output
    assert clients["reconnects"] >= 1, output

    # From the Redis logs: one terminal event per recorded message, every ack recorded.
    assert logs["messages_in_logs"] >= logs["acked"], output
    assert logs.get("messages_without_terminal_bad", 0) == 0, output
    assert logs.get("messages_with_several_terminals_bad", 0) == 0, output
    assert logs.get("terminals_without_message_bad", 0) == 0, output
    assert logs.get("acked_but_not_in_log_bad", 0) == 0, output
    assert logs.get("incomplete_replies_in_log_bad", 0) == 0, output
    assert logs.get("sessions_without_log_bad", 0) == 0, output

    # From the clients: no duplicate, no gap, one terminal each, the same text as the log.
    assert clients["cursor_violations"] == 0, output
    assert clients["duplicate_terminals"] == 0, output
    assert clients["missing_terminals"] == 0, output
    assert clients["bad_replies"] == 0, output
    assert clients["turn_timeouts"] == 0, output
    assert logs["replies_compared"] >= logs["acked"], output
    assert logs.get("client_text_differs_from_log_bad", 0) == 0, output
    assert logs.get("client_status_differs_from_log_bad", 0) == 0, output

    assert result["ok"], output
    assert process.returncode == 0, output
