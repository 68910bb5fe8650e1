"""Leases in memory (one process: the embedded mode and tests)."""

from __future__ import annotations

from chatcore.ports import Clock


class MemoryLeases:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._held: dict[str, tuple[str, float]] = {}

    def _holder(self, key: str) -> str | None:
        entry = self._held.get(key)
        if entry is None:
            return None
        if self._clock.monotonic() >= entry[1]:
            del self._held[key]
            return None
        return entry[0]

    async def acquire(self, key: str, owner: str, ttl: float) -> str | None:
        holder = self._holder(key)
        if holder is not None:
            return holder
        self._held[key] = (owner, self._clock.monotonic() + ttl)
        return None

    async def replace(self, key: str, expected_owner: str, owner: str, ttl: float) -> bool:
        if self._holder(key) != expected_owner:
            return False
        self._held[key] = (owner, self._clock.monotonic() + ttl)
        return True

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        return await self.replace(key, owner, owner, ttl)

    async def release(self, key: str, owner: str) -> None:
        if self._holder(key) == owner:
            del self._held[key]
