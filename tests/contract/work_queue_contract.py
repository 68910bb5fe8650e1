"""The contract every WorkQueue adapter keeps (subclass as ``Test<Adapter>WorkQueue``).

``make_queue(reclaim_after=...)`` must build a queue whose entries idle longer than
``reclaim_after`` seconds at a consumer can be claimed by another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from chatcore.ports import DeadLetterLog, Delivery, WorkItem, WorkQueue
from tests.support.factories import EPOCH, session_id


def item(n: int, sid: str | None = None) -> WorkItem:
    return WorkItem(
        session_id=sid or session_id(), conversation_id="c1", message_id=f"m{n}", enqueued_at=EPOCH
    )


class DeadLetteringQueue(WorkQueue, DeadLetterLog, Protocol):
    """A work queue adapter keeps its dead letters too."""


class WorkQueueContract:
    reclaim_after: float = 0.3

    async def make_queue(self, *, reclaim_after: float) -> DeadLetteringQueue:
        raise NotImplementedError

    async def close_queue(self, queue: DeadLetteringQueue) -> None:
        return None

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` of the adapter's own time pass: real time by default (Redis keeps
        time itself); an adapter built on a clock the test holds advances that instead."""
        await asyncio.sleep(seconds)

    @pytest.fixture
    async def queue(self) -> AsyncIterator[DeadLetteringQueue]:
        queue = await self.make_queue(reclaim_after=self.reclaim_after)
        try:
            yield queue
        finally:
            await self.close_queue(queue)

    async def test_an_item_is_delivered_once_to_one_consumer(
        self, queue: DeadLetteringQueue
    ) -> None:
        it = item(1)
        await queue.enqueue(it)
        got = await queue.claim("a", count=10, block=1)
        assert [d.item for d in got] == [it]
        assert got[0].attempt == 1 and got[0].consumer == "a"
        assert await queue.claim("b", count=10, block=0.05) == []

    async def test_count_is_respected_and_a_session_s_order_kept(
        self, queue: DeadLetteringQueue
    ) -> None:
        sid = session_id()  # (a sharded queue keeps order per session, which is what turns need)
        items = [item(n, sid) for n in range(5)]
        for it in items:
            await queue.enqueue(it)
        first = await queue.claim("a", count=2, block=1)
        rest = await queue.claim("a", count=10, block=1)
        assert [d.item for d in first + rest] == items

    async def test_items_enqueued_at_once_have_distinct_delivery_ids(
        self, queue: DeadLetteringQueue
    ) -> None:
        """A worker tells its own delivery come back by its id: two entries enqueued in the
        same instant (in a sharded queue: to different shards) must not share one."""
        items = [item(n) for n in range(60)]
        await asyncio.gather(*(queue.enqueue(it) for it in items))
        got: list[Delivery] = []
        while len(got) < len(items):
            batch = await queue.claim("a", count=100, block=1)
            assert batch, f"only {len(got)} of {len(items)} items were delivered"
            got += batch
        assert sorted(d.item.message_id for d in got) == sorted(it.message_id for it in items)
        assert len({d.delivery_id for d in got}) == len(items)
        # The id goes on naming the entry: touch and ack take it back.
        for delivery in got:
            assert await queue.touch(delivery)
            await queue.ack(delivery)
        assert await queue.claim("b", count=100, block=0.05) == []

    async def test_claim_waits_for_an_enqueue(self, queue: DeadLetteringQueue) -> None:
        it = item(1)

        async def later() -> None:
            await asyncio.sleep(0.1)
            await queue.enqueue(it)

        task = asyncio.create_task(later())
        got = await queue.claim("a", count=1, block=5)
        await task
        assert [d.item for d in got] == [it]

    async def test_claim_gives_up_after_the_block_time(self, queue: DeadLetteringQueue) -> None:
        assert await queue.claim("a", count=1, block=0.1) == []

    async def test_acknowledged_items_are_never_delivered_again(
        self, queue: DeadLetteringQueue
    ) -> None:
        await queue.enqueue(item(1))
        (d,) = await queue.claim("a", count=1, block=1)
        await queue.ack(d)
        await self.wait(self.reclaim_after + 0.2)
        assert await queue.claim("b", count=10, block=0.05) == []
        assert await queue.recover("a") == []

    async def test_a_restarted_consumer_recovers_its_unacknowledged_items(
        self, queue: DeadLetteringQueue
    ) -> None:
        it = item(1)
        await queue.enqueue(it)
        (d,) = await queue.claim("a", count=1, block=1)
        again = await queue.recover("a")
        assert [(x.item, x.delivery_id, x.attempt) for x in again] == [(it, d.delivery_id, 2)]
        assert await queue.recover("other") == []

    async def test_an_item_idle_at_a_dead_consumer_is_reclaimed_by_another(
        self, queue: DeadLetteringQueue
    ) -> None:
        it = item(1)
        await queue.enqueue(it)
        (d,) = await queue.claim("dead", count=1, block=1)
        assert await queue.claim("live", count=1, block=0.05) == []
        await self.wait(self.reclaim_after + 0.2)
        got = await queue.claim("live", count=1, block=1)
        assert [(x.item, x.delivery_id, x.attempt, x.consumer) for x in got] == [
            (it, d.delivery_id, 2, "live")
        ]
        assert await queue.touch(d) is False  # the dead one lost it
        assert await queue.touch(got[0]) is True

    async def test_touch_keeps_a_live_consumer_s_item(self, queue: DeadLetteringQueue) -> None:
        await queue.enqueue(item(1))
        (d,) = await queue.claim("a", count=1, block=1)
        for _ in range(4):
            await self.wait(self.reclaim_after / 2)
            assert await queue.touch(d)
        assert await queue.claim("b", count=1, block=0.05) == []

    async def test_dead_letter_keeps_the_item_and_reason_and_stops_delivery(
        self, queue: DeadLetteringQueue
    ) -> None:
        it = item(1)
        await queue.enqueue(it)
        (d,) = await queue.claim("a", count=1, block=1)
        await queue.dead_letter(d, "failed 5 times: boom")
        letters = await queue.dead_letters()
        assert [(x.item, x.reason, x.attempts) for x in letters] == [
            (it, "failed 5 times: boom", 1)
        ]
        await self.wait(self.reclaim_after + 0.2)
        assert await queue.claim("b", count=1, block=0.05) == []

    async def test_two_consumers_share_items_without_overlap(
        self, queue: DeadLetteringQueue
    ) -> None:
        items = [item(n) for n in range(20)]
        for it in items:
            await queue.enqueue(it)
        a = await queue.claim("a", count=7, block=1)
        b = await queue.claim("b", count=30, block=1)
        assert len(a) == 7 and len(b) == 13
        assert sorted(d.item.message_id for d in a + b) == sorted(i.message_id for i in items)

    async def test_touching_an_acknowledged_delivery_is_false(
        self, queue: DeadLetteringQueue
    ) -> None:
        await queue.enqueue(item(1))
        (d,) = await queue.claim("a", count=1, block=1)
        await queue.ack(d)
        assert await queue.touch(d) is False

    async def test_dead_letters_keeps_the_newest_oldest_first(
        self, queue: DeadLetteringQueue
    ) -> None:
        items = [item(n) for n in range(4)]
        for it in items:
            await queue.enqueue(it)
        claimed = await queue.claim("a", count=4, block=1)
        assert len(claimed) == 4
        for n, d in enumerate(claimed):
            await queue.dead_letter(d, f"reason {n}")
        letters = await queue.dead_letters(limit=2)
        assert [(x.item, x.reason) for x in letters] == [
            (claimed[2].item, "reason 2"),
            (claimed[3].item, "reason 3"),
        ]
