"""Reply generation and the worker loop over the in-memory adapters."""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from chatcore import decisions
from chatcore.errors import LLMError
from chatcore.events import (
    TERMINAL_REPLY_EVENTS,
    Event,
    MessageSubmitted,
    Recorded,
    ReplyAbandoned,
    ReplyCancelled,
    ReplyCompleted,
    ReplyDelta,
    ReplyFailed,
    ReplyModelSwitched,
    ReplyStarted,
)
from chatcore.generation import GenerationSettings, Outcome, lease_key, text_due
from chatcore.ports import CachedView, CompletionRequest, LLMChunk, TextDelta, WorkItem
from chatcore.reply_inbox import ReplyInbox
from chatcore.service import OpenedSession
from chatcore.view import ChatMessage, SessionView
from chatcore_adapters.memory import MemoryEventStore, MemoryLeases, MemorySessionCache
from chatcore_adapters.system import SystemClock
from tests.support.harness import FAST, Harness
from tests.support.scripted_llm import ScriptedLLM


async def submit(
    h: Harness, text: str = "Hi", client_id: str = "c1"
) -> tuple[OpenedSession, WorkItem]:
    s = await h.service.open_session()
    return s, await send(h, s, text, client_id)


async def send(h: Harness, s: OpenedSession, text: str = "Hi", client_id: str = "c1") -> WorkItem:
    """Submit a message to an open session: the work item a worker would claim."""
    res = await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id=client_id, text=text
    )
    return WorkItem(
        session_id=s.session_id,
        conversation_id=s.conversation_id,
        message_id=res.message_id,
        enqueued_at=h.clock.now(),
    )


def of(records: list[Recorded], kind: type) -> list:  # type: ignore[type-arg]
    return [r.event for r in records if isinstance(r.event, kind)]


async def test_a_reply_streams_deltas_and_completes_with_usage() -> None:
    h = Harness(llm=ScriptedLLM(words=["Hel", "lo", " world", "!"]))
    s, item = await submit(h)
    outcome = await h.generator().generate(item, delivery_id="d1", owner="w1")
    assert outcome is Outcome.COMPLETED
    log = await h.service.events_after(s.session_id, None)
    assert "".join(d.text for d in of(log, ReplyDelta)) == "Hello world!"
    (done,) = of(log, ReplyCompleted)
    assert done.usage.completion_tokens == 4
    view = await h.service.load(s.session_id)
    assert view.conversations[s.conversation_id].messages[-1].text == "Hello world!"


async def test_deltas_arriving_together_are_batched_into_fewer_events() -> None:
    h = Harness(llm=ScriptedLLM(words=[f"w{n} " for n in range(200)]))
    s, item = await submit(h)
    await h.generator().generate(item, delivery_id="d1", owner="w1")
    deltas = of(await h.service.events_after(s.session_id, None), ReplyDelta)
    assert len(deltas) < 50
    assert "".join(d.text for d in deltas) == "".join(f"w{n} " for n in range(200))


async def test_the_prompt_carries_the_profile_and_the_history() -> None:
    llm = ScriptedLLM()
    h = Harness(llm=llm)
    s = await h.service.open_session(display_name="Ada", language="French")
    for n in range(2):
        res = await h.service.submit_message(
            s.session_id, conversation_id=s.conversation_id, client_message_id=f"c{n}", text=f"q{n}"
        )
        item = WorkItem(
            session_id=s.session_id,
            conversation_id=s.conversation_id,
            message_id=res.message_id,
            enqueued_at=h.clock.now(),
        )
        await h.generator().generate(item, delivery_id=f"d{n}", owner="w")
    request = llm.requests[-1]
    assert "Ada" in request.messages[0].content
    assert "French" in request.messages[0].content
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[-1].content == "q1"


