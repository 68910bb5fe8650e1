"""Redis adapters: the production storage of every chatcore port.

``chatcore_adapters.bootstrap.bootstrap`` builds them from settings; by hand, build one
:class:`RedisConnection` per process with :func:`connect` and hand it to each
adapter::

    conn = connect(RedisSettings(url="redis://redis:6379/0"))
    store, cache = RedisEventStore(conn), RedisSessionCache(conn, ttl=3600)
    queue, leases = RedisWorkQueue(conn, reclaim_after=30), RedisLeases(conn)
    intents, heartbeats = RedisIntentJournal(conn), RedisHeartbeats(conn)
    rate_limits = RedisRateLimits(conn)
    ...
    await conn.aclose()

They need redis-py, which comes with the ``redis`` extra: ``pip install 'chatcore[redis]'``.
Without it, importing this package raises an ImportError that says so.
"""

try:
    import redis.asyncio  # noqa: F401 - only to say what is missing, before anything else does
except ModuleNotFoundError as exc:
    if exc.name not in {"redis", "redis.asyncio"}:
        raise
    raise ModuleNotFoundError(
        "chatcore's Redis adapters need redis-py, which the redis extra installs: "
        "pip install 'chatcore[redis]'",
        name=exc.name,
    ) from exc

from chatcore_adapters.redis.cache import RedisSessionCache
from chatcore_adapters.redis.connection import (
    RedisConnection,
    RedisSettings,
    connect,
    create_client,
)
from chatcore_adapters.redis.event_store import RedisEventStore
from chatcore_adapters.redis.heartbeats import RedisHeartbeats
from chatcore_adapters.redis.intake import RedisIntake
from chatcore_adapters.redis.intents import RedisIntentJournal
from chatcore_adapters.redis.keys import KeySpace
from chatcore_adapters.redis.leases import RedisLeases
from chatcore_adapters.redis.queue import RedisWorkQueue
from chatcore_adapters.redis.rate_limits import RedisRateLimits

__all__ = [
    "KeySpace",
    "RedisConnection",
    "RedisEventStore",
    "RedisHeartbeats",
    "RedisIntake",
    "RedisIntentJournal",
    "RedisLeases",
    "RedisRateLimits",
    "RedisSessionCache",
    "RedisSettings",
    "RedisWorkQueue",
    "connect",
    "create_client",
]
