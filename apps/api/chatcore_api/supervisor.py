"""Run a few child processes and keep them running: the ``--processes`` / ``--workers`` option.

A :class:`Supervisor` starts one process per :class:`ChildSpec`, notices when one exits, and
starts it again after an exponential backoff with jitter (so a child that crashes at start-up
does not spin), which starts over once the child has stayed up for ``healthy_after`` seconds.
When ``stop`` is set it sends every child SIGTERM, waits up to ``stop_timeout`` seconds for
them to finish their work, and kills whatever is left.

It is deliberately synchronous (``subprocess`` and a polling loop): it runs in the main thread
of ``chatcore worker --processes N``, or in a thread beside the API server of
``chatcore serve --workers N``, and needs nothing from an event loop.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from chatcore.backoff import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One supervised process: a name for the logs, its command line and environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    initial: float = 0.5
    maximum: float = 30.0
    # A child that ran at least this long is healthy: its next restart waits ``initial`` again.
    healthy_after: float = 30.0


@dataclass(slots=True)
class ChildState:
    """What the supervisor knows about one child (read by tests and logs)."""

    spec: ChildSpec
    backoff: Backoff
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    starts: int = 0
    delays: list[float] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)


def describe_exit(code: int) -> str:
    """``"exit 3"`` or ``"killed by SIGKILL"`` (Popen reports a signal as ``-signum``)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


class Supervisor:
    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        policy: RestartPolicy | None = None,
        stop_timeout: float = 40.0,
        poll_interval: float = 0.1,
        rand: Callable[[], float] = random.random,
    ) -> None:
        names = [child.name for child in children]
        if len(set(names)) != len(names):
            raise ValueError("child names must be unique")
        self.policy = policy or RestartPolicy()
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.children: dict[str, ChildState] = {
            spec.name: ChildState(
                spec, Backoff(self.policy.initial, self.policy.maximum, rand=rand)
            )
            for spec in children
        }
        self.started = threading.Event()

    def pids(self) -> dict[str, int | None]:
        return {name: state.pid for name, state in self.children.items()}

    def run(self, stop: threading.Event) -> int:
        """Supervise until ``stop`` is set; then stop every child. Returns 0 when every child
        stopped by itself after SIGTERM, 1 when one had to be killed or failed to stop."""
        log.info(
            "supervisor started",
            extra={"children": len(self.children), "pid": os.getpid()},
        )
        try:
            while not stop.is_set():
                now = time.monotonic()
                for state in self.children.values():
                    self._tend(state, now, stop)
                self.started.set()
                stop.wait(self.poll_interval)
        finally:
            code = self._stop_all()
        log.info("supervisor stopped", extra={"exit_code": code})
        return code

    def _tend(self, state: ChildState, now: float, stop: threading.Event) -> None:
        process = state.process
        if process is None:
            if now >= state.next_start and not stop.is_set():
                self._start(state)
            return
        code = process.poll()
        if code is None:
            return
        uptime = now - state.started_at
        if uptime >= self.policy.healthy_after:
            state.backoff.reset()
        delay = state.backoff.next_delay()
        state.process = None
        state.next_start = now + delay
        state.delays.append(delay)
        state.exit_codes.append(code)
        log.warning(
            "child process exited; restarting it",
            extra={
                "child": state.spec.name,
                "pid": process.pid,
                "exit": describe_exit(code),
                "uptime": round(uptime, 3),
                "restart_in": round(delay, 3),
            },
        )

    def _start(self, state: ChildState) -> None:
        spec = state.spec
        state.starts += 1
        error: OSError | None = None
        try:
            state.process = subprocess.Popen(  # noqa: S603 - our own argv, never a shell
                spec.argv, env=dict(spec.env) if spec.env is not None else None
            )
        except OSError as exc:
            error = exc
        if error is not None or state.process is None:
            delay = state.backoff.next_delay()
            state.next_start = time.monotonic() + delay
            state.delays.append(delay)
            log.error(
                "could not start a child process",
                extra={"child": spec.name, "error": str(error), "retry_in": round(delay, 3)},
            )
            return
        state.started_at = time.monotonic()
        log.info(
            "child process started",
            extra={"child": spec.name, "pid": state.process.pid, "start": state.starts},
        )

    def _stop_all(self) -> int:
        live = [s for s in self.children.values() if s.process is not None]
        for state in live:
            assert state.process is not None
            if state.process.poll() is None:
                log.info(
                    "stopping child process", extra={"child": state.spec.name, "pid": state.pid}
                )
                _signal(state.process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        clean = True
        for state in live:
            process = state.process
            assert process is not None
            code = _wait(process, max(0.0, deadline - time.monotonic()))
            if code is None:
                log.error(
                    "child process did not stop in time; killing it",
                    extra={"child": state.spec.name, "pid": process.pid},
                )
                _signal(process, signal.SIGKILL)
                code = process.wait()
            if code not in (0, -signal.SIGTERM):
                clean = False
            state.exit_codes.append(code)
            state.process = None
            log.info(
                "child process stopped",
                extra={"child": state.spec.name, "pid": process.pid, "exit": describe_exit(code)},
            )
        return 0 if clean else 1


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:  # it just exited; wait() reaps it
        return


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or ``None`` if the process is still running after ``timeout`` seconds."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
