"""The contract every Heartbeats adapter keeps (subclass as ``Test<Adapter>Heartbeats``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from chatcore.ports import Heartbeats, WorkerStatus

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def status(worker_id: str, *, completed: int = 0, **fields: object) -> WorkerStatus:
    base: dict[str, object] = {
        "worker_id": worker_id,
        "started_at": T0,
        "beat_at": T0 + timedelta(seconds=completed),
        "completed": completed,
    }
    base.update(fields)
    return WorkerStatus.model_validate(base)


class HeartbeatsContract:
    async def make_heartbeats(self) -> Heartbeats:
        raise NotImplementedError

    async def close_heartbeats(self, heartbeats: Heartbeats) -> None:
        return None

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` of the adapter's own time pass: real time by default (Redis keeps
        time itself); an adapter built on a clock the test holds advances that instead."""
        await asyncio.sleep(seconds)

    @pytest.fixture
    async def heartbeats(self) -> AsyncIterator[Heartbeats]:
        heartbeats = await self.make_heartbeats()
        try:
            yield heartbeats
        finally:
            await self.close_heartbeats(heartbeats)

    async def test_nobody_beat_means_no_workers(self, heartbeats: Heartbeats) -> None:
        assert await heartbeats.workers() == []

    async def test_a_beat_is_listed_with_everything_it_said(self, heartbeats: Heartbeats) -> None:
        sent = status(
            "host-1-abc",
            state="stopping",
            in_flight=("s1/m1", "s2/m7"),
            completed=3,
            failed=1,
            host="host",
            pid=4242,
        )
        await heartbeats.beat(sent, ttl=5)
        assert await heartbeats.workers() == [sent]

    async def test_a_new_beat_replaces_the_workers_record(self, heartbeats: Heartbeats) -> None:
        await heartbeats.beat(status("w1", completed=1), ttl=5)
        await heartbeats.beat(status("w1", completed=2), ttl=5)
        assert [w.completed for w in await heartbeats.workers()] == [2]

    async def test_every_worker_is_listed(self, heartbeats: Heartbeats) -> None:
        for n in range(5):
            await heartbeats.beat(status(f"w{n}", completed=n), ttl=5)
        listed = await heartbeats.workers()
        assert sorted(w.worker_id for w in listed) == [f"w{n}" for n in range(5)]

    async def test_a_worker_that_stops_beating_disappears_after_its_ttl(
        self, heartbeats: Heartbeats
    ) -> None:
        await heartbeats.beat(status("short"), ttl=0.2)
        await heartbeats.beat(status("long"), ttl=5)
        assert {w.worker_id for w in await heartbeats.workers()} == {"short", "long"}
        await self.wait(0.4)
        assert [w.worker_id for w in await heartbeats.workers()] == ["long"]

    async def test_beating_again_extends_the_ttl(self, heartbeats: Heartbeats) -> None:
        await heartbeats.beat(status("w1"), ttl=0.3)
        for _ in range(3):
            await self.wait(0.15)
            await heartbeats.beat(status("w1"), ttl=0.3)
        assert [w.worker_id for w in await heartbeats.workers()] == ["w1"]

    async def test_a_removed_worker_is_gone_at_once(self, heartbeats: Heartbeats) -> None:
        await heartbeats.beat(status("w1"), ttl=5)
        await heartbeats.beat(status("w2"), ttl=5)
        await heartbeats.remove("w1")
        await heartbeats.remove("never-seen")
        assert [w.worker_id for w in await heartbeats.workers()] == ["w2"]

    async def test_a_worker_can_beat_again_after_being_removed(
        self, heartbeats: Heartbeats
    ) -> None:
        await heartbeats.beat(status("w1"), ttl=5)
        await heartbeats.remove("w1")
        await heartbeats.beat(status("w1", completed=9), ttl=5)
        assert [w.completed for w in await heartbeats.workers()] == [9]

    async def test_expired_and_live_records_coexist_across_many_beats(
        self, heartbeats: Heartbeats
    ) -> None:
        for n in range(10):
            await heartbeats.beat(status(f"gone{n}"), ttl=0.1)
        await self.wait(0.3)
        await heartbeats.beat(status("alive"), ttl=5)
        assert [w.worker_id for w in await heartbeats.workers()] == ["alive"]
