"""The contract suites, run against the in-memory adapters. Those that keep time (the cache's
idle time, leases, heartbeats, the queue's reclaim timeout) run on a clock the test moves, so
their waits cost no real time."""

from __future__ import annotations

import pytest

from chatcore.gcra import Rate
from chatcore.ports import (
    EventStore,
    Heartbeats,
    IntentJournal,
    Leases,
    RateLimits,
    SessionCache,
)
from chatcore_adapters.codec import encode_event
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
from chatcore_adapters.system import SystemClock
from tests.contract.event_store_contract import EventStoreContract
from tests.contract.heartbeats_contract import HeartbeatsContract
from tests.contract.intake_contract import IntakeContract, Parts
from tests.contract.intent_journal_contract import IntentJournalContract
from tests.contract.leases_contract import LeasesContract
from tests.contract.rate_limits_contract import RateLimitsContract
from tests.contract.session_cache_contract import SessionCacheContract
from tests.contract.work_queue_contract import DeadLetteringQueue, WorkQueueContract
from tests.support.factories import ManualClock


class _OnManualClock:
    clock: ManualClock

    @pytest.fixture(autouse=True)
    def _clock(self) -> None:
        self.clock = ManualClock()

    async def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestMemoryEventStore(_OnManualClock, EventStoreContract):
    async def make_store(self, *, retention: float | None = None) -> EventStore:
        return MemoryEventStore(self.clock, retention=retention)

    async def stored_bytes(self, store: EventStore, session_id: str) -> bytes:
        # Everything the store object references for the session, as the codec would write it.
        assert isinstance(store, MemoryEventStore)
        stream = store._streams.get(session_id)
        records = stream.records if stream is not None else []
        return b"".join(encode_event(r.event) for r in records)


class TestMemorySessionCache(_OnManualClock, SessionCacheContract):
    async def make_cache(self, *, ttl: float) -> SessionCache:
        return MemorySessionCache(self.clock, ttl=ttl)

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        assert isinstance(cache, MemorySessionCache)
        cache.put_raw(session_id, raw)


class TestNearCacheOverMemory(_OnManualClock, SessionCacheContract):
    """A process's own views in front of a shared cache keep the same contract."""

    async def make_cache(self, *, ttl: float) -> SessionCache:
        return NearCache(MemorySessionCache(self.clock, ttl=ttl), self.clock, ttl=ttl)

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        assert isinstance(cache, NearCache) and isinstance(cache.shared, MemorySessionCache)
        cache.shared.put_raw(session_id, raw)


class TestMemoryWorkQueue(_OnManualClock, WorkQueueContract):
    async def make_queue(self, *, reclaim_after: float) -> DeadLetteringQueue:
        return MemoryWorkQueue(self.clock, reclaim_after=reclaim_after)


class TestMemoryLeases(_OnManualClock, LeasesContract):
    async def make_leases(self) -> Leases:
        return MemoryLeases(self.clock)


class TestMemoryRateLimits(_OnManualClock, RateLimitsContract):
    async def make_limits(self) -> RateLimits:
        return MemoryRateLimits(self.clock)

    async def test_full_keys_forget_the_ones_as_good_as_new(self) -> None:
        limits = MemoryRateLimits(self.clock, max_keys=10)
        rate = Rate(limit=1, period=1.0, burst=1)
        for n in range(10):
            assert await limits.acquire(f"k{n}", rate) == 0.0
        self.clock.advance(5)
        assert await limits.acquire("new", rate) == 0.0
        assert limits.size == 1, "the ten refilled keys were forgotten"

    async def test_when_every_key_still_matters_the_oldest_quarter_goes(self) -> None:
        limits = MemoryRateLimits(self.clock, max_keys=8)
        rate = Rate(limit=1, period=60.0, burst=1)
        for n in range(8):
            await limits.acquire(f"k{n}", rate)
        await limits.acquire("new", rate)
        assert limits.size == 7
        assert await limits.acquire("k0", rate) == 0.0, "the oldest was forgotten"
        assert await limits.acquire("k7", rate) > 0.0, "a newer one was kept"


class TestMemoryHeartbeats(_OnManualClock, HeartbeatsContract):
    async def make_heartbeats(self) -> Heartbeats:
        return MemoryHeartbeats(self.clock)


class TestMemoryIntentJournal(IntentJournalContract):
    async def make_journal(self) -> IntentJournal:
        return MemoryIntentJournal(SystemClock())


class TestMemoryIntake(IntakeContract):
    async def make_intake(self) -> Parts:
        clock = SystemClock()
        store, queue = MemoryEventStore(clock), MemoryWorkQueue(clock)
        return Parts(MemoryIntake(store, queue), store, queue)