async def test_a_model_error_fails_the_reply_with_a_readable_reason_and_keeps_the_message() -> None:
    llm = ScriptedLLM(
        words=["a", "b", "c"], fail_after=2, error=LLMError("rate_limited", "Too many requests.")
    )
    h = Harness(llm=llm)
    s, item = await submit(h)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.FAILED
    log = await h.service.events_after(s.session_id, None)
    (failed,) = of(log, ReplyFailed)
    assert (failed.code, failed.reason, failed.partial_text) == (
        "llm_rate_limited",
        "Too many requests.",
        "ab",
    )
    view = await h.service.load(s.session_id)
    assert [m.role for m in view.conversations[s.conversation_id].messages] == ["user", "assistant"]


async def test_a_model_switch_is_recorded_and_both_models_are_credited() -> None:
    h = Harness(llm=ScriptedLLM(words=["a", "b", "c", "d"], switch_after=2))
    s, item = await submit(h)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    log = await h.service.events_after(s.session_id, None)
    (switch,) = of(log, ReplyModelSwitched)
    assert (switch.from_model, switch.to_model) == ("scripted", "fallback")
    view = await h.service.load(s.session_id)
    reply = view.conversations[s.conversation_id].messages[-1]
    assert reply.models == ["scripted", "fallback"]
    assert reply.text == "abcd"


async def test_cancel_stops_the_model_quickly_and_keeps_the_partial_answer() -> None:
    """I7: the user's Stop reaches the generating worker, which closes the model stream."""
    llm = ScriptedLLM(words=[f"w{n} " for n in range(400)], delay=0.02)
    h = Harness(llm=llm)
    s, item = await submit(h)
    task = asyncio.create_task(h.generator().generate(item, delivery_id="d1", owner="w1"))
    await h.wait_for(
        s.session_id,
        lambda v: (
            (p := v.conversations[s.conversation_id].pending) is not None
            and p.reply is not None
            and p.reply.chunks
        ),
    )
    await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    outcome = await asyncio.wait_for(task, timeout=2)
    assert outcome is Outcome.CANCELLED
    assert llm.closed_early == 1
    log = await h.service.events_after(s.session_id, None)
    (cancelled,) = of(log, ReplyCancelled)
    said = "".join(d.text for d in of(log, ReplyDelta))
    assert cancelled.partial_text == said
    assert said.startswith("w0 ")
    assert len(of(log, ReplyCompleted)) == 0


async def test_cancel_is_noticed_while_the_model_is_silent() -> None:
    llm = ScriptedLLM(words=["a", "b"], first_delay=30)
    h = Harness(llm=llm)
    s, item = await submit(h)
    task = asyncio.create_task(h.generator().generate(item, delivery_id="d1", owner="w1"))
    await h.wait_for(
        s.session_id,
        lambda v: v.conversations[s.conversation_id].pending.reply is not None,
    )
    await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    assert await asyncio.wait_for(task, timeout=2) is Outcome.CANCELLED
    assert llm.closed_early == 1


async def test_a_duplicate_delivery_does_not_start_a_second_reply() -> None:
    h = Harness(llm=ScriptedLLM(words=["x"] * 20, delay=0.01))
    s, item = await submit(h)
    gen = h.generator()
    outcomes = await asyncio.gather(
        gen.generate(item, delivery_id="d1", owner="w1"),
        gen.generate(item, delivery_id="d2", owner="w2"),
    )
    assert sorted(outcomes) == sorted([Outcome.COMPLETED, Outcome.BUSY])
    log = await h.service.events_after(s.session_id, None)
    assert len(of(log, ReplyStarted)) == 1
    again = await gen.generate(item, delivery_id="d3", owner="w3")
    assert again is Outcome.ALREADY_ANSWERED


