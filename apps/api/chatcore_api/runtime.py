"""What a running app holds: the objects the endpoints use, built from the container when
the app starts and stopped, in order, when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from chatcore.ports import Heartbeats
from chatcore.protocol import CloseCode
from chatcore.service import ChatService
from chatcore.worker import WorkerLoop
from chatcore_adapters.bootstrap import Chatcore
from chatcore_api.client_address import ClientKeys
from chatcore_api.connection_caps import ConnectionCaps
from chatcore_api.connections import ConnectionManager
from chatcore_api.container import Container
from chatcore_api.feed import SessionFeed
from chatcore_api.handler import ConnectionSettings
from chatcore_api.metrics import ApiMetrics
from chatcore_api.ratelimit import ApiLimits
from chatcore_api.sessions import SessionManager
from chatcore_api.settings import ApiSettings

log = logging.getLogger(__name__)


async def _preload_model(container: Container) -> None:
    """A real model (LiteLLM) is loaded and checked before the worker takes any work, so a
    misspelt model or a missing key stops start-up instead of failing the first message.
    The demo model has nothing to load; an API process without a worker never loads LiteLLM."""
    preload = getattr(container.core().llm, "preload", None)
    if preload is None:
        return
    try:
        await asyncio.to_thread(preload)
    except ValueError as exc:
        log.error("the configured model cannot be used", extra={"error": str(exc)})  # noqa: TRY400
        raise


@dataclass(eq=False)
class Runtime:
    settings: ApiSettings
    container: Container
    core: Chatcore
    service: ChatService
    sessions: SessionManager
    connections: ConnectionManager
    feed: SessionFeed
    metrics: ApiMetrics
    heartbeats: Heartbeats
    limits: ApiLimits
    client_keys: ClientKeys
    caps: ConnectionCaps
    connection_settings: ConnectionSettings
    model_name: str
    worker: WorkerLoop | None = None
    _worker_stop: asyncio.Event = field(default_factory=asyncio.Event)
    _worker_task: asyncio.Task[None] | None = None
    _stopped: bool = False

    @classmethod
    async def start(cls, container: Container, settings: ApiSettings) -> Runtime:
        metrics: ApiMetrics = container.metrics()
        core: Chatcore = container.core()
        runtime = cls(
            settings=settings,
            container=container,
            core=core,
            service=core.service,
            sessions=container.sessions(),
            connections=container.connections(),
            feed=container.feed(),
            metrics=metrics,
            heartbeats=core.heartbeats,
            limits=container.limits(),
            client_keys=container.client_keys(),
            caps=container.caps(),
            connection_settings=container.connection_settings(),
            model_name=core.llm.name,
        )
        if settings.worker.enabled:
            try:
                await _preload_model(container)
            except BaseException:
                await runtime.stop()  # release what was built (the Redis client) before failing
                raise
        runtime.feed.start()
        if settings.worker.enabled:
            worker: WorkerLoop = container.worker()
            runtime.worker = worker
            metrics.watch_worker(worker)
            runtime._worker_task = asyncio.create_task(
                worker.run(runtime._worker_stop, grace=settings.worker.shutdown_grace),
                name="chatcore-worker",
            )
        log.info(
            "chatcore API started",
            extra={
                "backend": settings.backend,
                "redis": settings.redis_url_display,
                "model": runtime.model_name,
                "worker": settings.worker.enabled,
                "web_dir": str(settings.web_dir) if settings.web_dir else None,
            },
        )
        return runtime

    async def close_connections(self) -> None:
        await self.connections.close_all(CloseCode.GOING_AWAY, "server shutting down")

    async def stop(self) -> None:
        """Close sockets (1001), let the worker finish within its grace, stop the feed, and
        release storage clients."""
        if self._stopped:
            return
        self._stopped = True
        await self.close_connections()
        self._worker_stop.set()
        task = self._worker_task
        if task is not None:
            grace = self.settings.worker.shutdown_grace
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=grace + 5.0)
            except TimeoutError:
                log.warning("the worker did not stop in time; cancelling it")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                log.exception("the worker stopped with an error")
        await self.feed.stop()
        await self.core.aclose()
        log.info("chatcore API stopped")
