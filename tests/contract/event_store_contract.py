"""The contract every EventStore adapter keeps. Subclass it as ``Test<Adapter>EventStore`` and
implement ``make_store``; this base is not collected on its own (its name has no Test prefix)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from chatcore.errors import ConcurrencyConflict, InvalidIdentifier
from chatcore.events import (
    BranchSelected,
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    Event,
    MessageEdited,
    ProfileUpdated,
    Recorded,
    ReplyAbandoned,
    ReplyCancelled,
    ReplyCancelRequested,
    ReplyCompleted,
    ReplyDelta,
    ReplyFailed,
    ReplyModelSwitched,
    ReplyRequested,
    ReplyStarted,
    SessionDeleted,
    SessionRestored,
    Usage,
)
from chatcore.ids import parse_position, position_after
from chatcore.ports import Appended, EventStore
from tests.support.factories import EPOCH, HOSTILE_SESSION_IDS, delta, message, opening, session_id


def every_event_type() -> list[Event]:
    return [
        *opening("x" * 22),
        SessionRestored(at=EPOCH, last_seen="1-0"),
        ProfileUpdated(at=EPOCH, display_name="Ada Lovelace", language="français"),
        ConversationRenamed(at=EPOCH, conversation_id="c1", title="Ünïcode ✓ title"),
        message(1),
        ReplyStarted(at=EPOCH, conversation_id="c1", reply_id="r1", in_reply_to="m1", model="demo"),
        delta(1),
        ReplyModelSwitched(
            at=EPOCH, conversation_id="c1", reply_id="r1", from_model="a", to_model="b", reason="x"
        ),
        ReplyAbandoned(
            at=EPOCH, conversation_id="c1", reply_id="r1", in_reply_to="m1", reason="died"
        ),
        ReplyCancelRequested(at=EPOCH, conversation_id="c1", in_reply_to="m1", reply_id="r2"),
        ReplyCancelled(
            at=EPOCH, conversation_id="c1", reply_id="r2", in_reply_to="m1", partial_text="par"
        ),
        ReplyFailed(
            at=EPOCH,
            conversation_id="c1",
            reply_id=None,
            in_reply_to="m2",
            code="llm_timeout",
            reason="The model took too long.",
        ),
        ReplyCompleted(
            at=EPOCH,
            conversation_id="c1",
            reply_id="r3",
            in_reply_to="m3",
            model="demo",
            usage=Usage(prompt_tokens=3, completion_tokens=5, cost_usd=0.25),
        ),
        ReplyRequested(at=EPOCH, conversation_id="c1", in_reply_to="m3", client_message_id="cm3"),
        MessageEdited(
            at=EPOCH,
            conversation_id="c1",
            message_id="m4",
            client_message_id="cm4",
            text="à nouveau",
            edit_of="m1",
            parent_id=None,
        ),
        BranchSelected(at=EPOCH, conversation_id="c1", message_id="m1", leaf_id="r3"),
        ConversationDeleted(at=EPOCH, conversation_id="c2", erased=7),
        SessionDeleted(at=EPOCH),
    ]


class Pushes:
    """A listener that keeps what it is handed (optionally failing on the first push) and lets
    a test wait until a number of records has arrived, however many pushes carried them."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.heard: list[Appended] = []
        self._fail = fail_first
        self._changed = asyncio.Event()
        self._taken = 0

    def __call__(self, appended: Appended) -> None:
        if self._fail:
            self._fail = False
            raise RuntimeError("a listener that breaks once")
        self.heard.append(appended)
        self._changed.set()

    def count(self) -> int:
        return sum(len(a.records) for a in self.heard)

    async def until(self, records: int, timeout: float = 5.0) -> list[Appended]:
        """The pushes heard once ``records`` records have arrived (only the new ones after a
        previous call's), failing after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while self.count() < records:
                self._changed.clear()
                await self._changed.wait()
        taken, self._taken = self._taken, len(self.heard)
        return self.heard[taken:]


SECRET = "the-secret-text-of-a-deleted-conversation"


def two_conversations(sid: str) -> list[Event]:
    """A session whose conversation c1 holds the secret and c2 does not."""
    return [
        *opening(sid),
        ConversationStarted(at=EPOCH, conversation_id="c2", title="other"),
        message(1, "c1"),
        message(2, "c2"),
        ReplyStarted(at=EPOCH, conversation_id="c1", reply_id="r1", in_reply_to="m1", model="d"),
        ReplyDelta(at=EPOCH, conversation_id="c1", reply_id="r1", text=SECRET),
        message(3, "c2"),
    ]


def of_conversation(records: list[Recorded], conversation_id: str) -> list[str]:
    return [
        r.position for r in records if getattr(r.event, "conversation_id", None) == conversation_id
    ]


def tombstone(conversation_id: str = "c1", erased: int = 0) -> list[Event]:
    return [ConversationDeleted(at=EPOCH, conversation_id=conversation_id, erased=erased)]


class EventStoreContract:
    async def make_store(self, *, retention: float | None = None) -> EventStore:
        raise NotImplementedError

    async def close_store(self, store: EventStore) -> None:
        return None

    async def stored_bytes(self, store: EventStore, session_id: str) -> bytes:
        """Everything the store holds of the session's log, as it would persist it (to show
        that erased text is gone from storage, not hidden)."""
        raise NotImplementedError

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` of the adapter's own time pass: real time by default (Redis keeps
        time itself); an adapter built on a clock the test holds advances that instead."""
        await asyncio.sleep(seconds)

    @pytest.fixture
    async def store(self) -> AsyncIterator[EventStore]:
        store = await self.make_store()
        try:
            yield store
        finally:
            await self.close_store(store)

    async def test_an_unknown_session_has_no_events(self, store: EventStore) -> None:
        sid = session_id()
        assert await store.read(sid) == []
        assert await store.last_position(sid) is None

    async def test_append_returns_increasing_positions_and_read_returns_them(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        recorded = await store.append(sid, opening(sid), expected_version=None)
        more = await store.append(sid, [message(1)], expected_version=recorded[-1].position)
        positions = [r.position for r in recorded + more]
        keys = [parse_position(p) for p in positions]
        assert keys == sorted(keys) and len(set(keys)) == 3
        assert await store.read(sid) == recorded + more
        assert await store.last_position(sid) == positions[-1]

    async def test_every_event_type_round_trips(self, store: EventStore) -> None:
        sid = session_id()
        events = every_event_type()
        recorded = await store.append(sid, events, expected_version=None)
        read = await store.read(sid)
        assert [r.event for r in read] == events
        assert read == recorded

    async def test_append_with_a_stale_expected_version_is_a_conflict(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        first = await store.append(sid, opening(sid), expected_version=None)
        with pytest.raises(ConcurrencyConflict):
            await store.append(sid, [message(1)], expected_version=None)
        with pytest.raises(ConcurrencyConflict):
            await store.append(sid, [message(1)], expected_version=first[0].position)
        with pytest.raises(ConcurrencyConflict):
            await store.append(sid, [message(1)], expected_version="99999999999999-0")
        assert await store.read(sid) == first

    async def test_appending_to_an_empty_stream_with_a_version_is_a_conflict(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        with pytest.raises(ConcurrencyConflict):
            await store.append(sid, opening(sid), expected_version="1-0")
        assert await store.read(sid) == []

    async def test_concurrent_appends_at_one_version_let_exactly_one_through(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        base = await store.append(sid, opening(sid), expected_version=None)
        version = base[-1].position

        async def attempt(n: int) -> bool:
            try:
                await store.append(sid, [message(n)], expected_version=version)
            except ConcurrencyConflict:
                return False
            return True

        results = await asyncio.gather(*(attempt(n) for n in range(10)))
        assert sum(results) == 1
        assert len(await store.read(sid)) == 3

    async def test_read_after_a_position_and_with_a_limit(self, store: EventStore) -> None:
        sid = session_id()
        recorded = await store.append(sid, opening(sid), expected_version=None)
        recorded += await store.append(
            sid, [delta(n) for n in range(20)], expected_version=recorded[-1].position
        )
        assert await store.read(sid, after=recorded[4].position) == recorded[5:]
        assert await store.read(sid, after=recorded[4].position, limit=3) == recorded[5:8]
        assert await store.read(sid, after=recorded[-1].position) == []
        assert await store.read(sid, limit=2) == recorded[:2]

    async def test_a_long_session_reads_back_whole_and_in_order(self, store: EventStore) -> None:
        sid = session_id()
        recorded = await store.append(sid, opening(sid), expected_version=None)
        version = recorded[-1].position
        for start in range(0, 3000, 500):
            batch = await store.append(
                sid, [delta(n) for n in range(start, start + 500)], expected_version=version
            )
            version = batch[-1].position
        read = await store.read(sid)
        assert len(read) == 3002
        assert [r.event.text for r in read[2:]] == [f"t{n} " for n in range(3000)]  # type: ignore[attr-defined]

    async def test_a_subscription_receives_each_append_of_followed_sessions_only(
        self, store: EventStore
    ) -> None:
        sid, other = session_id(), session_id()
        heard = Pushes()
        sub = store.subscribe(heard)
        try:
            await sub.follow(sid)
            first = await store.append(sid, opening(sid), expected_version=None)
            await store.append(other, opening(other), expected_version=None)
            second = await store.append(
                sid, [message(1), delta(1)], expected_version=first[-1].position
            )
            got = await heard.until(len(first) + len(second))
            assert [(a.session_id, a.after, list(a.records)) for a in got] == [
                (sid, None, first),
                (sid, first[-1].position, second),
            ]
            # The other session's append was never handed over: a marker append to the
            # followed session is the next push.
            marker = await store.append(sid, [message(9)], expected_version=second[-1].position)
            (next_push,) = await heard.until(len(first) + len(second) + 1)
            assert list(next_push.records) == marker
        finally:
            await sub.close()

    async def test_a_subscription_follows_many_sessions_and_stops_after_unfollow(
        self, store: EventStore
    ) -> None:
        sids = [session_id() for _ in range(20)]
        heard = Pushes()
        sub = store.subscribe(heard)
        try:
            for sid in sids:
                await sub.follow(sid)
            for sid in sids:
                await store.append(sid, opening(sid), expected_version=None)
            got = await heard.until(2 * len(sids))
            assert sorted(a.session_id for a in got) == sorted(sids)
            for sid in sids[1:]:
                await sub.unfollow(sid)
            version = {sid: await store.last_position(sid) for sid in sids}
            for sid in reversed(sids):
                await store.append(sid, [message(1)], expected_version=version[sid])
            # sids[0] was appended to last: once its push is here, any other would be too.
            (last,) = await heard.until(2 * len(sids) + 1)
            assert last.session_id == sids[0]
            assert heard.count() == 2 * len(sids) + 1
        finally:
            await sub.close()

    async def test_a_subscription_receives_pushes_in_order_and_after_a_reconnect(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        heard = Pushes()
        sub = store.subscribe(heard)
        try:
            await sub.follow(sid)
            version = (await store.append(sid, opening(sid), expected_version=None))[-1].position

            async def writer() -> None:
                v: str | None = version
                for n in range(50):
                    await asyncio.sleep(0)
                    v = (await store.append(sid, [delta(n)], expected_version=v))[-1].position

            task = asyncio.create_task(writer())
            got = await heard.until(52)
            await task
            records = [r for a in got for r in a.records]
            assert records == await store.read(sid)
            for prev, nxt in itertools.pairwise(got):
                assert nxt.after == prev.records[-1].position  # each push names its predecessor
            await sub.reconnect()  # re-establishing keeps following
            await store.append(sid, [message(2)], expected_version=records[-1].position)
            (last,) = await heard.until(53)
            assert last.after == records[-1].position
        finally:
            await sub.close()

    async def test_a_listener_that_fails_loses_only_that_push(self, store: EventStore) -> None:
        sid = session_id()
        heard = Pushes(fail_first=True)
        sub = store.subscribe(heard)
        try:
            await sub.follow(sid)
            first = await store.append(sid, opening(sid), expected_version=None)  # it raises
            version = first[-1].position
            for n in range(20):
                version = (await store.append(sid, [delta(n)], expected_version=version))[
                    -1
                ].position
            got = await heard.until(20)
            assert [a.session_id for a in got] == [sid] * 20
            assert got[0].after == first[-1].position  # names the push the listener lost
            for prev, nxt in itertools.pairwise(got):
                assert nxt.after == prev.records[-1].position
            assert [r for a in got for r in a.records] == (await store.read(sid))[2:]
        finally:
            await sub.close()

    async def test_a_malformed_position_is_rejected(self, store: EventStore) -> None:
        sid = session_id()
        await store.append(sid, opening(sid), expected_version=None)
        for bad in ["", "x", "1", "1-", "-1", "01-0", "1-0 ", "1-0-0"]:
            with pytest.raises(InvalidIdentifier):
                await store.read(sid, after=bad)

    @pytest.mark.parametrize("hostile", HOSTILE_SESSION_IDS)
    async def test_hostile_session_ids_are_rejected(self, store: EventStore, hostile: str) -> None:
        with pytest.raises(InvalidIdentifier):
            await store.append(hostile, opening("x" * 22), expected_version=None)
        with pytest.raises(InvalidIdentifier):
            await store.read(hostile)
        with pytest.raises(InvalidIdentifier):
            await store.last_position(hostile)

    # --- deletion ---------------------------------------------------------------------------

    async def test_erase_removes_the_events_and_appends_the_tombstone(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        before = await store.append(sid, two_conversations(sid), expected_version=None)
        doomed = of_conversation(before, "c1")
        (dead,) = await store.erase(
            sid,
            doomed,
            tombstone=tombstone(erased=len(doomed)),
            expected_version=before[-1].position,
        )
        kept = [r for r in before if r.position not in doomed]
        assert await store.read(sid) == [*kept, dead]  # every other event keeps its position
        assert position_after(dead.position, before[-1].position)
        assert await store.last_position(sid) == dead.position
        assert await store.read(sid, after=doomed[-1]) == [
            r for r in [*kept, dead] if position_after(r.position, doomed[-1])
        ]
        more = await store.append(sid, [message(9, "c2")], expected_version=dead.position)
        assert (await store.read(sid))[-1] == more[-1]

    async def test_erased_text_is_gone_from_storage_not_hidden(self, store: EventStore) -> None:
        sid = session_id()
        before = await store.append(sid, two_conversations(sid), expected_version=None)
        assert SECRET.encode() in await self.stored_bytes(store, sid)
        doomed = of_conversation(before, "c1")
        await store.erase(sid, doomed, tombstone=tombstone(), expected_version=before[-1].position)
        stored = await self.stored_bytes(store, sid)
        assert SECRET.encode() not in stored and b"hello 1" not in stored
        assert b"hello 2" in stored  # (the other conversation's text is there to be found)

    async def test_erasing_the_newest_events_still_puts_the_tombstone_after_them(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        base = await store.append(sid, opening(sid), expected_version=None)
        tail = await store.append(
            sid, [message(1), delta(1), delta(2)], expected_version=base[-1].position
        )
        (dead,) = await store.erase(
            sid,
            [r.position for r in [base[-1], *tail]],
            tombstone=tombstone(),
            expected_version=tail[-1].position,
        )
        assert position_after(dead.position, tail[-1].position)
        assert await store.read(sid) == [base[0], dead]

    async def test_erase_at_a_stale_version_is_a_conflict_and_changes_nothing(
        self, store: EventStore
    ) -> None:
        sid = session_id()
        before = await store.append(sid, two_conversations(sid), expected_version=None)
        for stale in (before[-2].position, "99999999999999-0"):
            with pytest.raises(ConcurrencyConflict):
                await store.erase(
                    sid,
                    of_conversation(before, "c1"),
                    tombstone=tombstone(),
                    expected_version=stale,
                )
        with pytest.raises(ConcurrencyConflict):
            await store.erase(session_id(), [], tombstone=tombstone(), expected_version="1-0")
        assert await store.read(sid) == before

    async def test_erasing_every_event_is_refused(self, store: EventStore) -> None:
        sid = session_id()
        before = await store.append(sid, opening(sid), expected_version=None)
        with pytest.raises(ValueError, match="every event"):
            await store.erase(
                sid,
                [r.position for r in before],
                tombstone=tombstone(),
                expected_version=before[-1].position,
            )
        assert await store.read(sid) == before

    async def test_unknown_positions_are_ignored_by_erase(self, store: EventStore) -> None:
        sid = session_id()
        before = await store.append(sid, opening(sid), expected_version=None)
        (dead,) = await store.erase(
            sid, ["1-0", "77-7"], tombstone=tombstone(), expected_version=before[-1].position
        )
        assert await store.read(sid) == [*before, dead]

    async def test_subscribers_receive_the_tombstone_as_an_append(self, store: EventStore) -> None:
        sid = session_id()
        heard = Pushes()
        sub = store.subscribe(heard)
        try:
            await sub.follow(sid)
            before = await store.append(sid, two_conversations(sid), expected_version=None)
            recorded = await store.erase(
                sid,
                of_conversation(before, "c1"),
                tombstone=tombstone(),
                expected_version=before[-1].position,
            )
            got = await heard.until(len(before) + 1)
            assert (got[-1].after, list(got[-1].records)) == (before[-1].position, recorded)
        finally:
            await sub.close()

    async def test_delete_session_removes_the_whole_log_and_says_farewell_live(
        self, store: EventStore
    ) -> None:
        sid, other = session_id(), session_id()
        heard = Pushes()
        sub = store.subscribe(heard)
        try:
            await sub.follow(sid)
            before = await store.append(sid, two_conversations(sid), expected_version=None)
            kept = await store.append(other, opening(other), expected_version=None)
            assert await store.delete_session(sid, farewell=SessionDeleted(at=EPOCH)) is True
            got = await heard.until(len(before) + 1)
            (farewell,) = got[-1].records
            assert got[-1].after == before[-1].position
            assert farewell.event == SessionDeleted(at=EPOCH)
            assert position_after(farewell.position, before[-1].position)
        finally:
            await sub.close()
        assert await store.read(sid) == []
        assert await store.last_position(sid) is None
        assert SECRET.encode() not in await self.stored_bytes(store, sid)
        with pytest.raises(ConcurrencyConflict):  # nothing brings any of it back
            await store.append(sid, [message(9)], expected_version=before[-1].position)
        assert await store.delete_session(sid) is False
        assert await store.read(other) == kept

    async def test_a_log_without_appends_for_its_retention_time_is_deleted(self) -> None:
        store = await self.make_store(retention=1.5)
        try:
            sid, quiet = session_id(), session_id()
            first = await store.append(sid, opening(sid), expected_version=None)
            await store.append(quiet, opening(quiet), expected_version=None)
            await self.wait(0.9)
            again = await store.append(sid, [message(1)], expected_version=first[-1].position)
            await self.wait(0.9)  # 1.8 s after the first append, 0.9 s after the last
            assert await store.read(sid) == first + again
            assert await store.read(quiet) == []
            assert await store.last_position(quiet) is None
            await self.wait(1.0)
            assert await store.read(sid) == []
            assert await store.last_position(sid) is None
        finally:
            await self.close_store(store)

    def test_interleaved_writers_never_lose_duplicate_or_reorder(self) -> None:
        """Two writers append from their own (possibly stale) view of the version: every
        acknowledged append is read back exactly once, in acknowledgement order, no gaps."""
        contract = self

        class Writers(RuleBasedStateMachine):
            def __init__(self) -> None:
                super().__init__()
                self.runner = asyncio.Runner()
                self.store = self.runner.run(contract.make_store())
                self.sid = session_id()
                self.acked: list[Event] = []
                self.known: dict[int, str | None] = {0: None, 1: None}
                self.counter = 0

            @rule(writer=st.integers(0, 1), size=st.integers(1, 3))
            def append(self, writer: int, size: int) -> None:
                events: list[Event] = []
                for _ in range(size):
                    self.counter += 1
                    events.append(delta(self.counter))
                try:
                    recs = self.runner.run(
                        self.store.append(self.sid, events, expected_version=self.known[writer])
                    )
                except ConcurrencyConflict:
                    return
                self.acked.extend(events)
                self.known[writer] = recs[-1].position

            @rule(writer=st.integers(0, 1))
            def refresh(self, writer: int) -> None:
                self.known[writer] = self.runner.run(self.store.last_position(self.sid))

            @invariant()
            def log_is_exactly_the_acknowledged_appends(self) -> None:
                read = self.runner.run(self.store.read(self.sid))
                assert [r.event for r in read] == self.acked

            def teardown(self) -> None:
                self.runner.run(contract.close_store(self.store))
                self.runner.close()

        run_state_machine_as_test(
            Writers,
            settings=settings(
                max_examples=15,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