async def test_a_dead_worker_s_reply_is_abandoned_and_answered_again_once() -> None:
    """I6: the item reclaimed from a dead consumer (same delivery id) takes the lease over,
    marks the dead attempt abandoned, and produces exactly one completed reply."""
    h = Harness(llm=ScriptedLLM(words=["fresh"]))
    s, item = await submit(h)
    view = await h.service.load(s.session_id)
    await h.service.execute(
        s.session_id,
        view,
        lambda v: decisions.start_reply(
            v, h.clock.now(), message_id=item.message_id, reply_id="rep_dead", model="m"
        ),
    )
    await h.leases.acquire(lease_key(item), "d1|dead-worker", 60)
    gen = h.generator()
    assert await gen.generate(item, delivery_id="other", owner="w2") is Outcome.BUSY
    assert await gen.generate(item, delivery_id="d1", owner="w2") is Outcome.COMPLETED
    log = await h.service.events_after(s.session_id, None)
    assert [e.reply_id for e in of(log, ReplyAbandoned)] == ["rep_dead"]
    assert [e.attempt for e in of(log, ReplyStarted)] == [1, 2]
    terminals = [r.event for r in log if isinstance(r.event, TERMINAL_REPLY_EVENTS)]
    assert len(terminals) == 1
    assert isinstance(terminals[0], ReplyCompleted)


class _ReleasedDuringTakeover(MemoryLeases):
    """The interleaving of the short fault run's lost message, made deterministic: the worker
    that held a delivery finds (at its keep-alive) that another worker reclaimed it, gives up
    and releases its lease exactly between the new worker's ``acquire`` (which saw it held)
    and its ``replace`` (which then finds the lease free instead of held by the old owner)."""

    def __init__(self, clock: SystemClock, old_owner: str) -> None:
        super().__init__(clock)
        self.old_owner = old_owner
        self.released = False

    async def replace(self, key: str, expected_owner: str, owner: str, ttl: float) -> bool:
        if not self.released:
            self.released = True
            await self.release(key, self.old_owner)
        return await super().replace(key, expected_owner, owner, ttl)


async def test_a_takeover_whose_old_owner_lets_go_mid_handover_still_answers() -> None:
    """Before the fix the new worker took the free lease for "another delivery's", reported
    BUSY, and its loop acknowledged the only delivery of the message: an accepted message with
    no terminal reply (I6)."""
    leases = _ReleasedDuringTakeover(SystemClock(), "d1|w1")
    h = Harness(llm=ScriptedLLM(words=["answered"]), with_leases=leases)
    s, item = await submit(h)
    await h.queue.claim("w1", count=1, block=0)
    await leases.acquire(lease_key(item), "d1|w1", 60)  # w1 is generating ...
    # ... and w2 reclaimed the same delivery (d1) after w1 went quiet for too long.
    outcome = await h.generator().generate(item, delivery_id="d1", owner="w2")
    assert leases.released
    assert outcome is Outcome.COMPLETED
    log = await h.service.events_after(s.session_id, None)
    terminals = [r.event for r in log if isinstance(r.event, TERMINAL_REPLY_EVENTS)]
    assert [type(t) for t in terminals] == [ReplyCompleted]


async def test_a_worker_that_wakes_up_after_a_takeover_stops_without_writing() -> None:
    slow = ScriptedLLM(words=[f"{n} " for n in range(100)], delay=0.02)
    h = Harness(llm=slow)
    s, item = await submit(h)
    first = asyncio.create_task(h.generator().generate(item, delivery_id="d1", owner="w1"))
    await h.wait_for(
        s.session_id,
        lambda v: v.conversations[s.conversation_id].pending.reply is not None,
    )
    # Another worker takes the message over (as after the first one's lease ran out).
    view = await h.service.load(s.session_id)
    await h.service.execute(
        s.session_id,
        view,
        lambda v: decisions.start_reply(
            v, h.clock.now(), message_id=item.message_id, reply_id="rep_new", model="m"
        ),
    )
    assert await asyncio.wait_for(first, timeout=3) is Outcome.LOST
    log = await h.service.events_after(s.session_id, None)
    assert of(log, ReplyCompleted) == []


