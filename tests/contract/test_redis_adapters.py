"""The contract suites, run against the Redis adapters on one server and on a 3-node Cluster.

Every adapter gets its own connection and key prefix, so tests never see each other's keys
(and never touch anything but the private servers of ``tests/support/redis_fixtures.py``).
"""

from __future__ import annotations

import pytest
from chatcore_adapters.redis import (
    RedisConnection,
    RedisEventStore,
    RedisLeases,
    RedisSessionCache,
    RedisSettings,
    RedisWorkQueue,
    connect,
)

from chatcore.ports import EventStore, Leases, SessionCache, WorkQueue
from tests.contract.event_store_contract import EventStoreContract
from tests.contract.leases_contract import LeasesContract
from tests.contract.session_cache_contract import SessionCacheContract
from tests.contract.work_queue_contract import WorkQueueContract
from tests.support.redis_server import unique_prefix

pytestmark = pytest.mark.redis


class _OnRedis:
    """Where the adapters of a test class connect to: one server."""

    url: str
    cluster = False

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str) -> None:
        self.url = redis_url

    def connect(self) -> RedisConnection:
        return connect(
            RedisSettings(
                url=self.url,
                cluster=self.cluster,
                prefix=unique_prefix(),
                client_name="chatcore-test",
                max_block=5.0,
                operation_timeout=5.0,
            )
        )


class _OnCluster(_OnRedis):
    """The same, on the three-master cluster."""

    cluster = True

    @pytest.fixture(autouse=True)
    def _server(self, redis_cluster_url: str) -> None:
        self.url = redis_cluster_url


class _Store(_OnRedis, EventStoreContract):
    async def make_store(self) -> EventStore:
        return RedisEventStore(self.connect())

    async def close_store(self, store: EventStore) -> None:
        assert isinstance(store, RedisEventStore)
        await store.conn.aclose()

    async def test_a_long_session_is_read_in_pages(self) -> None:
        """A log longer than a page comes back whole, and ``limit`` across pages holds."""
        from tests.support.factories import delta, session_id

        store = RedisEventStore(self.connect(), page_size=7)
        try:
            sid = session_id()
            recorded = await store.append(sid, [delta(n) for n in range(50)], expected_version=None)
            assert await store.read(sid) == recorded
            assert await store.read(sid, after=recorded[3].position, limit=20) == recorded[4:24]
            assert await store.read(sid, limit=14) == recorded[:14]
        finally:
            await store.conn.aclose()


class _Cache(_OnRedis, SessionCacheContract):
    async def make_cache(self, *, ttl: float) -> SessionCache:
        return RedisSessionCache(self.connect(), ttl=ttl)

    async def close_cache(self, cache: SessionCache) -> None:
        assert isinstance(cache, RedisSessionCache)
        await cache.conn.aclose()

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        assert isinstance(cache, RedisSessionCache)
        await cache.conn.client.set(cache.conn.keys.view(session_id), raw, px=60_000)


class _Queue(_OnRedis, WorkQueueContract):
    async def make_queue(self, *, reclaim_after: float) -> WorkQueue:
        return RedisWorkQueue(self.connect(), reclaim_after=reclaim_after)

    async def close_queue(self, queue: WorkQueue) -> None:
        assert isinstance(queue, RedisWorkQueue)
        await queue.conn.aclose()


class _Leases(_OnRedis, LeasesContract):
    async def make_leases(self) -> Leases:
        return RedisLeases(self.connect())

    async def close_leases(self, leases: Leases) -> None:
        assert isinstance(leases, RedisLeases)
        await leases.conn.aclose()


class TestRedisEventStore(_Store):
    pass


class TestRedisSessionCache(_Cache):
    pass


class TestRedisWorkQueue(_Queue):
    pass


class TestRedisLeases(_Leases):
    pass


@pytest.mark.cluster
class TestClusterEventStore(_OnCluster, _Store):
    pass


@pytest.mark.cluster
class TestClusterSessionCache(_OnCluster, _Cache):
    pass


@pytest.mark.cluster
class TestClusterWorkQueue(_OnCluster, _Queue):
    pass


@pytest.mark.cluster
class TestClusterLeases(_OnCluster, _Leases):
    pass
