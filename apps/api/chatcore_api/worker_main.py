"""``chatcore worker``: run reply workers as processes, watch them, or check on them.

    chatcore worker                  one worker in this process
    chatcore worker --processes 4    four worker processes, restarted when one dies
    chatcore worker --check          list the workers' heartbeats; exit 0 if one is live

Workers share the work queue through Redis, so a worker needs ``redis_url``; everything else
comes from the same settings as ``chatcore serve`` (environment ``CHATCORE_*``, the config
file), and the flags below override them for this command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from chatcore.errors import PortError
from chatcore_api import loops
from chatcore_api.extras import missing_extras
from chatcore_api.gc_tuning import freeze_startup_heap
from chatcore_api.logs import configure_logging
from chatcore_api.settings import SECRET_KEY_ENV, ApiSettings, SettingsError, load_settings
from chatcore_api.supervisor import ChildSpec, RestartPolicy, Supervisor
from chatcore_api.worker_health import exit_code, read_health, render_json, render_table

# Workers run on Redis: the Redis adapters (the ``redis`` extra) are imported when a worker
# command runs, so that `chatcore serve` works in an install without them.
if TYPE_CHECKING:
    from chatcore_adapters.redis import RedisSettings
    from chatcore_api.worker_runtime import WorkerConfig

log = logging.getLogger(__name__)

T = TypeVar("T", int, float)

NO_REDIS = (
    "workers need Redis: set CHATCORE_REDIS_URL (or redis_url in the config file). "
    "Workers share the work queue through Redis; without it, `chatcore serve` answers "
    "messages with its own in-process worker."
)

# Flags that override a setting: (flag, attribute in the namespace, type, help).
_OVERRIDES: tuple[tuple[str, str, type, str], ...] = (
    ("--concurrency", "concurrency", int, "replies generated at once by one worker"),
    ("--claim-block", "claim_block", float, "seconds one claim waits for new work"),
    (
        "--reclaim-after",
        "reclaim_after",
        float,
        "seconds a delivery may go without news before another worker takes it over",
    ),
    ("--lease-ttl", "lease_ttl", float, "seconds a reply's lease lasts without renewal"),
    ("--max-attempts", "max_attempts", int, "deliveries of a message before it is dead-lettered"),
    ("--grace", "grace", float, "seconds replies in flight may take to finish on SIGTERM"),
)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="config file (TOML or JSON)")
    parser.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="run N worker processes and restart any that dies",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="list the workers' heartbeats; exit 0 if at least one worker is live",
    )
    parser.add_argument("--json", action="store_true", help="with --check: print JSON")
    for flag, dest, kind, text in _OVERRIDES:
        parser.add_argument(flag, dest=dest, type=kind, help=text)
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error", "critical"], default=None
    )
    # Set by a supervisor for its children: stop when that process is gone.
    parser.add_argument("--supervised-by", type=int, help=argparse.SUPPRESS)


def redis_settings(
    settings: ApiSettings, *, client_name: str, max_block: float = 2.0
) -> RedisSettings:
    """How a worker (or ``--check``) talks to Redis. ``max_block`` is the longest blocking
    call it makes (the claim); the socket timeout is derived from it, so a connection that
    died silently (a laptop's sleep, a NAT timeout) is noticed within seconds."""
    if settings.redis_url is None:
        raise SettingsError(NO_REDIS)
    _require_extras(settings, generates_replies=False)
    from chatcore_adapters.redis import RedisSettings

    return RedisSettings(
        url=settings.redis_url.get_secret_value(),
        cluster=settings.redis.cluster,
        prefix=settings.redis.prefix,
        client_name=client_name,
        max_connections=settings.redis.max_connections,
        max_block=max_block,
    )


def _require_extras(settings: ApiSettings, *, generates_replies: bool) -> None:
    missing = missing_extras(settings, generates_replies=generates_replies)
    if missing:
        raise SettingsError("; ".join(missing))


def _flag(args: argparse.Namespace, dest: str, default: T) -> T:
    """The value of a tuning flag if it was given, else ``default`` (the setting)."""
    given = getattr(args, dest, None)
    return default if given is None else type(default)(given)


def worker_config(settings: ApiSettings, args: argparse.Namespace) -> WorkerConfig:
    """The worker's configuration: the app's settings, then this command's flags."""
    _require_extras(settings, generates_replies=True)
    from chatcore_api.worker_runtime import WorkerConfig

    w = settings.worker
    claim_block = _flag(args, "claim_block", w.claim_block)
    try:
        return WorkerConfig(
            redis=redis_settings(settings, client_name="chatcore-worker", max_block=claim_block),
            llm=settings.llm,
            llm_factory=w.llm_factory,
            concurrency=_flag(args, "concurrency", w.concurrency),
            claim_block=claim_block,
            reclaim_after=_flag(args, "reclaim_after", settings.redis.reclaim_after),
            lease_ttl=_flag(args, "lease_ttl", w.lease_ttl),
            keepalive_interval=w.keepalive_interval,
            flush_interval=w.flush_interval,
            max_attempts=_flag(args, "max_attempts", w.max_attempts),
            heartbeat_interval=w.heartbeat_interval,
            heartbeat_ttl=w.heartbeat_ttl,
            grace=_flag(args, "grace", w.shutdown_grace),
            backoff_max=w.backoff_max,
        )
    except ValueError as exc:
        raise SettingsError(f"invalid worker settings: {exc}") from None


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The flags a supervised child gets: this command's, without ``--processes``."""
    out: list[str] = []
    if args.config is not None:
        out += ["--config", str(args.config)]
    for flag, dest, _, _ in _OVERRIDES:
        given = getattr(args, dest, None)
        if given is not None:
            out += [flag, str(given)]
    if args.log_level is not None:
        out += ["--log-level", args.log_level]
    return out


def worker_children(
    count: int, args: argparse.Namespace, *, env: dict[str, str] | None = None
) -> list[ChildSpec]:
    """``count`` children running ``chatcore worker`` with the same Python and flags."""
    argv = (
        sys.executable,
        "-m",
        "chatcore_api",
        "worker",
        *child_arguments(args),
        "--supervised-by",
        str(os.getpid()),
    )
    return [ChildSpec(f"worker-{n + 1}", argv, env) for n in range(count)]


def supervise(children: Sequence[ChildSpec], *, grace: float) -> int:
    """Run ``children`` under a :class:`Supervisor` in this thread until SIGTERM/SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        supervisor = Supervisor(children, policy=RestartPolicy(), stop_timeout=grace + 10.0)
        return supervisor.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def check(settings: ApiSettings, *, as_json: bool) -> int:
    """Print every worker's heartbeat; 0 if one is live, 1 if none, 2 if Redis is unreachable."""
    redis = redis_settings(settings, client_name="chatcore-check")
    from chatcore_adapters.redis import RedisHeartbeats, connect

    conn = connect(redis)
    try:
        health = await read_health(
            RedisHeartbeats(conn),
            now=datetime.now(UTC),
            stale_after=2 * settings.worker.heartbeat_interval,
        )
    except PortError as exc:
        print(f"cannot read the workers' heartbeats from Redis: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    finally:
        await conn.aclose()
    print(render_json(health) if as_json else render_table(health))  # noqa: T201
    return exit_code(health)


def load_worker_settings(config_file: Path | None) -> ApiSettings:
    """The app's settings, as a worker reads them. A worker signs no session tokens, so it
    does not need the API's signing key: when none is given, a throwaway one stands in for it
    (only to satisfy the API's rule "Redis needs a shared key"; it is never used)."""
    if os.environ.get(SECRET_KEY_ENV):
        return load_settings(config_file)
    return load_settings(config_file, secret_key=secrets.token_urlsafe(48))


def run_worker_command(args: argparse.Namespace) -> int:
    try:
        settings = load_worker_settings(args.config)
        configure_logging(args.log_level or settings.log_level, settings.log_format)
        if args.check:
            return asyncio.run(check(settings, as_json=args.json))
        config = worker_config(settings, args)
    except SettingsError as exc:
        print(f"chatcore worker: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.processes is not None:
        if args.processes < 1:
            print("chatcore worker: --processes must be at least 1", file=sys.stderr)  # noqa: T201
            return 2
        return supervise(worker_children(args.processes, args), grace=config.grace)
    from chatcore_api.worker_runtime import new_worker_id, serve, tag_logs

    worker_id = new_worker_id()
    tag_logs(worker_id)
    freeze_startup_heap()
    return loops.run(serve(config, worker_id=worker_id, supervised_by=args.supervised_by))


def serve_with_workers(
    args: argparse.Namespace, settings: ApiSettings, serve_api: Callable[[], int]
) -> int:
    """``chatcore serve --workers N``: the API in this thread, N supervised worker processes
    beside it. On SIGTERM/SIGINT the API stops first (uvicorn handles the signal), then the
    workers get SIGTERM and their grace period."""
    count: int = args.workers
    if count < 1:
        print("chatcore: --workers must be at least 1", file=sys.stderr)  # noqa: T201
        return 2
    if settings.redis_url is None:
        print(f"chatcore: --workers: {NO_REDIS}", file=sys.stderr)  # noqa: T201
        return 2
    env = dict(os.environ)
    env["CHATCORE_REDIS_URL"] = settings.redis_url.get_secret_value()  # never on a command line
    children = worker_children(
        count, argparse.Namespace(config=args.config, log_level=None), env=env
    )
    grace = settings.worker.shutdown_grace
    stop = threading.Event()
    supervisor = Supervisor(children, stop_timeout=grace + 10.0)
    thread = threading.Thread(target=supervisor.run, args=(stop,), name="chatcore-workers")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # uvicorn installs its own handlers while it serves and restores these afterwards (then
    # re-raises the signal it got, which lands here).
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread.start()
    try:
        return serve_api()
    finally:
        stop.set()
        thread.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