async def test_the_worker_loop_answers_everything_once_across_two_workers() -> None:
    h = Harness(llm=ScriptedLLM(words=["a", "b", "c"], delay=0.005))
    sessions = []
    for n in range(30):
        s, _ = await submit(h, client_id=f"c{n}")
        sessions.append(s)
    stop = asyncio.Event()
    w1, w2 = h.worker("w1", concurrency=4), h.worker("w2", concurrency=4)
    runs = [asyncio.create_task(w.run(stop)) for w in (w1, w2)]
    for s in sessions:
        await h.wait_for(s.session_id, lambda v: v.pending_turns() == [])
    stop.set()
    await asyncio.wait_for(asyncio.gather(*runs), timeout=5)
    for s in sessions:
        log = await h.service.events_after(s.session_id, None)
        assert len(of(log, ReplyCompleted)) == 1
        assert len(of(log, MessageSubmitted)) == 1
    assert w1.stats.completed + w2.stats.completed == 30
    assert w1.stats.completed > 0
    assert w2.stats.completed > 0
    assert h.queue.pending_count() == 0


class Crashing(ScriptedLLM):
    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        if request.messages:
            raise RuntimeError("a bug in the model adapter")
        yield TextDelta("never", "x")


async def test_a_poison_message_is_dead_lettered_and_the_user_is_told() -> None:
    h = Harness(llm=Crashing(), reclaim_after=0.05)
    s, _ = await submit(h)
    stop = asyncio.Event()
    worker = h.worker("w1", max_attempts=3)
    run = asyncio.create_task(worker.run(stop))
    view = await h.wait_for(s.session_id, lambda v: v.pending_turns() == [])
    stop.set()
    await asyncio.wait_for(run, timeout=5)
    reply = view.conversations[s.conversation_id].messages[-1]
    assert reply.status == "failed"
    assert reply.error_code == "undeliverable"
    letters = await h.queue.dead_letters()
    assert [(d.item.session_id, d.attempts) for d in letters] == [(s.session_id, 4)]


async def test_stopping_finishes_replies_in_flight_and_writes_a_heartbeat() -> None:
    h = Harness(llm=ScriptedLLM(words=["x"] * 10, delay=0.02))
    s, _ = await submit(h)
    stop = asyncio.Event()
    worker = h.worker("w1")
    run = asyncio.create_task(worker.run(stop))
    await h.wait_for(
        s.session_id,
        lambda v: v.conversations[s.conversation_id].pending.reply is not None,
    )
    assert [w.worker_id for w in await h.heartbeats.workers()] == ["w1"]
    stop.set()
    await asyncio.wait_for(run, timeout=5)
    view = await h.service.load(s.session_id)
    assert view.conversations[s.conversation_id].messages[-1].status == "complete"
    assert await h.heartbeats.workers() == []


@pytest.mark.parametrize("grace", [0.05])
async def test_stopping_hands_back_what_does_not_finish_in_the_grace_period(grace: float) -> None:
    h = Harness(llm=ScriptedLLM(words=["x"] * 10, first_delay=30))
    s, _ = await submit(h)
    stop = asyncio.Event()
    run = asyncio.create_task(h.worker("w1").run(stop, grace=grace))
    await h.wait_for(
        s.session_id,
        lambda v: v.conversations[s.conversation_id].pending.reply is not None,
    )
    stop.set()
    await asyncio.wait_for(run, timeout=5)
    assert h.queue.pending_count() == 1  # unacknowledged: another worker reclaims it


