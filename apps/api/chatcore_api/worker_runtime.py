"""One worker process: a chatcore built by :func:`~chatcore_adapters.bootstrap.bootstrap`
from the same settings as the API (resolved with the command line's flags by
``chatcore_api.worker_main``), and its :class:`~chatcore.worker.WorkerLoop`.

:func:`serve` runs one worker until SIGTERM or SIGINT, then stops claiming, lets the replies in
flight finish within the grace period (what is left is handed back: unacknowledged, so another
worker takes it over after the reclaim timeout), removes its heartbeat and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from chatcore.errors import PortError
from chatcore.ports import LLM
from chatcore_adapters.bootstrap import bootstrap, new_worker_id
from chatcore_adapters.redis import RedisWorkQueue
from chatcore_adapters.redis.consumers import ConsumerJanitor
from chatcore_adapters.settings import ChatcoreSettings, WorkerOptions

log = logging.getLogger(__name__)


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
    janitor: ConsumerJanitor, settings: WorkerOptions, stop: asyncio.Event
) -> None:
    """Now and then, remove the consumers that crashed workers left in the group."""
    while not stop.is_set():
        try:
            removed = await janitor.forget_idle(settings.forget_consumers_after)
        except PortError as exc:
            log.warning("could not tidy the consumer group", extra={"error": str(exc)})
        else:
            if removed:
                log.info("removed consumers of workers long gone", extra={"count": removed})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.prune_interval)


async def _leave_group(janitor: ConsumerJanitor, worker_id: str) -> None:
    """A worker stopping for good takes its name out of the group, unless it still holds
    entries (replies cut short by the grace period), which others must reclaim first."""
    try:
        if await janitor.forget(worker_id):
            log.info("left the consumer group")
    except PortError as exc:
        log.warning("could not leave the consumer group", extra={"error": str(exc)})


async def serve(
    settings: ChatcoreSettings,
    *,
    worker_id: str | None = None,
    supervised_by: int | None = None,
    llm: LLM | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT; return the process's exit code."""
    worker_id = worker_id or new_worker_id()
    options = settings.worker
    core = bootstrap(
        settings,
        llm=llm,
        client_name="chatcore-worker",
        max_block=options.claim_block,
        near_cache=True,
    )
    if not isinstance(core.queue, RedisWorkQueue):
        raise TypeError("a worker process needs the Redis work queue (redis_url)")
    janitor = ConsumerJanitor(core.queue)
    worker = core.worker(worker_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning(
                "already stopping; replies in flight get the rest of the grace period",
                extra={"signal": sig.name, "grace": options.shutdown_grace},
            )
            return
        log.info("stop requested", extra={"signal": sig.name})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    side = [asyncio.create_task(_prune_consumers(janitor, options, stop))]
    if supervised_by is not None:
        side.append(asyncio.create_task(_watch_parent(supervised_by, stop)))
    log.info(
        "worker started",
        extra={
            "pid": os.getpid(),
            "concurrency": options.concurrency,
            "model": core.llm.name,
            "reclaim_after": settings.redis.reclaim_after,
            "lease_ttl": options.lease_ttl,
            "max_attempts": options.max_attempts,
        },
    )
    try:
        await worker.run(stop, grace=options.shutdown_grace)
        await _leave_group(janitor, worker_id)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        stop.set()
        for task in side:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await core.aclose()
    stats = worker.stats
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
