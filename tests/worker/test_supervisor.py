"""The Supervisor on tiny real child processes: restarts with backoff, reset, stop, kill."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatcore_api.supervisor import ChildSpec, RestartPolicy, Supervisor, describe_exit

PY = sys.executable


def child(name: str, code: str) -> ChildSpec:
    return ChildSpec(name, (PY, "-c", code))


@contextmanager
def supervising(sup: Supervisor) -> Iterator[dict[str, int]]:
    """Run ``sup`` in a thread; stop it on the way out (bounded) and give its exit code."""
    stop = threading.Event()
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", sup.run(stop)))
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout=sup.stop_timeout + 10)
        assert not thread.is_alive(), "the supervisor did not stop"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_a_child_that_keeps_crashing_is_restarted_with_growing_delays() -> None:
    sup = Supervisor(
        [child("crasher", "import sys; sys.exit(3)")],
        policy=RestartPolicy(initial=0.05, maximum=0.2, healthy_after=60),
        rand=lambda: 1.0,  # no jitter: each delay is exactly its ceiling
        poll_interval=0.01,
    )
    state = sup.children["crasher"]
    with supervising(sup):
        wait_until(lambda: len(state.delays) >= 4, 20, "four restarts")
    assert state.delays[:4] == [0.05, 0.1, 0.2, 0.2]
    assert state.exit_codes[:4] == [3, 3, 3, 3]


def test_jitter_keeps_each_delay_between_half_and_all_of_its_ceiling() -> None:
    sup = Supervisor(
        [child("crasher", "raise SystemExit(1)")],
        policy=RestartPolicy(initial=0.04, maximum=0.08, healthy_after=60),
        poll_interval=0.01,
    )
    state = sup.children["crasher"]
    with supervising(sup):
        wait_until(lambda: len(state.delays) >= 3, 20, "three restarts")
    ceilings = [0.04, 0.08, 0.08]
    for delay, ceiling in zip(state.delays, ceilings, strict=False):
        assert ceiling / 2 <= delay <= ceiling


def test_the_backoff_starts_over_after_a_child_stayed_up_long_enough() -> None:
    sup = Supervisor(
        [child("sometimes", "import time, sys; time.sleep(0.3); sys.exit(1)")],
        policy=RestartPolicy(initial=0.05, maximum=5, healthy_after=0.2),
        rand=lambda: 1.0,
        poll_interval=0.01,
    )
    state = sup.children["sometimes"]
    with supervising(sup):
        wait_until(lambda: len(state.delays) >= 3, 20, "three restarts")
    assert state.delays[:3] == [0.05, 0.05, 0.05]


def test_a_killed_child_is_started_again_as_a_new_process() -> None:
    sup = Supervisor(
        [child("a", "import time; time.sleep(60)"), child("b", "import time; time.sleep(60)")],
        policy=RestartPolicy(initial=0.05, maximum=0.1),
        poll_interval=0.01,
        stop_timeout=5,
    )
    with supervising(sup) as result:
        wait_until(lambda: all(sup.pids().values()), 10, "both children")
        first = sup.pids()
        os.kill(first["a"] or 0, signal.SIGKILL)
        wait_until(lambda: sup.pids()["a"] not in (None, first["a"]), 10, "a new child a")
        assert sup.pids()["b"] == first["b"]
        assert sup.children["a"].exit_codes == [-signal.SIGKILL]
        assert sup.children["a"].restarts == 1
    assert result["code"] == 0  # both stopped by SIGTERM when asked


def test_stopping_sends_sigterm_and_waits_for_a_graceful_exit(tmp_path: Path) -> None:
    marker, ready = tmp_path / "stopped", tmp_path / "ready"
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    time.sleep(0.2); open({str(marker)!r}, 'w').write('clean'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    sup = Supervisor([child("graceful", code)], poll_interval=0.01, stop_timeout=10)
    with supervising(sup) as result:
        wait_until(ready.exists, 10, "the child to be ready")
    assert result["code"] == 0
    assert marker.read_text() == "clean"
    assert sup.children["graceful"].exit_codes == [0]


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    sup = Supervisor([child("stubborn", code)], poll_interval=0.01, stop_timeout=0.5)
    with supervising(sup) as result:
        wait_until(ready.exists, 10, "the child to be ready")
        pid = sup.pids()["stubborn"]
    assert result["code"] == 1
    assert sup.children["stubborn"].exit_codes == [-signal.SIGKILL]
    with pytest.raises(ProcessLookupError):
        os.kill(pid or 0, 0)


def test_a_command_that_cannot_start_is_retried_without_stopping_the_others() -> None:
    sup = Supervisor(
        [
            ChildSpec("missing", ("/nonexistent/chatcore-binary",)),
            child("fine", "import time; time.sleep(60)"),
        ],
        policy=RestartPolicy(initial=0.02, maximum=0.05),
        poll_interval=0.01,
        stop_timeout=5,
    )
    with supervising(sup):
        wait_until(lambda: sup.children["missing"].starts >= 3, 10, "three attempts")
        assert sup.pids()["fine"] is not None
        assert sup.pids()["missing"] is None


def test_exit_codes_are_described_for_the_logs() -> None:
    assert describe_exit(0) == "exit 0"
    assert describe_exit(2) == "exit 2"
    assert describe_exit(-9) == "killed by SIGKILL"


def test_children_need_unique_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([child("x", "pass"), child("x", "pass")])