async def test_text_after_a_quiet_interval_is_written_at_once_and_bursts_are_batched() -> None:
    """The flush is a leading-edge throttle: a token arriving when nothing was written for
    ``flush_interval`` goes out at once (no added latency for a paced model); tokens arriving
    within the interval after a write wait for its end and share one append."""
    llm = ScriptedLLM(words=["a", "b", "c", "d"], delay=0.05)
    settings = FAST.model_copy(update={"flush_interval": 0.5, "cancel_poll_interval": 5.0})
    h = Harness(llm=llm, generation=settings)
    s, item = await submit(h)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    deltas = [d.text for d in of(await h.service.events_after(s.session_id, None), ReplyDelta)]
    # "a" alone at once; "b", "c", "d" came within 0.5 s of that write: one more append.
    assert deltas == ["a", "bcd"]


async def test_a_slow_model_early_by_jitter_is_not_held_back() -> None:
    """A token from a model whose tokens come on average at least half an interval apart is
    written at once, even inside the interval: a model streaming at about the flush rate, whose
    tokens jitter a little early, is not delayed by the throttle (it would wait for the
    interval's end)."""
    llm = ScriptedLLM(words=["a", "b", "c", "d"], delay=0.3)
    settings = FAST.model_copy(update={"flush_interval": 0.5, "cancel_poll_interval": 5.0})
    h = Harness(llm=llm, generation=settings)
    s, item = await submit(h)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    deltas = of(await h.service.events_after(s.session_id, None), ReplyDelta)
    # They came 0.3 s apart (>= 0.25 s): four appends, none waited for the interval's end
    # (which would have held "b" until 0.5 s and joined "c" and "d").
    assert [d.text for d in deltas] == ["a", "b", "c", "d"]
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(deltas)]
    assert all(0.2 < gap < 0.4 for gap in gaps), gaps


class CountingLLM:
    """Streams one word, after counting the history messages alive in the process."""

    name = "counting"

    def __init__(self) -> None:
        self.alive: list[int] = []

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        gc.collect()
        self.alive.append(sum(isinstance(o, ChatMessage) for o in gc.get_objects()))
        yield TextDelta(text="ok", model=self.name)


async def test_a_reply_in_progress_holds_its_turn_not_the_session_history() -> None:
    h = Harness()
    s = await h.service.open_session()
    for n in range(40):  # 80 finished messages of history
        item = await send(h, s, "q", f"c{n}")
        assert await h.generator().generate(item, delivery_id=f"d{n}", owner="w") is (
            Outcome.COMPLETED
        )
    counting = CountingLLM()
    item = await send(h, s, "q", "last")
    outcome = await h.generator(counting).generate(item, delivery_id="dl", owner="w")
    assert outcome is Outcome.COMPLETED
    # While it streamed, the 81 messages of the session were not in memory (the cache keeps
    # bytes, the store keeps events): the reply held its turn and its prompt only.
    assert counting.alive == [0]
    view = await h.service.load(s.session_id)  # and the next reader sees the whole session
    assert len(view.conversations[s.conversation_id].messages) == 82


async def test_replies_take_turns_to_hold_a_whole_session_view() -> None:
    h = Harness(generation=FAST.model_copy(update={"max_whole_views": 2}))
    loading = peak = 0
    load = h.service.load

    async def slow_load(session_id: str) -> SessionView:
        nonlocal loading, peak
        loading += 1
        peak = max(peak, loading)
        try:
            await asyncio.sleep(0.02)  # a big session takes a while to decode
            return await load(session_id)
        finally:
            loading -= 1

    h.service.load = slow_load  # type: ignore[method-assign]
    items = [(await submit(h, client_id=f"c{n}"))[1] for n in range(8)]
    gen = h.generator()
    outcomes = await asyncio.gather(
        *(gen.generate(item, delivery_id=f"d{n}", owner="w") for n, item in enumerate(items))
    )
    assert outcomes == [Outcome.COMPLETED] * 8
    assert peak == 2  # eight replies at once, never more than two whole views


def test_max_whole_views_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_whole_views"):
        GenerationSettings(max_whole_views=0)


