"""One worker process: the Redis adapters, the model and the :class:`WorkerLoop`, wired up.

:class:`WorkerConfig` holds everything a worker process needs, already resolved from the app's
settings and the command line (``chatcore_api.worker_main``). :func:`run_worker` runs one
worker until SIGTERM or SIGINT, then stops claiming, lets the replies in flight finish within
the grace period (what is left is handed back: unacknowledged, so another worker takes it over
after the reclaim timeout), removes its heartbeat and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import secrets
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from chatcore.errors import PortError
from chatcore.generation import GenerationSettings, ReplyGenerator
from chatcore.ports import LLM
from chatcore.service import ChatService
from chatcore.worker import WorkerLoop, WorkerSettings
from chatcore_adapters.llm import LLMSettings, build_llm
from chatcore_adapters.redis import (
    RedisConnection,
    RedisEventStore,
    RedisHeartbeats,
    RedisLeases,
    RedisSessionCache,
    RedisSettings,
    RedisWorkQueue,
    connect,
)
from chatcore_adapters.redis.consumers import ConsumerJanitor
from chatcore_adapters.system import RandomIds, SystemClock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """A worker process's settings, in seconds where they are times."""

    redis: RedisSettings
    llm: LLMSettings = field(default_factory=LLMSettings)
    # ``module:attribute`` of a callable returning a chatcore.ports.LLM; overrides ``llm``.
    llm_factory: str | None = None
    queue: str = "chatcore:work"
    heartbeats: str = "chatcore:workers"
    concurrency: int = 16
    claim_block: float = 2.0
    # A delivery idle this long (its worker presumed dead) is taken over by another worker.
    reclaim_after: float = 30.0
    lease_ttl: float = 30.0
    # How often a reply in progress renews its lease and touches its delivery.
    keepalive_interval: float = 5.0
    # Seconds a reply's text is buffered before it is appended as one event.
    flush_interval: float = 0.015
    max_attempts: int = 5
    heartbeat_interval: float = 2.0
    heartbeat_ttl: float = 10.0
    grace: float = 10.0
    sweep_interval: float = 15.0
    intent_age: float = 30.0
    backoff_max: float = 5.0
    cache_ttl: float = 3600.0
    # Consumers of crashed workers (no pending entries left) are removed from the group once
    # idle this long; every worker looks for them every ``prune_interval`` seconds.
    forget_consumers_after: float = 3600.0
    prune_interval: float = 600.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        for name in ("claim_block", "reclaim_after", "lease_ttl", "keepalive_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.keepalive_interval * 2 > min(self.reclaim_after, self.lease_ttl):
            raise ValueError(
                "keepalive_interval must be at most half of reclaim_after and of lease_ttl, "
                "or a reply still being written would be taken over"
            )
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise ValueError("heartbeat_ttl must be longer than heartbeat_interval")
        if self.claim_block >= self.redis.max_block + self.redis.read_margin:
            raise ValueError("claim_block must be shorter than the Redis socket timeout")


def new_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in logs and ``--check``."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def load_llm(config: WorkerConfig) -> LLM:
    """The configured model (LiteLLM is imported only when a LiteLLM model is configured)."""
    if config.llm_factory is None:
        return build_llm(config.llm)
    return llm_from_factory(config.llm_factory)


def llm_from_factory(path: str) -> LLM:
    """The model returned by the callable named ``package.module:callable``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError("llm_factory must look like 'package.module:callable'")
    factory: Callable[[], LLM] = getattr(importlib.import_module(module_name), attribute)
    model = factory()
    if not isinstance(model, LLM):
        raise TypeError(f"{path} did not return a chatcore.ports.LLM")
    return model


@dataclass(slots=True)
class WorkerRuntime:
    conn: RedisConnection
    queue: RedisWorkQueue
    heartbeats: RedisHeartbeats
    service: ChatService
    loop: WorkerLoop
    janitor: ConsumerJanitor

    async def aclose(self) -> None:
        await self.conn.aclose()


def build_runtime(config: WorkerConfig, *, worker_id: str, llm: LLM) -> WorkerRuntime:
    clock, ids = SystemClock(), RandomIds()
    conn = connect(config.redis)
    queue = RedisWorkQueue(conn, name=config.queue, reclaim_after=config.reclaim_after)
    heartbeats = RedisHeartbeats(conn, name=config.heartbeats)
    service = ChatService(
        store=RedisEventStore(conn),
        cache=RedisSessionCache(conn, ttl=config.cache_ttl),
        queue=queue,
        clock=clock,
        ids=ids,
    )
    generator = ReplyGenerator(
        service=service,
        llm=llm,
        leases=RedisLeases(conn),
        clock=clock,
        ids=ids,
        settings=GenerationSettings(
            flush_interval=config.flush_interval,
            lease_ttl=config.lease_ttl,
            keepalive_interval=config.keepalive_interval,
        ),
    )
    loop = WorkerLoop(
        queue=queue,
        generator=generator,
        service=service,
        clock=clock,
        worker_id=worker_id,
        settings=WorkerSettings(
            concurrency=config.concurrency,
            claim_block=config.claim_block,
            max_attempts=config.max_attempts,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_ttl=config.heartbeat_ttl,
            sweep_interval=config.sweep_interval,
            intent_age=config.intent_age,
            backoff_max=config.backoff_max,
        ),
        heartbeats=heartbeats,
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    return WorkerRuntime(conn, queue, heartbeats, service, loop, ConsumerJanitor(queue))


class WorkerIdFilter(logging.Filter):
    """Adds ``worker_id`` to every record of this process (a worker's logs say who wrote them)."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker_id"):
            record.worker_id = self.worker_id
        return True


def tag_logs(worker_id: str) -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(WorkerIdFilter(worker_id))


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Stop when the supervisor that started this process is gone (it was killed outright):
    an orphaned worker would otherwise run on with nobody to stop it."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            log.warning("the supervisor is gone; stopping", extra={"supervisor_pid": parent_pid})
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def _prune_consumers(
    janitor: ConsumerJanitor, config: WorkerConfig, stop: asyncio.Event
) -> None:
    """Now and then, remove the consumers that crashed workers left in the group."""
    while not stop.is_set():
        try:
            removed = await janitor.forget_idle(config.forget_consumers_after)
        except PortError as exc:
            log.warning("could not tidy the consumer group", extra={"error": str(exc)})
        else:
            if removed:
                log.info("removed consumers of workers long gone", extra={"count": removed})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=config.prune_interval)


async def _leave_group(runtime: WorkerRuntime, worker_id: str) -> None:
    """A worker stopping for good takes its name out of the group, unless it still holds
    entries (replies cut short by the grace period), which others must reclaim first."""
    try:
        if await runtime.janitor.forget(worker_id):
            log.info("left the consumer group")
    except PortError as exc:
        log.warning("could not leave the consumer group", extra={"error": str(exc)})


async def serve(
    config: WorkerConfig,
    *,
    worker_id: str | None = None,
    supervised_by: int | None = None,
    llm: LLM | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT; return the process's exit code."""
    worker_id = worker_id or new_worker_id()
    model = llm or load_llm(config)
    runtime = build_runtime(config, worker_id=worker_id, llm=model)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning(
                "already stopping; replies in flight get the rest of the grace period",
                extra={"signal": sig.name, "grace": config.grace},
            )
            return
        log.info("stop requested", extra={"signal": sig.name})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    side = [asyncio.create_task(_prune_consumers(runtime.janitor, config, stop))]
    if supervised_by is not None:
        side.append(asyncio.create_task(_watch_parent(supervised_by, stop)))
    log.info(
        "worker started",
        extra={
            "pid": os.getpid(),
            "queue": config.queue,
            "concurrency": config.concurrency,
            "model": model.name,
            "reclaim_after": config.reclaim_after,
            "lease_ttl": config.lease_ttl,
            "max_attempts": config.max_attempts,
        },
    )
    try:
        await runtime.loop.run(stop, grace=config.grace)
        await _leave_group(runtime, worker_id)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stop.set()
        for task in side:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runtime.aclose()
    stats = runtime.loop.stats
    log.info(
        "worker stopped",
        extra={
            "completed": stats.completed,
            "failed": stats.failed,
            "cancelled": stats.cancelled,
            "dead_lettered": stats.dead_lettered,
            "errors": stats.errors,
        },
    )
    return 0
