"""The conversation lifecycle over the in-memory adapters: regenerate, edit, branch switches,
deletion of a conversation and of a session, the log's cap, retention, and folding a log
recorded before conversations had branches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from chatcore import decisions
from chatcore.decisions import CommandLimits
from chatcore.errors import (
    ReplyInProgress,
    SessionFull,
    SessionNotFound,
    UnknownConversation,
    UnknownMessage,
)
from chatcore.events import (
    TERMINAL_REPLY_EVENTS,
    BranchSelected,
    ConversationDeleted,
    Event,
    MessageEdited,
    ReplyDelta,
    ReplyFailed,
    ReplyRequested,
    SessionDeleted,
)
from chatcore.generation import Outcome
from chatcore.ports import CompletionRequest, LLMChunk
from chatcore.service import OpenedSession, ServiceSettings
from chatcore.view import ChatMessage, SessionView, fold
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.codec import decode_records, decode_view, encode_view
from chatcore_adapters.memory import MemoryEventStore, MemorySessionCache
from chatcore_adapters.settings import ChatcoreSettings, RetentionOptions
from tests.support.factories import EPOCH, CountingIds, ManualClock
from tests.support.harness import Harness
from tests.support.scripted_llm import ScriptedLLM


class Echo(ScriptedLLM):
    """Answers every prompt with "re: " and the text of its last message."""

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        self.words = [f"re: {request.messages[-1].content}"]
        async for chunk in super().stream(request):
            yield chunk


async def answer(h: Harness, *, count: int = 1) -> list[Outcome]:
    """Claim ``count`` work items and answer each, as a worker does."""
    outcomes = []
    for _ in range(count):
        (work,) = await h.queue.claim("w1", count=1, block=1)
        outcomes.append(
            await h.generator().generate(work.item, delivery_id=work.delivery_id, owner="w1")
        )
        await h.queue.ack(work)
    return outcomes


async def say(h: Harness, s: OpenedSession, text: str, cmid: str) -> str:
    res = await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id=cmid, text=text
    )
    await answer(h)
    return res.message_id


def texts(view: SessionView, s: OpenedSession) -> list[str]:
    return [m.text for m in view.conversations[s.conversation_id].messages]


def branch_texts(view: SessionView, s: OpenedSession) -> list[str]:
    return [m.text for m in view.conversations[s.conversation_id].branches]


async def events(h: Harness, s: OpenedSession) -> list[Event]:
    return [r.event for r in await h.store.read(s.session_id)]


# --- regenerate -------------------------------------------------------------------------------


async def test_regenerating_keeps_the_earlier_answer_and_the_worker_answers_again() -> None:
    llm = ScriptedLLM(words=["first answer"])
    h = Harness(llm=llm)
    s = await h.service.open_session()
    question = await say(h, s, "Tell me a joke", "c1")
    llm.words = ["second answer"]

    recorded = await h.service.regenerate_reply(
        s.session_id, conversation_id=s.conversation_id, message_id=question
    )
    assert [type(r.event) for r in recorded] == [ReplyRequested]
    view = await h.service.load(s.session_id)
    assert texts(view, s) == ["Tell me a joke"]  # the path ends at the question meanwhile
    assert branch_texts(view, s) == ["first answer"]
    assert await answer(h) == [Outcome.COMPLETED]

    view = await h.service.load(s.session_id)
    conv = view.conversations[s.conversation_id]
    assert texts(view, s) == ["Tell me a joke", "second answer"]
    versions = conv.siblings(conv.messages[-1].message_id)
    assert [m.text for m in versions] == ["first answer", "second answer"]
    assert all(m.parent_id == question for m in versions)
    # Two turns of the same message, each with exactly one end.
    log = await events(h, s)
    ends = [e for e in log if isinstance(e, TERMINAL_REPLY_EVENTS)]
    assert len(ends) == 2 and {e.in_reply_to for e in ends} == {question}  # type: ignore[attr-defined]
    # The new prompt held the question, not the first answer.
    prompt = [m.content for m in llm.requests[-1].messages[1:]]
    assert prompt == ["Tell me a joke"]


async def test_a_regenerated_answer_can_be_stopped_and_the_old_one_stays_readable() -> None:
    h = Harness(llm=ScriptedLLM(words=["one"]))
    s = await h.service.open_session()
    question = await say(h, s, "Q", "c1")
    await h.service.regenerate_reply(
        s.session_id, conversation_id=s.conversation_id, message_id=question
    )
    await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    (work,) = await h.queue.claim("w1", count=1, block=1)  # the worker finds nothing to do
    outcome = await h.generator().generate(work.item, delivery_id=work.delivery_id, owner="w1")
    assert outcome is Outcome.ALREADY_ANSWERED
    view = await h.service.load(s.session_id)
    conv = view.conversations[s.conversation_id]
    stopped = conv.messages[-1]
    assert (stopped.status, stopped.message_id) == (
        "cancelled",
        f"{question}.reply.{stopped.position}",
    )
    assert [m.text for m in conv.branches] == ["one"]


async def test_a_regenerated_answer_taken_over_from_a_dead_worker_ends_once() -> None:
    """I6 for a regeneration: the dead attempt is abandoned, the delivery reclaimed with the
    same id answers, a duplicate delivery does not; the turn has exactly one end."""
    h = Harness(llm=ScriptedLLM(words=["again"]))
    s = await h.service.open_session()
    question = await say(h, s, "Q", "c1")
    await h.service.regenerate_reply(
        s.session_id, conversation_id=s.conversation_id, message_id=question
    )
    (work,) = await h.queue.claim("w1", count=1, block=1)
    view = await h.service.load(s.session_id)
    await h.service.execute(
        s.session_id,
        view,
        lambda v: decisions.start_reply(
            v, h.clock.now(), message_id=question, reply_id="rep_dead", model="m"
        ),
    )
    await h.leases.acquire(f"reply:{s.session_id}:{question}", f"{work.delivery_id}|dead", 60)
    gen = h.generator()
    assert await gen.generate(work.item, delivery_id="dup", owner="w2") is Outcome.BUSY
    assert await gen.generate(work.item, delivery_id=work.delivery_id, owner="w2") is (
        Outcome.COMPLETED
    )
    log = await events(h, s)
    second_turn = log[[type(e) for e in log].index(ReplyRequested) :]
    assert [type(e).__name__ for e in second_turn if not isinstance(e, ReplyDelta)] == [
        "ReplyRequested",
        "ReplyStarted",
        "ReplyAbandoned",
        "ReplyStarted",
        "ReplyCompleted",
    ]
    view = await h.service.load(s.session_id)
    assert texts(view, s) == ["Q", "again"]


async def test_stop_ends_a_regenerated_answer_mid_stream_keeping_its_text() -> None:
    """I7 for a regeneration: the Stop is noticed, the partial answer kept as the new
    version, the earlier answer untouched."""
    llm = ScriptedLLM(words=["first"])
    h = Harness(llm=llm)
    s = await h.service.open_session()
    question = await say(h, s, "Q", "c1")
    llm.words, llm.delay = [f"w{n} " for n in range(200)], 0.01
    await h.service.regenerate_reply(
        s.session_id, conversation_id=s.conversation_id, message_id=question
    )
    (work,) = await h.queue.claim("w1", count=1, block=1)
    task = asyncio.create_task(
        h.generator().generate(work.item, delivery_id=work.delivery_id, owner="w1")
    )
    await h.wait_for(
        s.session_id,
        lambda v: (
            (p := v.conversations[s.conversation_id].pending) is not None
            and p.reply is not None
            and p.reply.text
        ),
    )
    await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    assert await asyncio.wait_for(task, 10) is Outcome.CANCELLED
    view = await h.service.load(s.session_id)
    conv = view.conversations[s.conversation_id]
    assert conv.messages[-1].status == "cancelled" and conv.messages[-1].text.startswith("w0 ")
    assert [m.text for m in conv.branches] == ["first"]
    assert llm.closed_early == 1


async def test_regenerate_and_edit_are_refused_while_answering_or_for_other_messages() -> None:
    h = Harness(llm=ScriptedLLM())
    s = await h.service.open_session()
    question = await say(h, s, "Q", "c1")
    view = await h.service.load(s.session_id)
    reply = view.conversations[s.conversation_id].messages[-1].message_id
    sid, cid = s.session_id, s.conversation_id
    with pytest.raises(UnknownMessage):
        await h.service.regenerate_reply(sid, conversation_id=cid, message_id=reply)
    with pytest.raises(UnknownMessage):
        await h.service.regenerate_reply(sid, conversation_id=cid, message_id="msg_nope")
    with pytest.raises(UnknownMessage):
        await h.service.edit_message(
            sid, conversation_id=cid, message_id=reply, client_message_id="e1", text="x"
        )
    with pytest.raises(UnknownConversation):
        await h.service.select_branch(sid, conversation_id="nope", message_id=question)
    await h.service.submit_message(sid, conversation_id=cid, client_message_id="c2", text="Q2")
    with pytest.raises(ReplyInProgress):
        await h.service.regenerate_reply(sid, conversation_id=cid, message_id=question)
    with pytest.raises(ReplyInProgress):
        await h.service.edit_message(
            sid, conversation_id=cid, message_id=question, client_message_id="e2", text="x"
        )
    with pytest.raises(ReplyInProgress):
        await h.service.select_branch(sid, conversation_id=cid, message_id=question)
    assert not await h.core.intents.stale(0)  # every refusal cleared its intent


# --- edit and branches ------------------------------------------------------------------------


async def test_editing_a_message_starts_a_branch_prompted_without_the_old_one() -> None:
    llm = Echo()
    h = Harness(llm=llm)
    s = await h.service.open_session()
    sid, cid = s.session_id, s.conversation_id
    first = await say(h, s, "cats?", "c1")
    await say(h, s, "and dogs?", "c2")

    edited = await h.service.edit_message(
        sid, conversation_id=cid, message_id=first, client_message_id="c3", text="birds?"
    )
    assert not edited.duplicate
    assert await answer(h) == [Outcome.COMPLETED]
    view = await h.service.load(sid)
    assert texts(view, s) == ["birds?", "re: birds?"]
    assert branch_texts(view, s) == ["cats?", "re: cats?", "and dogs?", "re: and dogs?"]
    conv = view.conversations[cid]
    assert [m.text for m in conv.siblings(edited.message_id)] == ["cats?", "birds?"]
    assert [m.content for m in llm.requests[-1].messages[1:]] == ["birds?"]

    # The same client message id again: recorded once (I4).
    again = await h.service.edit_message(
        sid, conversation_id=cid, message_id=first, client_message_id="c3", text="fish?"
    )
    assert again.duplicate and again.message_id == edited.message_id
    assert [type(e) for e in await events(h, s)].count(MessageEdited) == 1


async def test_selecting_a_version_brings_back_its_branch_as_it_was_left() -> None:
    h = Harness(llm=Echo())
    s = await h.service.open_session()
    sid, cid = s.session_id, s.conversation_id
    first = await say(h, s, "cats?", "c1")
    await say(h, s, "and dogs?", "c2")
    edited = await h.service.edit_message(
        sid, conversation_id=cid, message_id=first, client_message_id="c3", text="birds?"
    )
    await answer(h)

    recorded = await h.service.select_branch(sid, conversation_id=cid, message_id=first)
    (selected,) = [r.event for r in recorded]
    assert isinstance(selected, BranchSelected)
    view = await h.service.load(sid)
    assert texts(view, s) == ["cats?", "re: cats?", "and dogs?", "re: and dogs?"]
    assert selected.leaf_id == view.conversations[cid].messages[-1].message_id
    assert branch_texts(view, s) == ["birds?", "re: birds?"]
    # Selecting what is already active records nothing.
    assert await h.service.select_branch(sid, conversation_id=cid, message_id=first) == []
    # A new message follows the active path, and the prompt is that path.
    await say(h, s, "and fish?", "c4")
    view = await h.service.load(sid)
    assert texts(view, s)[-2:] == ["and fish?", "re: and fish?"]
    back = await h.service.select_branch(sid, conversation_id=cid, message_id=edited.message_id)
    assert back
    assert texts(await h.service.load(sid), s) == ["birds?", "re: birds?"]


async def test_a_stored_pre_branch_log_folds_as_before() -> None:
    """Records as a chatcore without branches stored them (no parent ids, no new events): the
    same messages as before, in the same order, now chained by parent id, and no branch."""

    def stored(kind: str, v: int = 1, **fields: object) -> bytes:
        return orjson.dumps({"v": v, "type": kind, "at": EPOCH.isoformat(), **fields})

    sid = "S" * 22
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "cost_usd": None}
    raw = [
        stored("session_opened", session_id=sid),
        stored("conversation_started", conversation_id="c1", title="New chat"),
        stored("message_submitted", conversation_id="c1", message_id="m1",
               client_message_id="a", text="hi"),
        stored("conversation_renamed", conversation_id="c1", title="hi"),
        stored("reply_started", conversation_id="c1", reply_id="r1", in_reply_to="m1",
               model="d", attempt=1),
        stored("reply_delta", conversation_id="c1", reply_id="r1", text="hello"),
        stored("reply_completed", v=2, conversation_id="c1", reply_id="r1", in_reply_to="m1",
               model="d", usage=usage),
        stored("message_submitted", conversation_id="c1", message_id="m2",
               client_message_id="b", text="stop"),
        stored("reply_cancelled", conversation_id="c1", reply_id=None, in_reply_to="m2"),
    ]  # fmt: skip
    records = decode_records([(f"1-{n}", r) for n, r in enumerate(raw)])
    view = fold(records)
    conv = view.conversations["c1"]
    at = EPOCH
    assert conv.messages == [
        ChatMessage(message_id="m1", role="user", text="hi", position="1-2", at=at,
                    client_message_id="a"),
        ChatMessage(message_id="r1", role="assistant", text="hello", position="1-6", at=at,
                    in_reply_to="m1", models=["d"],
                    usage={"prompt_tokens": 3, "completion_tokens": 1}, parent_id="m1"),
        ChatMessage(message_id="m2", role="user", text="stop", position="1-7", at=at,
                    client_message_id="b", parent_id="r1"),
        ChatMessage(message_id="m2.reply", role="assistant", text="", position="1-8", at=at,
                    in_reply_to="m2", status="cancelled", parent_id="m2"),
    ]  # fmt: skip
    assert (conv.branches, conv.leaf_id, conv.pending, conv.title) == ([], "m2.reply", None, "hi")
    assert view.anomalies == 0 and view.event_count == len(raw)
    # A view cached by that older version (snapshot 2) is not trusted: it is rebuilt.
    old = orjson.loads(encode_view(view))
    old["snapshot"] = 2
    assert decode_view(orjson.dumps(old)) is None


# --- deletion ---------------------------------------------------------------------------------


async def test_deleting_a_conversation_removes_its_text_from_the_log_and_the_cache() -> None:
    h = Harness(llm=ScriptedLLM(words=["a secret answer"]))
    s = await h.service.open_session()
    sid, cid = s.session_id, s.conversation_id
    await say(h, s, "my secret question", "c1")
    other, _ = await h.service.start_conversation(sid, title="other")
    stale = await h.service.load(sid)  # a reader that folded the log before the deletion

    tombstone = await h.service.delete_conversation(sid, conversation_id=cid)
    assert isinstance(tombstone.event, ConversationDeleted) and tombstone.event.erased >= 6
    stored = b"".join(
        orjson.dumps(r.event.model_dump(mode="json")) for r in await h.store.read(sid)
    )
    assert b"secret" not in stored and cid.encode() in stored  # only the tombstone names it
    # That reader writes its older view back: refused, the cache keeps the newer one.
    await h.cache.put(sid, stale)
    cached = await h.cache.get(sid)
    assert cached is not None and cid not in cached.view.conversations
    assert b"secret" not in encode_view(cached.view)
    view = await h.service.load(sid)
    assert list(view.conversations) == [other]
    assert view.event_count == len(await h.store.read(sid))
    with pytest.raises(UnknownConversation):
        await h.service.submit_message(sid, conversation_id=cid, client_message_id="c9", text="x")


async def test_a_reply_in_progress_stops_when_its_conversation_is_deleted() -> None:
    llm = ScriptedLLM(words=[f"w{n} " for n in range(200)], delay=0.01)
    h = Harness(llm=llm)
    s = await h.service.open_session()
    await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="long"
    )
    (work,) = await h.queue.claim("w1", count=1, block=1)
    task = asyncio.create_task(
        h.generator().generate(work.item, delivery_id=work.delivery_id, owner="w1")
    )
    await h.wait_for(
        s.session_id,
        lambda v: (
            (p := v.conversations[s.conversation_id].pending) is not None
            and p.reply is not None
            and p.reply.text
        ),
    )
    tombstone = await h.service.delete_conversation(s.session_id, conversation_id=s.conversation_id)
    assert await asyncio.wait_for(task, 10) is Outcome.GONE  # acknowledged, not retried
    after = await h.store.read(s.session_id, after=tombstone.position)
    assert after == []  # nothing of the reply was written after the tombstone
    assert not any(isinstance(r.event, ReplyDelta) for r in await h.store.read(s.session_id))
    assert llm.closed_early == 1


async def test_deleting_a_session_removes_everything_and_its_work_finds_nothing() -> None:
    h = Harness(llm=ScriptedLLM())
    s = await h.service.open_session()
    await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="hi"
    )
    stale = await h.service.load(s.session_id)
    await h.service.delete_session(s.session_id)
    assert await h.store.read(s.session_id) == []
    await h.cache.put(s.session_id, stale)  # a reader racing the deletion
    assert await h.cache.get(s.session_id) is None
    with pytest.raises(SessionNotFound):
        await h.service.load(s.session_id)
    with pytest.raises(SessionNotFound):  # a writer holding a view from before
        await h.service.execute(
            s.session_id,
            stale,
            lambda v: [ReplyRequested(at=EPOCH, conversation_id="c", in_reply_to="m",
                                      client_message_id="x")],
        )  # fmt: skip
    assert await answer(h) == [Outcome.GONE]
    with pytest.raises(SessionNotFound):
        await h.service.delete_session(s.session_id)


async def test_subscribers_hear_the_session_deleted_farewell() -> None:
    h = Harness()
    s = await h.service.open_session()
    heard: list[Event] = []
    sub = h.store.subscribe(lambda a: heard.extend(r.event for r in a.records))
    await sub.follow(s.session_id)
    await h.service.delete_session(s.session_id)
    await sub.close()
    assert [type(e) for e in heard] == [SessionDeleted]


# --- the log's cap ----------------------------------------------------------------------------


def capped(max_events: int, reserve: int) -> ServiceSettings:
    return ServiceSettings(limits=CommandLimits(max_events=max_events, reply_reserve=reserve))


async def test_a_full_session_refuses_new_messages_and_a_long_reply_ends_failed() -> None:
    words = [f"w{n} " for n in range(60)]
    h = Harness(llm=ScriptedLLM(words=words, delay=0.01), service_settings=capped(40, 30))
    s = await h.service.open_session()  # 2 events
    sid, cid = s.session_id, s.conversation_id
    await h.service.submit_message(sid, conversation_id=cid, client_message_id="c1", text="go")
    assert await answer(h) == [Outcome.FAILED]
    log = await h.store.read(sid)
    assert len(log) <= 40 + 2
    (end,) = [r.event for r in log if isinstance(r.event, TERMINAL_REPLY_EVENTS)]
    assert isinstance(end, ReplyFailed) and end.code == "session_full"
    assert end.partial_text.startswith("w0 w1 ")  # what was said is kept
    with pytest.raises(SessionFull):
        await h.service.submit_message(sid, conversation_id=cid, client_message_id="c2", text="x")
    with pytest.raises(SessionFull):
        await h.service.start_conversation(sid)
    # Deleting the conversation makes room again.
    await h.service.delete_conversation(sid, conversation_id=cid)
    other, _ = await h.service.start_conversation(sid)
    await h.service.submit_message(sid, conversation_id=other, client_message_id="c3", text="x")


async def test_stop_and_the_end_of_a_reply_are_recorded_even_at_the_cap() -> None:
    h = Harness(llm=ScriptedLLM(), service_settings=capped(20, 10))
    limits = h.service.settings.limits
    s = await h.service.open_session()
    sid, cid = s.session_id, s.conversation_id
    sent = await h.service.submit_message(
        sid, conversation_id=cid, client_message_id="c1", text="go"
    )
    view = await h.service.load(sid)
    await h.service.execute(
        sid,
        view,
        lambda v: decisions.start_reply(
            v, h.clock.now(), message_id=sent.message_id, reply_id="r1", model="m", limits=limits
        ),
    )

    def more_text(v: SessionView) -> list[Event]:
        return decisions.append_text(
            v, h.clock.now(), message_id=sent.message_id, reply_id="r1", text="x", limits=limits
        )

    while view.event_count < 20:  # a reply's text goes on up to the cap itself
        await h.service.execute(sid, view, more_text)
    with pytest.raises(SessionFull):
        await h.service.execute(sid, view, more_text)
    with pytest.raises(SessionFull):
        await h.service.rename_conversation(sid, conversation_id=cid, title="more")
    assert await h.service.cancel_reply(sid, conversation_id=cid)  # the Stop: recorded
    view = await h.service.load(sid)
    await h.service.execute(
        sid,
        view,
        lambda v: decisions.cancel_reply(
            v, h.clock.now(), message_id=sent.message_id, reply_id="r1"
        ),
    )
    view = await h.service.load(sid)
    assert view.event_count == 22 and view.conversations[cid].pending is None
    assert view.conversations[cid].messages[-1].text == "x" * 15  # 20 - 5 events before


# --- retention --------------------------------------------------------------------------------


async def test_an_idle_session_is_deleted_after_the_retention_time() -> None:
    clock = ManualClock()
    chat = bootstrap(
        ChatcoreSettings(retention=RetentionOptions(idle_ttl=3600)),
        clock=clock,
        ids=CountingIds(),
        llm=ScriptedLLM(),
    )
    assert isinstance(chat.store, MemoryEventStore) and isinstance(chat.cache, MemorySessionCache)
    busy = await chat.service.open_session()
    idle = await chat.service.open_session()
    clock.advance(3000)
    await chat.service.rename_conversation(
        busy.session_id, conversation_id=busy.conversation_id, title="still here"
    )
    clock.advance(1000)
    with pytest.raises(SessionNotFound):
        await chat.service.load(idle.session_id)
    assert (await chat.service.load(busy.session_id)).opened
    assert chat.settings.cache_ttl == 3600  # a cached view never outlives its session