class CacheAsked(MemorySessionCache):
    """Tells when a worker started loading a session (its first step is the cache)."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.asked = asyncio.Event()

    async def get(self, session_id: str) -> CachedView | None:
        self.asked.set()
        return await super().get(session_id)


class LeaseAfterLoad(MemoryLeases):
    """Takes a lease only once the session is being loaded (or after 2 s without)."""

    def __init__(self, cache: CacheAsked) -> None:
        super().__init__(SystemClock())
        self.cache = cache
        self.waited_for_load: list[bool] = []

    async def acquire(self, key: str, owner: str, ttl: float) -> str | None:
        try:
            async with asyncio.timeout(2):
                await self.cache.asked.wait()
            self.waited_for_load.append(True)
        except TimeoutError:
            self.waited_for_load.append(False)
        return await super().acquire(key, owner, ttl)


async def test_the_lease_and_the_session_are_asked_for_together() -> None:
    """One wait instead of two before a reply starts: the load does not wait for the lease."""
    cache = CacheAsked()
    leases = LeaseAfterLoad(cache)
    h = Harness(with_cache=cache, with_leases=leases)
    _, item = await submit(h)
    cache.asked.clear()
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    assert leases.waited_for_load == [True]


class StartWaitsForTheModel(MemoryEventStore):
    """Holds the append of a reply's start until the model has been asked (at most 2 s)."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.model_asked = asyncio.Event()
        self.model_asked_first: list[bool] = []
        self.before_start: Callable[[], Awaitable[None]] | None = None

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        if any(isinstance(e, ReplyStarted) for e in events):
            try:
                async with asyncio.timeout(2):
                    await self.model_asked.wait()
                self.model_asked_first.append(True)
            except TimeoutError:
                self.model_asked_first.append(False)
            if self.before_start is not None:
                await self.before_start()
        return await super().append(session_id, events, expected_version=expected_version)


class AskedLLM(ScriptedLLM):
    def __init__(self, store: StartWaitsForTheModel, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        self.store.model_asked.set()
        async for chunk in super().stream(request):
            yield chunk


async def test_the_model_is_asked_while_the_reply_start_is_written() -> None:
    """The model's time to first token overlaps the start's append; its first words wait in
    the reply's inbox and follow the start in the log."""
    store = StartWaitsForTheModel()
    h = Harness(llm=AskedLLM(store, words=["Hel", "lo"]), with_store=store)
    s, item = await submit(h)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    assert store.model_asked_first == [True]
    log = await h.service.events_after(s.session_id, None)
    kinds = [type(r.event) for r in log if r.event.__class__ is not MessageSubmitted]
    assert kinds.index(ReplyStarted) < kinds.index(ReplyDelta)
    assert "".join(d.text for d in of(log, ReplyDelta)) == "Hello"


async def test_a_reply_stopped_before_its_start_was_written_closes_the_model_it_asked() -> None:
    store = StartWaitsForTheModel()
    llm = AskedLLM(store, words=[f"w{n} " for n in range(50)], delay=0.05)
    h = Harness(llm=llm, with_store=store)
    s, item = await submit(h)

    async def stop() -> None:
        await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)

    store.before_start = stop
    # The Stop ended the turn before the reply began: there is nothing left to answer.
    outcome = await h.generator().generate(item, delivery_id="d1", owner="w1")
    assert outcome is Outcome.ALREADY_ANSWERED
    assert llm.closed_early == 1
    log = await h.service.events_after(s.session_id, None)
    assert of(log, ReplyStarted) == [] and of(log, ReplyDelta) == []


