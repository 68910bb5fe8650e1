"""The processes a benchmark starts, and what it reads about them from ``/proc``.

Every child runs this checkout's code (``PYTHONPATH`` is set from the worktree, whatever the
virtualenv's editable install points at), in its own process group, with its output in a log
file, and a raised open-files limit. A :class:`Processes` registry stops whatever is still
running when the benchmark ends, fails or is interrupted (SIGTERM first, SIGKILL after a
grace period), so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE_PATHS = (ROOT / "src", ROOT / "src" / "adapters", ROOT / "apps" / "api", ROOT)
NOFILE = 65536
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def raise_nofile(limit: int = NOFILE) -> int:
    """Raise this process's open-files limit (the hard one too when allowed); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, limit)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_child_nofile(pid: int, limit: int = NOFILE) -> None:
    """Raise a child's open-files limit from the outside (``prlimit``; as root, or up to our
    own hard limit otherwise)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in ((limit, max(limit, hard)), (min(limit, hard), hard)):
        try:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, wanted)
            return
        except (ValueError, OSError):
            continue


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This checkout first on the path, no stray ``CHATCORE_*``/``BENCH_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATCORE_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in SOURCE_PATHS)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Proc:
    """One child process: ``python <args>`` (or any argv) with its log in ``log_dir``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        stdin: bool = False,
        stdout: bool = False,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.want_stdin = stdin
        self.want_stdout = stdout
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Proc:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.PIPE if self.want_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.want_stdout else log,
                stderr=log,
                text=True,
                start_new_session=True,
                cwd=ROOT,
            )
        raise_child_nofile(self.process.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def stdin(self) -> IO[str]:
        assert self.process is not None
        assert self.process.stdin is not None
        return self.process.stdin

    @property
    def stdout(self) -> IO[str]:
        assert self.process is not None
        assert self.process.stdout is not None
        return self.process.stdout

    def signal(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, no questions asked, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """``stop_signal`` (SIGTERM), then SIGKILL after ``timeout``; also kills what is left
        of its process group."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self.signal(self.stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return process.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Every process of a run; stopping it stops them all, the last started first."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def start(self, proc: Proc) -> Proc:
        self.add(proc)
        return proc.start()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=10.0)
        self.procs.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt here, so ``finally`` blocks stop the children."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- /proc --------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


# A process "stays flat" when its RSS grows by less than this over a window.
FLAT_TOLERANCE = 0.05


def rss_growth(points: Sequence[tuple[float, int]]) -> dict[str, Any]:
    """From ``(seconds, RSS KiB)`` samples (two or more): the window, the first, last and peak
    RSS, the growth per minute and in all, and whether that is flat."""
    (t0, first), (t1, last) = points[0], points[-1]
    growth = (last - first) / first
    return {
        "from_s": t0,
        "to_s": t1,
        "rss_kib_first": first,
        "rss_kib_last": last,
        "rss_kib_peak": max(k for _, k in points),
        "kib_per_min": round((last - first) / max(t1 - t0, 1e-9) * 60, 1),
        "growth": round(growth, 4),
        "flat": growth < FLAT_TOLERANCE,
    }


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[int]]:
    """``count`` CPU-bound processes (each spins one core) for as long as the block runs:
    the load of the shared machines users and CI run on. Yields their pids."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(max(0, count))
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
