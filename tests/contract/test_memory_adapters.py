"""The contract suites, run against the in-memory adapters."""

from __future__ import annotations

from chatcore.ports import EventStore, Heartbeats, Leases, SessionCache, WorkQueue
from chatcore_adapters.memory import (
    MemoryEventStore,
    MemoryHeartbeats,
    MemoryLeases,
    MemorySessionCache,
    MemoryWorkQueue,
)
from chatcore_adapters.system import SystemClock
from tests.contract.event_store_contract import EventStoreContract
from tests.contract.heartbeats_contract import HeartbeatsContract
from tests.contract.leases_contract import LeasesContract
from tests.contract.session_cache_contract import SessionCacheContract
from tests.contract.work_queue_contract import WorkQueueContract


class TestMemoryEventStore(EventStoreContract):
    async def make_store(self) -> EventStore:
        return MemoryEventStore(SystemClock())


class TestMemorySessionCache(SessionCacheContract):
    async def make_cache(self, *, ttl: float) -> SessionCache:
        return MemorySessionCache(SystemClock(), ttl=ttl)

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        assert isinstance(cache, MemorySessionCache)
        cache.put_raw(session_id, raw)


class TestMemoryWorkQueue(WorkQueueContract):
    async def make_queue(self, *, reclaim_after: float) -> WorkQueue:
        return MemoryWorkQueue(SystemClock(), reclaim_after=reclaim_after)


class TestMemoryLeases(LeasesContract):
    async def make_leases(self) -> Leases:
        return MemoryLeases(SystemClock())


class TestMemoryHeartbeats(HeartbeatsContract):
    async def make_heartbeats(self) -> Heartbeats:
        return MemoryHeartbeats(SystemClock())
