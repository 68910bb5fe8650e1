"""The one Redis client of an application, and the rules every adapter call follows.

:func:`connect` builds a :class:`RedisConnection` from :class:`RedisSettings`: a single client
(``redis://``, ``rediss://`` or a Redis Cluster) with a bounded pool, TCP keepalive, health
checks, and retries with exponential backoff and jitter on connection errors and timeouts.

Three rules keep a blocking read from turning into a silent hang:

* no adapter blocks longer than ``max_block`` seconds (longer waits are cut to it);
* the socket timeout is ``max_block + read_margin``, so a healthy ``BLOCK`` always answers
  before the socket gives up (a shorter socket timeout plus retries would re-send the
  blocking command again and again);
* every adapter call runs under :meth:`RedisConnection.guard`: a hard deadline of
  ``operation_timeout`` seconds plus the call's own block time, and the translation of every
  redis-py exception into :class:`chatcore.errors.StoreUnavailable`, so nothing of redis-py
  leaks through a port.

A single server's pool blocks a caller until a connection is free (``pool_timeout``). redis-py's
asyncio Cluster client has no such pool: past ``max_connections`` to one node it raises
``MaxConnectionsError`` at once, so a burst of requests (many sessions created together) failed
with 503s. On a Cluster, :meth:`RedisConnection.guard` therefore lets at most
``max_connections`` calls run at a time and makes the others wait for a turn, within the same
deadline; a call never holds connections to more nodes than it runs commands on, so no node's
pool can be exhausted.

Two more Cluster rules come from redis-py's asyncio Cluster client (8.1):

* a burst of calls on a client that has not learnt the slot map yet sent some commands to the
  wrong node, and the MOVED replies made the client close *every* connection of every node,
  under the other calls still running (6 of 9 fresh clusters failed a burst of 60 appends).
  :meth:`RedisConnection.guard` therefore has the client learn the slot map before any call;
* a connection closed under a running call can fail inside redis-py with ``AttributeError``
  (its socket already gone) instead of a connection error; on a Cluster that is translated
  like every other failed call (the caller retries), not let through as a crash.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from chatcore.errors import StoreUnavailable
from chatcore_adapters.redis.batching import Batcher
from chatcore_adapters.redis.keys import KeySpace

log = logging.getLogger(__name__)

RedisClient: TypeAlias = Redis | RedisCluster

# Everything redis-py raises (RedisClusterException is not a RedisError), plus raw socket
# errors that can escape while a connection is being set up.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

# Set while a task runs inside a guarded Cluster call, so a guarded call made from within
# another one (a helper that guards its own commands) does not wait for a second turn.
_holding_turn: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "chatcore_redis_holding_turn", default=False
)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How to reach Redis and how long to wait for it. Times are in seconds."""

    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False
    prefix: str = ""
    client_name: str = "chatcore"
    # The longest BLOCK an adapter sends (tail, claim); longer waits are cut to it.
    max_block: float = 10.0
    # How much longer than max_block a socket read may take before it counts as lost.
    read_margin: float = 5.0
    connect_timeout: float = 2.0
    # Hard bound on one adapter call, retries included (blocking calls: plus their block).
    operation_timeout: float = 5.0
    health_check_interval: int = 15
    max_connections: int = 64
    # How long a call waits for a free connection when the pool is exhausted (single node).
    pool_timeout: float = 5.0
    retries: int = 3
    backoff_base: float = 0.05
    backoff_cap: float = 1.0
    # Durable writes: after a write a client is told about (an append, a queued work item),
    # wait until this many replicas have it (WAIT), so that a failover does not lose it; 0: do
    # not wait. A write not replicated within wait_timeout fails (it may still be applied).
    wait_replicas: int = 0
    wait_timeout: float = 1.0
    keepalive_idle: int = 30
    keepalive_interval: int = 10
    keepalive_count: int = 3

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme
        allowed = {"redis", "rediss"} if self.cluster else {"redis", "rediss", "unix"}
        if scheme not in allowed:
            raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
        KeySpace(self.prefix)  # validates the prefix
        for name in ("max_block", "read_margin", "connect_timeout", "operation_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_connections < 1 or self.retries < 0:
            raise ValueError("max_connections must be >= 1 and retries >= 0")
        if self.wait_replicas < 0 or self.wait_timeout <= 0:
            raise ValueError("wait_replicas must be >= 0 and wait_timeout positive")

    @property
    def socket_timeout(self) -> float:
        """Longer than any block time, so a blocking read is never cut by the socket."""
        return self.max_block + self.read_margin


def _keepalive_options(settings: RedisSettings) -> dict[int, int]:
    wanted = {
        "TCP_KEEPIDLE": settings.keepalive_idle,
        "TCP_KEEPINTVL": settings.keepalive_interval,
        "TCP_KEEPCNT": settings.keepalive_count,
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def create_client(settings: RedisSettings) -> RedisClient:
    """The application's client. Nothing is connected until the first command."""
    retry = Retry(
        ExponentialWithJitterBackoff(cap=settings.backoff_cap, base=settings.backoff_base),
        settings.retries,
    )
    if settings.cluster:
        return RedisCluster.from_url(
            settings.url,
            retry=retry,
            max_connections=settings.max_connections,
            socket_timeout=settings.socket_timeout,
            socket_connect_timeout=settings.connect_timeout,
            socket_keepalive=True,
            socket_keepalive_options=_keepalive_options(settings),
            health_check_interval=settings.health_check_interval,
            client_name=settings.client_name,
            decode_responses=False,
        )
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        retry=retry,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        socket_keepalive=True,
        socket_keepalive_options=_keepalive_options(settings),
        health_check_interval=settings.health_check_interval,
        client_name=settings.client_name,
        decode_responses=False,
    )
    return Redis.from_pool(pool)


def create_pubsub_client(
    settings: RedisSettings, *, host: str | None = None, port: int | None = None
) -> Redis:
    """A client of its own for one pub/sub connection (of the server ``settings.url`` names,
    or of one Cluster node): the same credentials, TLS and timeouts as the application's
    client, but no health check (the subscription's reader pings by itself, see ``live.py``)
    and no retries (a dropped subscription must be noticed, never quietly re-established)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "socket_keepalive": True,
        "socket_keepalive_options": _keepalive_options(settings),
        "health_check_interval": 0,
        "retry": Retry(ExponentialWithJitterBackoff(), 0),
        "client_name": f"{settings.client_name}-live",
        "decode_responses": False,
    }
    if host is None:
        return Redis.from_url(settings.url, **kwargs)
    parts = urlsplit(settings.url)
    return Redis(
        host=host,
        port=port or 6379,
        username=parts.username,
        password=parts.password,
        ssl=parts.scheme == "rediss",
        **kwargs,
    )


def is_error(exc: BaseException, code: str) -> bool:
    """True when ``exc`` is a Redis error reply starting with ``code`` (e.g. ``NOGROUP``)."""
    return isinstance(exc, ResponseError) and str(exc).startswith(code)


def _raised_in_redis(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside redis-py (its innermost frame is redis-py's)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and (module == "redis" or module.startswith("redis."))


def unavailable(op: str, exc: BaseException) -> StoreUnavailable:
    """The port error for a failed Redis call (logged; the message stays short)."""
    detail = str(exc).splitlines()[0][:120] if str(exc) else ""
    log.warning(
        "redis call failed",
        extra={"op": op, "error": type(exc).__name__, "detail": detail},
    )
    return StoreUnavailable(f"redis {op} failed ({type(exc).__name__})")


class NotReplicated(RedisError):
    """A write that did not reach ``wait_replicas`` replicas within ``wait_timeout``."""


class RedisConnection:
    """The client, its settings and key layout: what every Redis adapter is built from."""

    def __init__(self, client: RedisClient, settings: RedisSettings) -> None:
        self.client = client
        self.settings = settings
        self.keys = KeySpace(settings.prefix)
        self._refreshed = -1e9
        # Cluster only: turns for calls in flight (see the module's docstring).
        self._turns: asyncio.Semaphore | None = (
            asyncio.Semaphore(settings.max_connections) if self.cluster else None
        )
        # The calls of every adapter that queue up behind others share a round trip (never a
        # blocking one: see batching.py).
        self.batch = Batcher(self)

    @property
    def cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    async def initialized(self) -> None:
        """Make sure a Cluster client knows the slot map (a no-op once it does)."""
        client = self.client
        if isinstance(client, RedisCluster):
            await client.initialize()

    async def refresh_slots(self) -> None:
        """After a failure a Cluster's own retries would not see (a pipeline that targeted a
        node directly), ask the cluster where the slots are now; at most every half second."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._refreshed < 0.5:
            return
        self._refreshed = loop.time()
        try:
            await client.nodes_manager.initialize()
        except REDIS_ERRORS as exc:
            log.info("could not refresh the cluster's slot map", extra={"error": str(exc)})

    def node_of(self, key: str) -> ClusterNode | None:
        """The Cluster node that owns ``key``'s slot (``None`` on a single server)."""
        client = self.client
        if not isinstance(client, RedisCluster):
            return None
        return client.get_node_from_key(key)

    def add_wait(self, pipe: Any, key: str) -> bool:
        """Queue a ``WAIT`` behind the writes ``pipe`` makes to ``key``'s node (on the same
        connection, as WAIT requires); ``False`` when durable writes are off."""
        replicas = self.settings.wait_replicas
        if replicas <= 0:
            return False
        timeout_ms = max(1, int(self.settings.wait_timeout * 1000))
        node = self.node_of(key)
        if node is None:
            pipe.execute_command("WAIT", replicas, timeout_ms)
        else:
            pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
        return True

    def check_wait(self, reply: Any, what: str) -> BaseException | None:
        """The error for a ``WAIT`` reply that counts too few replicas (or is an error)."""
        if isinstance(reply, BaseException):
            return reply
        if int(reply) < self.settings.wait_replicas:
            return NotReplicated(
                f"{what}: {int(reply)} of {self.settings.wait_replicas} replicas within "
                f"{self.settings.wait_timeout:g}s"
            )
        return None

    def block_ms(self, seconds: float) -> int | None:
        """The BLOCK argument for a wait of ``seconds``: ``None`` for no wait at all, else
        1 ms to ``max_block`` (``BLOCK 0`` would mean *forever*, and is never sent)."""
        if seconds <= 0:
            return None
        return max(1, int(min(seconds, self.settings.max_block) * 1000))

    @asynccontextmanager
    async def guard(self, op: str, *, block: float = 0.0) -> AsyncIterator[None]:
        """Run one adapter call: bounded in time, with redis-py's errors translated."""
        deadline = self.settings.operation_timeout + min(max(block, 0.0), self.settings.max_block)
        turns = self._turns
        if turns is not None and _holding_turn.get():
            turns = None
        try:
            async with asyncio.timeout(deadline):
                if turns is None:
                    yield
                    return
                async with turns:
                    token = _holding_turn.set(True)
                    try:
                        # Learn the slot map before the first command (a no-op after).
                        await self.initialized()
                        yield
                    finally:
                        _holding_turn.reset(token)
        except TimeoutError as exc:
            raise unavailable(op, exc) from exc
        except REDIS_ERRORS as exc:
            raise unavailable(op, exc) from exc
        except AttributeError as exc:
            if not self.cluster or not _raised_in_redis(exc):
                raise
            raise unavailable(op, exc) from exc

    async def ping(self, *, timeout: float = 1.0) -> bool:
        """True when Redis answers within ``timeout`` seconds (for a readiness probe)."""
        try:
            async with asyncio.timeout(timeout):
                return bool(await self.client.ping())
        except TimeoutError:
            return False
        except REDIS_ERRORS:
            return False

    async def aclose(self) -> None:
        await self.client.aclose()


def connect(settings: RedisSettings) -> RedisConnection:
    """Build the application's connection (lazy: nothing is sent until it is used).

    Like every asyncio client, it belongs to the event loop that first uses it: build it
    inside the loop that will run the adapters, and ``aclose()`` it there."""
    return RedisConnection(create_client(settings), settings)
