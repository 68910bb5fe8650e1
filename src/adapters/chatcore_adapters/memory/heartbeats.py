"""Worker heartbeats in memory (the embedded mode's in-process worker)."""

from __future__ import annotations

from chatcore.ports import Clock, WorkerStatus


class MemoryHeartbeats:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._beats: dict[str, tuple[float, WorkerStatus]] = {}

    async def beat(self, status: WorkerStatus, *, ttl: float) -> None:
        self._beats[status.worker_id] = (self._clock.monotonic() + ttl, status)

    async def workers(self) -> list[WorkerStatus]:
        now = self._clock.monotonic()
        for worker_id in [w for w, (exp, _) in self._beats.items() if exp <= now]:
            del self._beats[worker_id]
        return [status for _, status in self._beats.values()]

    async def remove(self, worker_id: str) -> None:
        self._beats.pop(worker_id, None)