def test_a_slow_model_s_token_found_late_waits_for_the_interval() -> None:
    """A lagging event loop must not be taken for a slow model: that would write one append
    per token exactly when the process is overloaded."""
    s = GenerationSettings(flush_interval=0.015)
    inbox = ReplyInbox()
    inbox.put(TextDelta(text="a", model="m"), now=0.0, spacing=0.0075)
    inbox.take_text()
    inbox.put(TextDelta(text="b", model="m"), now=0.020, spacing=0.0075)  # 20 ms apart
    assert inbox.spaced
    last_flush = 0.018  # the previous append ended 2 ms before this token came
    assert text_due(inbox, now=0.021, last_flush=last_flush, s=s)  # handled at once: written
    assert not text_due(inbox, now=0.030, last_flush=last_flush, s=s)  # 10 ms late: waits
    assert text_due(inbox, now=0.033, last_flush=last_flush, s=s)  # until the interval ends


class Batches(MemoryEventStore):
    """Records the events of every append; ``before_completion`` runs once, before the first
    append that completes a reply."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.batches: list[list[type]] = []
        self.before_completion: Callable[[], Awaitable[None]] | None = None

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        hook = self.before_completion
        if hook is not None and any(isinstance(e, ReplyCompleted) for e in events):
            self.before_completion = None
            await hook()
        recorded = await super().append(session_id, events, expected_version=expected_version)
        self.batches.append([type(e) for e in events])
        return recorded


async def test_a_reply_s_last_text_and_its_completion_go_in_one_append() -> None:
    """The model's last words and the completion are one append (one round trip less per
    reply), with the model's usage report that came between them."""
    store = Batches()
    words = ["one", " two", " three"]
    h = Harness(llm=ScriptedLLM(words=words, delay=0.05), with_store=store)
    s, item = await submit(h)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    assert store.batches[-1] == [ReplyDelta, ReplyCompleted]
    log = await h.service.events_after(s.session_id, None)
    assert "".join(d.text for d in of(log, ReplyDelta)) == "one two three"
    (done,) = of(log, ReplyCompleted)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (7, 3)
    view = await h.service.load(s.session_id)
    assert view.conversations[s.conversation_id].messages[-1].text == "one two three"


async def test_a_stop_met_by_the_last_append_still_stops_the_reply() -> None:
    """The user's Stop lands just before the last words and the completion are written: the
    append meets a newer log, the words are written and the reply is cancelled, not
    completed."""
    store = Batches()
    h = Harness(llm=ScriptedLLM(words=["one", " two"], delay=0.05), with_store=store)
    s, item = await submit(h)

    async def stop() -> None:
        await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)

    store.before_completion = stop
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.CANCELLED
    log = await h.service.events_after(s.session_id, None)
    assert of(log, ReplyCompleted) == []
    (cancelled,) = of(log, ReplyCancelled)
    assert "".join(d.text for d in of(log, ReplyDelta)) == "one two"
    assert store.batches[-2:] == [[ReplyDelta], [ReplyCancelled]]
    assert cancelled.reply_id == of(log, ReplyDelta)[0].reply_id


class BehindViews:
    """A live feed's views one append behind the log: the pushes of the newest append are
    still on their way (a worker running in the API's process loads through them)."""

    def __init__(self, view: SessionView) -> None:
        self.view = view

    def current(self, session_id: str) -> SessionView | None:
        return self.view.copy_view()

    def offer(self, session_id: str, view: SessionView) -> None:
        return None


async def test_a_message_missing_from_a_view_behind_the_log_is_still_answered() -> None:
    """The worker loads the session from a view that does not have the message yet: the
    log's tail is read before the message is called answered (that would acknowledge its
    only delivery, and the message would never be answered)."""
    h = Harness()
    s = await h.service.open_session()
    behind = await h.service.load(s.session_id)
    item = await send(h, s)
    h.service.views = BehindViews(behind)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    log = await h.service.events_after(s.session_id, None)
    (done,) = of(log, ReplyCompleted)
    assert done.in_reply_to == item.message_id
    # Answered now, the same message from the same stale view is not answered twice.
    again = await h.generator().generate(item, delivery_id="d2", owner="w1")
    assert again is Outcome.ALREADY_ANSWERED
    assert len(of(await h.service.events_after(s.session_id, None), ReplyCompleted)) == 1
