"""The work queue in memory, with the semantics of a Redis consumer group: new entries,
per-consumer pending entries, reclaiming of entries idle at a dead consumer, delivery counts,
and a dead-letter list."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass

from chatcore.ports import Clock, DeadLetter, Delivery, WorkItem


@dataclass(slots=True)
class _Pending:
    consumer: str
    delivered_at: float
    count: int


class MemoryWorkQueue:
    def __init__(self, clock: Clock, *, reclaim_after: float = 30.0) -> None:
        self._clock = clock
        self.reclaim_after = reclaim_after
        self._ids = itertools.count(1)
        self._items: dict[str, WorkItem] = {}
        self._new: deque[str] = deque()
        self._pending: dict[str, _Pending] = {}
        self._dead: list[DeadLetter] = []
        self._arrived = asyncio.Event()

    async def enqueue(self, item: WorkItem) -> None:
        delivery_id = f"{int(self._clock.now().timestamp() * 1000)}-{next(self._ids)}"
        self._items[delivery_id] = item
        self._new.append(delivery_id)
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    def _deliver(self, delivery_id: str, consumer: str) -> Delivery:
        entry = self._pending.get(delivery_id)
        count = entry.count + 1 if entry else 1
        self._pending[delivery_id] = _Pending(consumer, self._clock.monotonic(), count)
        return Delivery(self._items[delivery_id], delivery_id, count, consumer)

    async def recover(self, consumer: str) -> list[Delivery]:
        mine = [d for d, p in self._pending.items() if p.consumer == consumer]
        return [self._deliver(d, consumer) for d in mine]

    def _claim_now(self, consumer: str, count: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = self._clock.monotonic()
        for delivery_id, entry in list(self._pending.items()):
            if len(out) >= count:
                return out
            if now - entry.delivered_at >= self.reclaim_after:
                out.append(self._deliver(delivery_id, consumer))
        while self._new and len(out) < count:
            out.append(self._deliver(self._new.popleft(), consumer))
        return out

    async def claim(self, consumer: str, *, count: int, block: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, block)
        while True:
            arrived = self._arrived
            out = self._claim_now(consumer, count)
            remaining = deadline - loop.time()
            if out or remaining <= 0:
                return out
            try:
                await asyncio.wait_for(arrived.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                continue

    async def touch(self, delivery: Delivery) -> bool:
        entry = self._pending.get(delivery.delivery_id)
        if entry is None or entry.consumer != delivery.consumer:
            return False
        entry.delivered_at = self._clock.monotonic()
        return True

    async def ack(self, delivery: Delivery) -> None:
        if self._pending.pop(delivery.delivery_id, None) is not None:
            self._items.pop(delivery.delivery_id, None)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._dead.append(DeadLetter(delivery.item, reason, delivery.attempt, self._clock.now()))
        await self.ack(delivery)

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        return self._dead[-limit:]

    def pending_count(self) -> int:
        return len(self._pending)

    def queued_count(self) -> int:
        return len(self._new)
