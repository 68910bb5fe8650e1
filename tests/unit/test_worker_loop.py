"""The worker loop's guards against deliveries that come back to it: a delivery read just
before the process froze and reclaimed by another worker since, and its own delivery reclaimed
by itself while still working on it. Both could otherwise restart a reply that is doing fine."""

from __future__ import annotations

import asyncio

from chatcore.events import Event, Recorded, ReplyAbandoned, ReplyCompleted, ReplyStarted
from chatcore.generation import GenerationSettings
from chatcore.ports import Clock, Delivery, WorkerStatus
from chatcore_adapters.memory import MemoryHeartbeats, MemoryWorkQueue
from chatcore_adapters.system import SystemClock
from tests.support.factories import ManualClock
from tests.support.harness import Harness
from tests.support.scripted_llm import ScriptedLLM


class LateQueue(MemoryWorkQueue):
    """The in-memory queue, plus deliveries a consumer read earlier and only now sees (its
    process was frozen between the read and the reply): handed out at its next claim."""

    def __init__(self, clock: Clock, *, reclaim_after: float) -> None:
        super().__init__(clock, reclaim_after=reclaim_after)
        self.late: list[Delivery] = []
        self.handed_out = asyncio.Event()

    async def claim(self, consumer: str, *, count: int, block: float) -> list[Delivery]:
        mine = [d for d in self.late if d.consumer == consumer]
        if mine:
            self.late = [d for d in self.late if d.consumer != consumer]
            # The process was frozen inside this claim: it returns that much later.
            await asyncio.sleep(FROZEN)
            self.handed_out.set()
            return mine
        return await super().claim(consumer, count=count, block=block)


# Longer than the worker's fresh_delivery (0.5 s).
FROZEN = 0.7


class CountingQueue(MemoryWorkQueue):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, reclaim_after=30)
        self.touches = 0

    async def touch(self, delivery: Delivery) -> bool:
        self.touches += 1
        return await super().touch(delivery)


async def test_a_fresh_first_delivery_is_worked_on_without_asking_the_queue_again() -> None:
    """The queue hands a new entry to one consumer and reclaims it only after reclaim_after:
    a delivery claimed a moment ago costs no extra round trip before its reply starts."""
    queue = CountingQueue(SystemClock())
    h = Harness(llm=ScriptedLLM(words=["one", " two"]), with_queue=queue)
    opened = await h.service.open_session()
    await h.service.submit_message(
        opened.session_id, conversation_id=opened.conversation_id, client_message_id="c1", text="q"
    )
    stop = asyncio.Event()
    worker = h.worker("w1")
    run = asyncio.create_task(worker.run(stop))
    await h.wait_for(opened.session_id, lambda v: v.pending_turns() == [])
    stop.set()
    await asyncio.wait_for(run, timeout=5)
    assert worker.stats.completed == 1
    assert queue.touches == 0  # (the reply was shorter than a keepalive interval)


def kinds(records: list[Recorded], kind: type[Event]) -> list[Event]:
    return [r.event for r in records if isinstance(r.event, kind)]


async def test_a_delivery_reaching_a_worker_after_a_takeover_is_left_alone() -> None:
    queue_clock = ManualClock()
    queue = LateQueue(queue_clock, reclaim_after=0.1)
    h = Harness(llm=ScriptedLLM(words=["one", " two"]), with_queue=queue)
    opened = await h.service.open_session()
    await h.service.submit_message(
        opened.session_id, conversation_id=opened.conversation_id, client_message_id="c1", text="q"
    )
    stale = await queue.claim("w1", count=1, block=0)  # w1 reads it, then freezes ...
    queue_clock.advance(0.2)  # ... past the reclaim timeout

    stop = asyncio.Event()
    w2 = h.worker("w2")
    runs = [asyncio.create_task(w2.run(stop))]
    await h.wait_for(opened.session_id, lambda v: v.pending_turns() == [])

    queue.late = stale  # w1 wakes up with what it had read
    w1 = h.worker("w1")
    runs.append(asyncio.create_task(w1.run(stop)))
    await asyncio.wait_for(queue.handed_out.wait(), timeout=5)
    await asyncio.sleep(0.2)  # time to (wrongly) start a reply, if it were going to
    stop.set()
    await asyncio.wait_for(asyncio.gather(*runs), timeout=5)

    log = await h.service.events_after(opened.session_id, None)
    assert len(kinds(log, ReplyStarted)) == 1
    assert kinds(log, ReplyAbandoned) == []
    assert len(kinds(log, ReplyCompleted)) == 1
    assert w1.stats.outcomes == {}
    assert w2.stats.completed == 1


