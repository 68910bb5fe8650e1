"""Real worker processes for tests: start ``chatcore worker`` from this checkout, read its JSON
logs, signal it (SIGTERM, SIGKILL, SIGSTOP/SIGCONT), and always clean it up.

Each process runs in its own session (process group), so a supervisor and its children are
killed together at the end of a test, whatever state the test left them in. The process gets
``PYTHONPATH`` pointing at this checkout's sources: the virtualenv's editable install may point
at another one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SOURCE_PATHS = (REPO / "src", REPO / "src" / "adapters", REPO / "apps" / "api", REPO)

LogLine = dict[str, Any]


def checkout_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a child process: this checkout first on the path, no stray
    ``CHATCORE_*`` settings from the developer's shell, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCORE_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in SOURCE_PATHS)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class ChatcoreProcess:
    """``python -m chatcore_api <args>`` (the ``chatcore`` command), its output (JSON log
    lines) going to a file."""

    def __init__(
        self, name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.args = list(args)
        self.env = checkout_env(env)
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChatcoreProcess:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatcore_api", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s; log tail:\n{self.tail()}"
            ) from None

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started (its whole process group)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    # --- logs -------------------------------------------------------------------------------

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs(self) -> list[LogLine]:
        """The JSON log lines written so far (anything else, e.g. a crash trace, is skipped)."""
        out: list[LogLine] = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    def lines(self, msg: str, **fields: Any) -> list[LogLine]:
        return [
            line
            for line in self.logs()
            if line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items())
        ]

    def wait_for_log(self, msg: str, timeout: float, *, count: int = 1, **fields: Any) -> None:
        wait_until(
            lambda: len(self.lines(msg, **fields)) >= count,
            timeout,
            f"{count}x {msg!r} {fields or ''} in the log of {self.name}",
        )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


class ProcessPool:
    """Every process a test started; :meth:`close` kills whatever is still alive."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.started: list[ChatcoreProcess] = []

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> ChatcoreProcess:
        process = ChatcoreProcess(name, args, {**self.env, **(env or {})}, self.log_dir)
        self.started.append(process)
        return process.start()

    def worker(
        self, name: str, *args: str, env: Mapping[str, str] | None = None
    ) -> ChatcoreProcess:
        return self.start(name, "worker", *args, env=env)

    def close(self) -> None:
        for process in self.started:
            process.kill_group()

    def dump(self) -> Iterator[str]:
        for process in self.started:
            yield f"--- {process.name} (pid {process.process and process.process.pid}) ---"
            yield process.tail(60)


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``chatcore <args>`` to completion (bounded) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "chatcore_api", *args],
        env=checkout_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
