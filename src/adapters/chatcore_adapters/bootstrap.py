"""The composition root: a running chatcore built from its settings, in one place.

Every entry point builds its chatcore here: the bundled API (``chatcore serve``, with its
in-process worker), the worker processes (``chatcore worker``), the test harness, and library
code::

    from chatcore_adapters.bootstrap import bootstrap

    chat = bootstrap()                      # in memory, the offline demo model
    session = await chat.service.open_session()

Which adapter plays which port follows from the settings (``redis_url`` set: Redis, else
memory); any port can be given instead, at the edge, the way a test or an application with
storage of its own does it (``bootstrap(settings, llm=MyModel(), clock=ManualClock())``).
Nothing is connected until first used, so building is cheap and never fails on a network.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatcore.generation import ReplyGenerator
from chatcore.ports import (
    LLM,
    Clock,
    EventStore,
    Heartbeats,
    IdGenerator,
    Intake,
    IntentJournal,
    Leases,
    RateLimits,
    SessionCache,
    WorkQueue,
)
from chatcore.service import ChatService, ServiceSettings
from chatcore.worker import WorkerLoop
from chatcore_adapters.llm import build_llm
from chatcore_adapters.memory import (
    MemoryEventStore,
    MemoryHeartbeats,
    MemoryIntake,
    MemoryIntentJournal,
    MemoryLeases,
    MemoryRateLimits,
    MemorySessionCache,
    MemoryWorkQueue,
)
from chatcore_adapters.near_cache import NearCache
from chatcore_adapters.settings import ChatcoreSettings
from chatcore_adapters.system import RandomIds, SystemClock

if TYPE_CHECKING:
    from chatcore_adapters.redis import RedisConnection, RedisSettings


@dataclass(eq=False, slots=True)
class Chatcore:
    """A running chatcore: its ports, its use cases, and how to make workers for it."""

    settings: ChatcoreSettings
    clock: Clock
    ids: IdGenerator
    store: EventStore
    cache: SessionCache
    queue: WorkQueue
    intents: IntentJournal
    leases: Leases
    heartbeats: Heartbeats
    # Limits every process of the deployment shares (API admission, model-spend budgets).
    rate_limits: RateLimits
    llm: LLM
    service: ChatService
    generator: ReplyGenerator
    # The Redis client bootstrap made for the adapters (None in memory, or when one was given);
    # closed by :meth:`aclose`.
    redis: RedisConnection | None = None
    # What else to close first (a queue's waiting reads).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Calls that reach every part of the storage (each queue shard...): readiness probes.
    probes: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    def worker(self, worker_id: str | None = None) -> WorkerLoop:
        """A worker loop over this chatcore's queue, answering with its model."""
        return WorkerLoop(
            queue=self.queue,
            generator=self.generator,
            service=self.service,
            clock=self.clock,
            worker_id=worker_id or new_worker_id(),
            settings=self.settings.worker,
            heartbeats=self.heartbeats,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

    def rebuilt(
        self, *, settings: ChatcoreSettings | None = None, llm: LLM | None = None
    ) -> Chatcore:
        """The same ports (and so the same sessions and queue) with other settings or another
        model: several workers of one deployment, each with its own model, in a test say."""
        return bootstrap(
            settings or self.settings,
            clock=self.clock,
            ids=self.ids,
            store=self.store,
            cache=self.cache,
            queue=self.queue,
            intents=self.intents,
            leases=self.leases,
            heartbeats=self.heartbeats,
            rate_limits=self.rate_limits,
            llm=llm or self.llm,
            service_settings=self.service.settings,
        )

    async def aclose(self) -> None:
        """Release what was connected (the Redis client); the ports are unusable afterwards."""
        for close in self.closers:
            await close()
        if self.redis is not None:
            await self.redis.aclose()


def new_worker_id(prefix: str = "") -> str:
    """``[<prefix>-]<host>-<pid>-<random>``: unique per process, readable in logs."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
    name = f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
    return f"{prefix}-{name}" if prefix else name


def load_llm(settings: ChatcoreSettings) -> LLM:
    """The configured model: ``worker.llm_factory`` if set, else the ``llm`` settings
    (LiteLLM is imported only when a LiteLLM model is used)."""
    if settings.worker.llm_factory is not None:
        return llm_from_factory(settings.worker.llm_factory)
    return build_llm(settings.llm)


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


def redis_settings(
    settings: ChatcoreSettings, *, client_name: str, max_block: float | None = None
) -> RedisSettings:
    """How a process talks to Redis. ``max_block`` is the longest blocking call it makes (a
    worker's claim, the API's live feed); the socket timeout is derived from it, so a
    connection that died silently is noticed within seconds."""
    from chatcore_adapters.redis import RedisSettings

    if settings.redis_url is None:
        raise ValueError("redis_url is not set")
    return RedisSettings(
        url=settings.redis_url.get_secret_value(),
        cluster=settings.redis.cluster,
        prefix=settings.redis.prefix,
        client_name=client_name,
        max_connections=settings.redis.max_connections,
        max_block=max_block if max_block is not None else settings.worker.claim_block,
        wait_replicas=settings.redis.wait_replicas,
        wait_timeout=settings.redis.wait_timeout,
    )


def intake_for(store: EventStore, queue: WorkQueue) -> Intake | None:
    """Appending and queueing in one step, when ``store`` and ``queue`` keep their data in
    one place: both in memory, in one SQLite database, or on one Redis server (not a Cluster).
    ``None`` otherwise: the service then brackets the two steps with intents."""
    if isinstance(store, MemoryEventStore) and isinstance(queue, MemoryWorkQueue):
        return MemoryIntake(store, queue)
    # (A store of a family whose module was never imported is not of that family: importing
    # it here would need its extra installed.)
    if "chatcore_adapters.sqlite" in sys.modules:
        from chatcore_adapters import sqlite as on_sqlite

        if (
            isinstance(store, on_sqlite.SqliteEventStore)
            and isinstance(queue, on_sqlite.SqliteWorkQueue)
            and store.db is queue.db
        ):
            return on_sqlite.SqliteIntake(store, queue)
    if "chatcore_adapters.redis" in sys.modules:
        from chatcore_adapters import redis as on_redis

        if (
            isinstance(store, on_redis.RedisEventStore)
            and isinstance(queue, on_redis.RedisWorkQueue)
            and store.conn is queue.conn
            and not store.conn.cluster
        ):
            return on_redis.RedisIntake(store, queue)
    return None


def bootstrap(
    settings: ChatcoreSettings | None = None,
    *,
    clock: Clock | None = None,
    ids: IdGenerator | None = None,
    store: EventStore | None = None,
    cache: SessionCache | None = None,
    queue: WorkQueue | None = None,
    intents: IntentJournal | None = None,
    leases: Leases | None = None,
    heartbeats: Heartbeats | None = None,
    rate_limits: RateLimits | None = None,
    intake: Intake | None = None,
    use_intake: bool = True,
    llm: LLM | None = None,
    service_settings: ServiceSettings | None = None,
    redis: RedisConnection | None = None,
    client_name: str = "chatcore",
    max_block: float | None = None,
    near_cache: bool = False,
) -> Chatcore:
    """Build a chatcore from ``settings`` (the defaults: in memory, the demo model). Each
    keyword names a port (or the use cases' settings) to use instead of what the settings
    choose. ``redis`` is a Redis client to build the Redis adapters on instead of one made
    from ``redis_url`` (whoever made it closes it). ``client_name`` and ``max_block`` describe
    this process to Redis (see :func:`redis_settings`). ``near_cache`` puts the process's own
    views in front of the session cache (:mod:`chatcore_adapters.near_cache`; what a worker
    process does, sized by ``worker.near_cache_events``). Unless given (or ``use_intake`` is
    off), the intake is the one of the store and queue when they live together
    (:func:`intake_for`)."""
    settings = settings if settings is not None else ChatcoreSettings()
    clock = clock if clock is not None else SystemClock()
    ids = ids if ids is not None else RandomIds()
    owned: RedisConnection | None = None
    closers: list[Callable[[], Awaitable[None]]] = []
    probes: list[Callable[[], Awaitable[object]]] = []
    missing = None in (store, cache, queue, intents, leases, heartbeats, rate_limits)
    if (settings.backend == "redis" or redis is not None) and missing:
        from chatcore_adapters import redis as on_redis

        if redis is None:
            redis = owned = on_redis.connect(
                redis_settings(settings, client_name=client_name, max_block=max_block)
            )
        store = store or on_redis.RedisEventStore(redis, retention=settings.retention.idle_ttl)
        cache = cache or on_redis.RedisSessionCache(redis, ttl=settings.cache_ttl)
        if queue is None:
            redis_queue = on_redis.RedisWorkQueue(
                redis,
                shards=settings.redis.queue_shards,
                reclaim_after=settings.redis.reclaim_after,
                clock=clock,
            )
            closers.append(redis_queue.aclose)  # (its waiting reads, before the client)
            probes.append(redis_queue.depths)
            queue = redis_queue
        intents = intents or on_redis.RedisIntentJournal(redis, shards=settings.redis.queue_shards)
        leases = leases or on_redis.RedisLeases(redis)
        heartbeats = heartbeats or on_redis.RedisHeartbeats(redis)
        rate_limits = rate_limits or on_redis.RedisRateLimits(redis)
    elif settings.backend == "sqlite" and missing:
        from chatcore_adapters import sqlite as on_sqlite

        lock = on_sqlite.DataDirLock(settings.data_dir).acquire()
        try:
            db = on_sqlite.SqliteDatabase.open(
                settings.database_path,
                on_sqlite.SqliteSettings(
                    synchronous=settings.sqlite.synchronous,
                    busy_timeout=settings.sqlite.busy_timeout,
                    max_bytes=settings.sqlite.max_bytes,
                ),
            )
        except BaseException:
            lock.release()
            raise

        async def close_db() -> None:
            try:
                await db.close()
            finally:
                lock.release()

        closers.append(close_db)
        store = store or on_sqlite.SqliteEventStore(
            db, clock, retention=settings.retention.idle_ttl
        )
        cache = cache or on_sqlite.SqliteSessionCache(db, clock, ttl=settings.cache_ttl)
        queue = queue or on_sqlite.SqliteWorkQueue(
            db, clock, reclaim_after=settings.redis.reclaim_after
        )
        intents = intents or on_sqlite.SqliteIntentJournal(db, clock)
        leases = leases or on_sqlite.SqliteLeases(db, clock)
        heartbeats = heartbeats or on_sqlite.SqliteHeartbeats(db, clock)
        # One process per data directory (the lock above): a limit kept in this process is
        # the deployment's whole limit.
        rate_limits = rate_limits or MemoryRateLimits(clock)
    else:
        store = store or MemoryEventStore(clock, retention=settings.retention.idle_ttl)
        cache = cache or MemorySessionCache(clock, ttl=settings.cache_ttl)
        queue = queue or MemoryWorkQueue(clock, reclaim_after=settings.redis.reclaim_after)
        intents = intents or MemoryIntentJournal(clock)
        leases = leases or MemoryLeases(clock)
        heartbeats = heartbeats or MemoryHeartbeats(clock)
        rate_limits = rate_limits or MemoryRateLimits(clock)
    if near_cache and settings.worker.near_cache_events > 0:
        cache = NearCache(
            cache,
            clock,
            max_events=settings.worker.near_cache_events,
            ttl=min(settings.cache_ttl, 300.0),
        )
    if intake is None and use_intake:
        intake = intake_for(store, queue)
    service = ChatService(
        intake=intake,
        store=store,
        cache=cache,
        queue=queue,
        intents=intents,
        clock=clock,
        ids=ids,
        settings=service_settings or settings.service_settings,
    )
    model = llm if llm is not None else load_llm(settings)
    generator = ReplyGenerator(
        service=service,
        llm=model,
        leases=leases,
        clock=clock,
        ids=ids,
        settings=settings.worker,
        budgets=rate_limits,
    )
    return Chatcore(
        settings=settings,
        clock=clock,
        ids=ids,
        store=store,
        cache=cache,
        queue=queue,
        intents=intents,
        leases=leases,
        heartbeats=heartbeats,
        rate_limits=rate_limits,
        llm=model,
        service=service,
        generator=generator,
        redis=owned,
        closers=closers,
        probes=probes,
    )
