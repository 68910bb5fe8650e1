"""The composition root: which adapter plays which port, chosen from the settings.

Nothing is built until it is first asked for (in the app's lifespan), so a test may override
any provider at the edge right after ``create_app``::

    app = create_app(settings)
    app.state.container.llm.override(providers.Object(ScriptedLLM(delay=0.05)))

The storage ports are selectors: ``memory`` (the embedded default, everything in this
process) or ``redis`` (when ``redis_url`` is set). Adding a backend is one more branch of each
selector. The Redis adapters are imported only by the ``redis`` branch: they need the
``redis`` extra, which an embedded install (``chatcore[server]``) does not have; without it,
setting ``redis_url`` fails at start-up with an ImportError that names the extra.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from chatcore.decisions import Limits
from chatcore.generation import GenerationSettings, ReplyGenerator
from chatcore.ports import LLM, Clock, EventStore, Heartbeats, Leases, SessionCache, WorkQueue
from chatcore.service import ChatService, ServiceSettings
from chatcore.worker import WorkerLoop, WorkerSettings
from chatcore_adapters.llm import build_llm
from chatcore_adapters.memory import (
    MemoryEventStore,
    MemoryHeartbeats,
    MemoryLeases,
    MemorySessionCache,
    MemoryWorkQueue,
)
from chatcore_adapters.system import RandomIds, SystemClock
from chatcore_api.connections import ConnectionManager
from chatcore_api.feed import SessionFeed
from chatcore_api.handler import ConnectionSettings
from chatcore_api.metrics import ApiMetrics
from chatcore_api.ratelimit import RateLimiter
from chatcore_api.sessions import SessionManager
from chatcore_api.settings import ApiSettings, effective_secret
from chatcore_api.tokens import TokenSigner

if TYPE_CHECKING:
    from chatcore_adapters.redis import RedisConnection

log = logging.getLogger(__name__)


def _backend(settings: ApiSettings) -> str:
    return settings.backend


def _redis_connection(settings: ApiSettings) -> RedisConnection:
    from chatcore_adapters.redis import RedisSettings, connect

    assert settings.redis_url is not None
    options = settings.redis
    return connect(
        RedisSettings(
            url=settings.redis_url.get_secret_value(),
            cluster=options.cluster,
            prefix=options.prefix,
            max_connections=options.max_connections,
            client_name="chatcore-api",
            # The live feed blocks at most this long; the socket timeout is derived from it.
            max_block=max(settings.feed_block, 2.0),
        )
    )


def _redis_store(conn: RedisConnection) -> EventStore:
    from chatcore_adapters.redis import RedisEventStore

    return RedisEventStore(conn)


def _redis_cache(conn: RedisConnection) -> SessionCache:
    from chatcore_adapters.redis import RedisSessionCache

    return RedisSessionCache(conn)


def _redis_queue(conn: RedisConnection, settings: ApiSettings, clock: Clock) -> WorkQueue:
    from chatcore_adapters.redis import RedisWorkQueue

    return RedisWorkQueue(conn, reclaim_after=settings.redis.reclaim_after, clock=clock)


def _redis_leases(conn: RedisConnection) -> Leases:
    from chatcore_adapters.redis import RedisLeases

    return RedisLeases(conn)


def _redis_heartbeats(conn: RedisConnection) -> Heartbeats:
    from chatcore_adapters.redis import RedisHeartbeats

    return RedisHeartbeats(conn)


def _service_settings(settings: ApiSettings) -> ServiceSettings:
    return ServiceSettings(limits=Limits(max_message_chars=settings.max_message_chars))


def _llm(settings: ApiSettings) -> LLM:
    if settings.worker.llm_factory is not None:
        # A model of your own, as `chatcore worker` loads it (the in-process worker uses it).
        from chatcore_api.worker_runtime import llm_from_factory

        return llm_from_factory(settings.worker.llm_factory)
    return build_llm(settings.llm)


def _token_signer(settings: ApiSettings, clock: Clock) -> TokenSigner:
    key, generated = effective_secret(settings)
    if generated:
        log.warning(
            "no CHATCORE_SECRET_KEY set: using a random key for this process; sessions will "
            "not survive a restart"
        )
    return TokenSigner(key, ttl=settings.token_ttl, clock=clock)


def _worker_settings(settings: ApiSettings) -> WorkerSettings:
    w = settings.worker
    return WorkerSettings(
        concurrency=w.concurrency,
        claim_block=w.claim_block,
        max_attempts=w.max_attempts,
        heartbeat_interval=w.heartbeat_interval,
        heartbeat_ttl=w.heartbeat_ttl,
        backoff_max=w.backoff_max,
    )


def _generation_settings(settings: ApiSettings) -> GenerationSettings:
    w = settings.worker
    return GenerationSettings(
        flush_interval=w.flush_interval,
        lease_ttl=w.lease_ttl,
        keepalive_interval=w.keepalive_interval,
    )


def _worker(
    settings: ApiSettings,
    queue: WorkQueue,
    generator: ReplyGenerator,
    service: ChatService,
    clock: Clock,
    heartbeats: Heartbeats,
) -> WorkerLoop:
    host = socket.gethostname()
    return WorkerLoop(
        queue=queue,
        generator=generator,
        service=service,
        clock=clock,
        worker_id=f"api-{host}-{os.getpid()}-{secrets.token_hex(3)}",
        settings=_worker_settings(settings),
        heartbeats=heartbeats,
        host=host,
        pid=os.getpid(),
    )


def _connection_settings(settings: ApiSettings) -> ConnectionSettings:
    return ConnectionSettings(
        max_frame_bytes=settings.max_frame_bytes,
        max_message_chars=settings.max_message_chars,
        messages_per_minute=settings.messages_per_minute,
        hello_timeout=settings.hello_timeout,
        idle_timeout=settings.idle_timeout,
        send_queue_limit=settings.send_queue_limit,
        send_timeout=settings.send_timeout,
        max_replay_events=settings.max_replay_events,
    )


def _message_limiter(settings: ApiSettings, clock: Clock) -> RateLimiter:
    return RateLimiter.per_minute(
        settings.messages_per_minute, settings.messages_burst, clock.monotonic
    )


def _session_limiter(settings: ApiSettings, clock: Clock) -> RateLimiter:
    burst = max(1, int(settings.sessions_per_minute // 4))
    return RateLimiter.per_minute(settings.sessions_per_minute, burst, clock.monotonic)


def _feed(settings: ApiSettings, store: EventStore, metrics: ApiMetrics) -> SessionFeed:
    return SessionFeed(store, block=settings.feed_block, metrics=metrics)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=ApiSettings)

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(RandomIds)
    metrics = providers.Singleton(ApiMetrics)

    backend = providers.Callable(_backend, settings)
    redis = providers.Singleton(_redis_connection, settings)

    store = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryEventStore, clock),
        redis=providers.Singleton(_redis_store, redis),
    )
    cache = providers.Selector(
        backend,
        memory=providers.Singleton(MemorySessionCache, clock),
        redis=providers.Singleton(_redis_cache, redis),
    )
    queue = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryWorkQueue, clock),
        redis=providers.Singleton(_redis_queue, redis, settings, clock),
    )
    leases = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryLeases, clock),
        redis=providers.Singleton(_redis_leases, redis),
    )
    heartbeats = providers.Selector(
        backend,
        memory=providers.Singleton(MemoryHeartbeats, clock),
        redis=providers.Singleton(_redis_heartbeats, redis),
    )

    llm = providers.Singleton(_llm, settings)

    service = providers.Singleton(
        ChatService,
        store=store,
        cache=cache,
        queue=queue,
        clock=clock,
        ids=ids,
        settings=providers.Callable(_service_settings, settings),
    )
    generator = providers.Singleton(
        ReplyGenerator,
        service=service,
        llm=llm,
        leases=leases,
        clock=clock,
        ids=ids,
        settings=providers.Callable(_generation_settings, settings),
    )
    worker = providers.Singleton(_worker, settings, queue, generator, service, clock, heartbeats)

    tokens = providers.Singleton(_token_signer, settings, clock)
    sessions = providers.Singleton(SessionManager, service=service, tokens=tokens)
    feed = providers.Singleton(_feed, settings, store, metrics)
    connections = providers.Singleton(ConnectionManager, feed, metrics)
    connection_settings = providers.Callable(_connection_settings, settings)
    message_limiter = providers.Singleton(_message_limiter, settings, clock)
    session_limiter = providers.Singleton(_session_limiter, settings, clock)