async def test_a_worker_does_not_start_a_second_reply_for_a_delivery_it_is_working_on() -> None:
    # The reply renews its delivery every 0.3 s but the queue reclaims after 0.1 s idle, so
    # the worker's own claims keep handing it the delivery it is already answering.
    h = Harness(
        llm=ScriptedLLM(words=[f"w{n} " for n in range(20)], delay=0.05),
        reclaim_after=0.1,
        generation=GenerationSettings(
            flush_interval=0.005, cancel_poll_interval=0.05, lease_ttl=2.0, keepalive_interval=0.3
        ),
    )
    opened = await h.service.open_session()
    await h.service.submit_message(
        opened.session_id, conversation_id=opened.conversation_id, client_message_id="c1", text="q"
    )
    stop = asyncio.Event()
    worker = h.worker("w1")
    run = asyncio.create_task(worker.run(stop))
    await h.wait_for(opened.session_id, lambda v: v.pending_turns() == [])
    stop.set()
    await asyncio.wait_for(run, timeout=5)

    log = await h.service.events_after(opened.session_id, None)
    assert len(kinds(log, ReplyStarted)) == 1
    assert kinds(log, ReplyAbandoned) == []
    assert len(kinds(log, ReplyCompleted)) == 1
    assert worker.stats.completed == 1


class SlowHeartbeats(MemoryHeartbeats):
    """Heartbeats over a slow link: each beat takes a while."""

    async def beat(self, status: WorkerStatus, *, ttl: float) -> None:
        await asyncio.sleep(0.3)
        await super().beat(status, ttl=ttl)


async def test_stopping_while_the_last_reply_finishes_during_the_final_beat_is_clean() -> None:
    llm = ScriptedLLM(words=["a", "b", "c"], delay=0.05)
    h = Harness(llm=llm, with_heartbeats=SlowHeartbeats(SystemClock()))
    opened = await h.service.open_session()
    await h.service.submit_message(
        opened.session_id, conversation_id=opened.conversation_id, client_message_id="c1", text="q"
    )
    stop = asyncio.Event()
    worker = h.worker("w1", heartbeat_interval=5)
    run = asyncio.create_task(worker.run(stop, grace=5))
    await asyncio.wait_for(llm.started.wait(), timeout=5)
    stop.set()  # the reply ends (~0.1 s) while the stopping beat is still being written
    await asyncio.wait_for(run, timeout=5)
    log = await h.service.events_after(opened.session_id, None)
    assert len(kinds(log, ReplyCompleted)) == 1


class SwallowingQueue(MemoryWorkQueue):
    """The in-memory queue behind a slow link whose client swallows the first cancellation
    that reaches it (as ``asyncio.wait_for`` can on Python 3.11)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock, reclaim_after=30)
        self.swallowed = 0

    async def touch(self, delivery: Delivery) -> bool:
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
        return await super().touch(delivery)


async def test_a_reply_past_the_grace_period_is_cut_short_even_if_a_cancellation_is_lost() -> None:
    llm = ScriptedLLM(words=[f"w{n} " for n in range(60)], delay=0.05)
    h = Harness(
        llm=llm,
        generation=GenerationSettings(
            flush_interval=0.005, cancel_poll_interval=0.05, lease_ttl=5.0, keepalive_interval=0.01
        ),
        with_queue=SwallowingQueue(SystemClock()),
    )
    queue = h.queue
    assert isinstance(queue, SwallowingQueue)
    opened = await h.service.open_session()
    await h.service.submit_message(
        opened.session_id, conversation_id=opened.conversation_id, client_message_id="c1", text="q"
    )
    stop = asyncio.Event()
    worker = h.worker("w1")
    run = asyncio.create_task(worker.run(stop, grace=0.3))
    await asyncio.wait_for(llm.started.wait(), timeout=5)
    stop.set()
    await asyncio.wait_for(run, timeout=10)

    assert queue.swallowed == 1
    log = await h.service.events_after(opened.session_id, None)
    assert kinds(log, ReplyCompleted) == []  # handed back, not finished after the grace
    assert worker.stats.completed == 0
