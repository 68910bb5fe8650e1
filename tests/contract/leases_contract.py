"""The contract every Leases adapter keeps (subclass as ``Test<Adapter>Leases``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatcore.ports import Leases


class LeasesContract:
    async def make_leases(self) -> Leases:
        raise NotImplementedError

    async def close_leases(self, leases: Leases) -> None:
        return None

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` of the adapter's own time pass: real time by default (Redis keeps
        time itself); an adapter built on a clock the test holds advances that instead."""
        await asyncio.sleep(seconds)

    @pytest.fixture
    async def leases(self) -> AsyncIterator[Leases]:
        leases = await self.make_leases()
        try:
            yield leases
        finally:
            await self.close_leases(leases)

    async def test_a_free_lease_is_taken_and_then_reported_held(self, leases: Leases) -> None:
        assert await leases.acquire("k1", "alice", 5) is None
        assert await leases.acquire("k1", "bob", 5) == "alice"

    async def test_only_the_owner_renews_or_releases(self, leases: Leases) -> None:
        await leases.acquire("k2", "alice", 5)
        assert await leases.renew("k2", "alice", 5) is True
        assert await leases.renew("k2", "bob", 5) is False
        await leases.release("k2", "bob")
        assert await leases.acquire("k2", "bob", 5) == "alice"
        await leases.release("k2", "alice")
        assert await leases.acquire("k2", "bob", 5) is None

    async def test_replace_is_a_compare_and_set(self, leases: Leases) -> None:
        await leases.acquire("k3", "alice", 5)
        assert await leases.replace("k3", "carol", "bob", 5) is False
        assert await leases.replace("k3", "alice", "bob", 5) is True
        assert await leases.acquire("k3", "x", 5) == "bob"

    async def test_a_lease_expires_after_its_ttl(self, leases: Leases) -> None:
        await leases.acquire("k4", "alice", 0.2)
        await self.wait(0.4)
        assert await leases.renew("k4", "alice", 5) is False
        assert await leases.acquire("k4", "bob", 5) is None
