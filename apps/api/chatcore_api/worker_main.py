"""``chatcore worker``: run reply workers as processes, watch them, or check on them.

    chatcore worker                  one worker in this process
    chatcore worker --processes 4    four worker processes, restarted when one dies
    chatcore worker --check          list the workers' heartbeats; exit 0 if one is live
    chatcore worker --dead-letters   list the messages given up on, newest last

Workers share the work queue through Redis, so a worker needs ``redis_url``; everything else
comes from the same settings as ``chatcore serve`` (environment ``CHATCORE_*``, the config
file), and the flags below override them for this command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from chatcore.errors import PortError
from chatcore.ports import DeadLetter
from chatcore_adapters.bootstrap import new_worker_id, redis_settings
from chatcore_api import loops
from chatcore_api.extras import missing_extras
from chatcore_api.gc_tuning import freeze_startup_heap
from chatcore_api.logs import configure_logging
from chatcore_api.settings import (
    SECRET_KEY_ENV,
    SECRET_KEYS_ENV,
    ApiSettings,
    SettingsError,
    load_settings,
)
from chatcore_api.supervisor import ChildSpec, RestartPolicy, Supervisor
from chatcore_api.worker_health import exit_code, read_health, render_json, render_table

# Workers run on Redis: the Redis adapters (the ``redis`` extra) and the worker's runtime are
# imported when a worker command runs, so that `chatcore serve` works in an install without
# them.

log = logging.getLogger(__name__)

NO_REDIS = (
    "workers need Redis: set CHATCORE_REDIS_URL (or redis_url in the config file). "
    "Workers share the work queue through Redis; without it, `chatcore serve` answers "
    "messages with its own in-process worker."
)

# Flags that override a setting: (flag, (section, setting), type, help).
_OVERRIDES: tuple[tuple[str, tuple[str, str], type, str], ...] = (
    ("--concurrency", ("worker", "concurrency"), int, "replies generated at once by one worker"),
    ("--claim-block", ("worker", "claim_block"), float, "seconds one claim waits for new work"),
    (
        "--reclaim-after",
        ("redis", "reclaim_after"),
        float,
        "seconds a delivery may go without news before another worker takes it over",
    ),
    (
        "--lease-ttl",
        ("worker", "lease_ttl"),
        float,
        "seconds a reply's lease lasts without renewal",
    ),
    (
        "--max-attempts",
        ("worker", "max_attempts"),
        int,
        "deliveries of a message before it is dead-lettered",
    ),
    (
        "--grace",
        ("worker", "shutdown_grace"),
        float,
        "seconds replies in flight may take to finish on SIGTERM",
    ),
)


def _dest(setting: tuple[str, str]) -> str:
    return setting[1] if setting[1] != "shutdown_grace" else "grace"


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
    parser.add_argument(
        "--dead-letters",
        action="store_true",
        help="list the messages given up on after too many deliveries (newest last)",
    )
    parser.add_argument(
        "--limit", type=int, default=100, help="with --dead-letters: how many (default 100)"
    )
    parser.add_argument(
        "--json", action="store_true", help="with --check or --dead-letters: print JSON"
    )
    for flag, setting, kind, text in _OVERRIDES:
        parser.add_argument(flag, dest=_dest(setting), type=kind, help=text)
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error", "critical"], default=None
    )
    # Set by a supervisor for its children: stop when that process is gone.
    parser.add_argument("--supervised-by", type=int, help=argparse.SUPPRESS)


def _require_extras(settings: ApiSettings, *, generates_replies: bool) -> None:
    missing = missing_extras(settings, generates_replies=generates_replies)
    if missing:
        raise SettingsError("; ".join(missing))


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The settings this command's flags override, nested as the settings are."""
    out: dict[str, dict[str, object]] = {}
    for _, setting, _, _ in _OVERRIDES:
        given = getattr(args, _dest(setting), None)
        if given is not None:
            section, name = setting
            out.setdefault(section, {})[name] = given
    return out


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The flags a supervised child gets: this command's, without ``--processes``."""
    out: list[str] = []
    if args.config is not None:
        out += ["--config", str(args.config)]
    for flag, setting, _, _ in _OVERRIDES:
        given = getattr(args, _dest(setting), None)
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
    """Print every worker's heartbeat and every queue shard's depth; 0 if a worker is live, 1
    if none, 2 if Redis (any shard of the queue) is unreachable."""
    if settings.redis_url is None:
        raise SettingsError(NO_REDIS)
    _require_extras(settings, generates_replies=False)
    from chatcore_adapters.redis import RedisHeartbeats, RedisWorkQueue, connect

    conn = connect(redis_settings(settings, client_name="chatcore-check"))
    try:
        health = await read_health(
            RedisHeartbeats(conn),
            now=datetime.now(UTC),
            stale_after=2 * settings.worker.heartbeat_interval,
        )
    except PortError as exc:
        print(f"cannot read the workers' heartbeats from Redis: {exc}", file=sys.stderr)  # noqa: T201
        await conn.aclose()
        return 2
    try:
        depths = await RedisWorkQueue(conn, shards=settings.redis.queue_shards).depths()
    except PortError as exc:
        print(f"cannot read the work queue from Redis: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    finally:
        await conn.aclose()
    shards = [(d.stream, d.waiting, d.pending) for d in depths]
    if as_json:
        print(render_json(health, shards))  # noqa: T201
    else:
        print(render_table(health, shards))  # noqa: T201
    return exit_code(health)


async def list_dead_letters(settings: ApiSettings, *, limit: int, as_json: bool) -> int:
    """Print the dead letters; 0 when listed (even none), 2 if Redis is unreachable."""
    if settings.redis_url is None:
        raise SettingsError(NO_REDIS)
    if limit < 1:
        raise SettingsError("--limit must be at least 1")
    _require_extras(settings, generates_replies=False)
    from chatcore_adapters.redis import RedisWorkQueue, connect

    conn = connect(redis_settings(settings, client_name="chatcore-check"))
    try:
        queue = RedisWorkQueue(conn, shards=settings.redis.queue_shards)
        letters = await queue.dead_letters(limit=limit)
    except PortError as exc:
        print(f"cannot read the dead letters from Redis: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    finally:
        await conn.aclose()
    print(render_dead_letters(letters, as_json=as_json))  # noqa: T201
    return 0


def render_dead_letters(letters: Sequence[DeadLetter], *, as_json: bool) -> str:
    rows = [
        {
            "at": letter.at.isoformat(),
            "session_id": letter.item.session_id,
            "conversation_id": letter.item.conversation_id,
            "message_id": letter.item.message_id,
            "attempts": letter.attempts,
            "reason": letter.reason,
        }
        for letter in letters
    ]
    if as_json:
        return json.dumps({"dead_letters": rows}, indent=1)
    lines = [f"{'AT':<26} {'SESSION':<24} {'MESSAGE':<20} {'ATTEMPTS':>8}  REASON"]
    for row in rows:
        lines.append(
            f"{row['at']:<26} {str(row['session_id'])[:24]:<24} {row['message_id']!s:<20} "
            f"{row['attempts']:>8}  {row['reason']}"
        )
    lines.append(f"{len(rows)} dead letter{'s' if len(rows) != 1 else ''}")
    return "\n".join(lines)


def load_worker_settings(
    config_file: Path | None, overrides: dict[str, dict[str, object]] | None = None
) -> ApiSettings:
    """The app's settings, as a worker reads them, with this command's flags on top. A worker
    signs no session tokens, so it does not need the API's signing key: when none is given, a
    throwaway one stands in for it (only to satisfy the API's rule "Redis needs a shared key";
    it is never used)."""
    given: dict[str, object] = dict(overrides or {})
    if not os.environ.get(SECRET_KEY_ENV) and not os.environ.get(SECRET_KEYS_ENV):
        given["secret_key"] = secrets.token_urlsafe(48)
    return load_settings(config_file, None, **given)


def run_worker_command(args: argparse.Namespace) -> int:
    try:
        settings = load_worker_settings(args.config, flag_overrides(args))
        configure_logging(args.log_level or settings.log_level, settings.log_format)
        if args.check:
            return asyncio.run(check(settings, as_json=args.json))
        if args.dead_letters:
            return asyncio.run(list_dead_letters(settings, limit=args.limit, as_json=args.json))
    except SettingsError as exc:
        print(f"chatcore worker: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if settings.redis_url is None:
        print(f"chatcore worker: {NO_REDIS}", file=sys.stderr)  # noqa: T201
        return 2
    missing = missing_extras(settings, generates_replies=True)
    if missing:
        print(f"chatcore worker: {'; '.join(missing)}", file=sys.stderr)  # noqa: T201
        return 2
    if args.processes is not None:
        if args.processes < 1:
            print("chatcore worker: --processes must be at least 1", file=sys.stderr)  # noqa: T201
            return 2
        return supervise(
            worker_children(args.processes, args), grace=settings.worker.shutdown_grace
        )
    from chatcore_api.worker_runtime import serve, tag_logs

    worker_id = new_worker_id()
    tag_logs(worker_id)
    freeze_startup_heap()
    return loops.run(serve(settings, worker_id=worker_id, supervised_by=args.supervised_by))


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
