"""The live feed: one subscription per process for every session it has sockets for (I8), no
gap and no duplicate when a push is missed or the subscription is lost (I5)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from chatcore.errors import SessionNotFound, StoreUnavailable
from chatcore.events import Recorded
from chatcore.ports import Appended, AppendListener
from chatcore.service import ChatService
from chatcore.view import Profile, SessionView, fold
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.memory import MemoryEventStore
from chatcore_adapters.memory.event_store import MemoryLiveSubscription
from chatcore_adapters.system import SystemClock
from chatcore_api.feed import KEEP_VIEW_FROM_LOAD, SessionFeed


class FlakySubscription(MemoryLiveSubscription):
    """The in-memory subscription, able to lose pushes: ``lose()`` drops what is published
    and reports the subscription lost until the subscriber reconnects (which fails
    ``failures`` times first); ``skip`` drops the next N pushes quietly, as a missed message
    would."""

    def __init__(self, store: MemoryEventStore, listener: AppendListener) -> None:
        super().__init__(store, listener)
        self.follows: list[str] = []
        self.lost = False
        self.lost_now = asyncio.Event()
        self.failures = 0
        self.skip = 0
        self.reconnects = 0

    def _push(self, appended: Appended) -> None:
        if self.lost:
            return
        if self.skip and appended.session_id in self._following:
            self.skip -= 1
            return
        super()._push(appended)

    def lose(self, failures: int = 0) -> None:
        self.lost = True
        self.failures = failures
        self.lost_now.set()

    async def follow(self, session_id: str) -> None:
        self.follows.append(session_id)
        await super().follow(session_id)

    async def wait_lost(self) -> str:
        await self.lost_now.wait()
        return "StoreUnavailable: redis live failed (ConnectionError)"

    async def reconnect(self) -> None:
        self.reconnects += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("redis follow failed (ConnectionError)")
        self.lost = False
        self.lost_now.clear()


class RecordingStore(MemoryEventStore):
    """The in-memory store with a :class:`FlakySubscription`."""

    def __init__(self, clock: SystemClock) -> None:
        super().__init__(clock)
        self.sub: FlakySubscription | None = None

    def subscribe(self, listener: AppendListener) -> FlakySubscription:
        self.sub = FlakySubscription(self, listener)
        self._pushes.add(self.sub)
        return self.sub


@dataclass
class World:
    clock: SystemClock
    store: RecordingStore
    sub: FlakySubscription
    service: ChatService
    feed: SessionFeed
    got: dict[str, list[str]]


@contextlib.asynccontextmanager
async def world() -> AsyncIterator[World]:
    clock = SystemClock()
    store = RecordingStore(clock)
    service = bootstrap(clock=clock, store=store).service
    feed = SessionFeed(store)
    assert store.sub is not None
    got: dict[str, list[str]] = {}
    feed.set_sink(lambda sid, records: got.setdefault(sid, []).extend(r.position for r in records))
    feed.start()
    try:
        yield World(clock, store, store.sub, service, feed, got)
    finally:
        await feed.stop()


async def eventually(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the condition belongs to the code under test
            await asyncio.sleep(0.01)


async def log_of(w: World, sid: str) -> list[str]:
    return [r.position for r in await MemoryEventStore.read(w.store, sid)]


async def test_one_subscription_follows_every_session_of_the_process() -> None:
    async with world() as w:
        sessions = [(await w.service.open_session()).session_id for _ in range(30)]
        watches = [await w.feed.watch(sid) for sid in sessions]
        assert sorted(w.sub.follows) == sorted(sessions)  # one follow each, no re-issued read
        for sid in sessions:
            await w.service.update_profile(sid, display_name="Ada", language=None)
        assert all(len(w.got.get(sid, [])) == 1 for sid in sessions)  # pushed at once
        assert w.feed.gap_reads == 0  # pushes carry the events: nothing is read back
        for watch in watches:
            watch.release()
        assert w.feed.sessions == 0
        await w.service.update_profile(sessions[0], display_name="Bo", language=None)
        await eventually(lambda: not w.sub._following)  # unfollowed in a task of its own
        assert all(len(w.got[sid]) == 1 for sid in sessions)


async def test_a_session_followed_later_gets_its_pushes_at_once() -> None:
    async with world() as w:
        first = (await w.service.open_session()).session_id
        await w.feed.watch(first)
        second = (await w.service.open_session()).session_id
        await w.feed.watch(second)
        await w.service.update_profile(second, display_name="Grace", language=None)
        assert len(w.got.get(second, [])) == 1


async def test_watches_are_counted_and_the_cursor_starts_at_the_watch() -> None:
    async with world() as w:
        sid = (await w.service.open_session()).session_id
        one, two = await w.feed.watch(sid), await w.feed.watch(sid)
        one.release()
        one.release()  # releasing twice is harmless
        assert w.feed.sessions == 1
        await w.service.update_profile(sid, display_name="Ada", language=None)
        await eventually(lambda: len(w.got.get(sid, [])) == 1)
        two.release()
        assert w.feed.sessions == 0


async def test_a_missed_push_is_read_from_the_log_before_anything_newer() -> None:
    async with world() as w:
        sid = (await w.service.open_session()).session_id
        await w.feed.watch(sid)
        w.sub.skip = 2
        for name in ("A", "B", "C", "D"):
            await w.service.update_profile(sid, display_name=name, language=None)
        log = await log_of(w, sid)
        await eventually(lambda: w.got.get(sid) == log[-4:])
        assert w.feed.gap_reads == 1  # one read of the gap


async def test_a_lost_subscription_is_re_established_and_every_session_caught_up() -> None:
    async with world() as w:
        sessions = [(await w.service.open_session()).session_id for _ in range(3)]
        for sid in sessions:
            await w.feed.watch(sid)
        watched = {sid: len(await log_of(w, sid)) for sid in sessions}
        await w.service.update_profile(sessions[0], display_name="Ada", language=None)
        await eventually(lambda: len(w.got.get(sessions[0], [])) == 1)
        w.sub.lose(failures=2)  # and Redis stays away for two attempts
        for sid in sessions:
            await w.service.update_profile(sid, display_name="Bo", language=None)
        await eventually(lambda: w.feed.resyncs == 1, timeout=10)
        await w.service.update_profile(sessions[1], display_name="Cy", language=None)
        for sid in sessions:
            # everything since the watch was taken, once, in order
            since_watch = (await log_of(w, sid))[watched[sid] :]
            await eventually(lambda sid=sid, want=since_watch: w.got.get(sid) == want)
        assert w.sub.reconnects == 3


# --- current views (chatcore.ports.CurrentViews) ----------------------------------------------


class CountingReads(RecordingStore):
    """The recording store, counting the reads the use cases make."""

    def __init__(self, clock: SystemClock) -> None:
        super().__init__(clock)
        self.reads = 0

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        self.reads += 1
        return await super().read(session_id, after=after, limit=limit)


@contextlib.asynccontextmanager
async def viewing_world() -> AsyncIterator[tuple[World, CountingReads]]:
    clock = SystemClock()
    store = CountingReads(clock)
    service = bootstrap(clock=clock, store=store).service
    feed = SessionFeed(store)
    service.views = feed
    assert store.sub is not None
    feed.set_sink(lambda sid, records: None)
    feed.start()
    try:
        yield World(clock, store, store.sub, service, feed, {}), store
    finally:
        await feed.stop()


async def kept(w: World, sid: str) -> None:
    """Load ``sid`` as often as it takes for the feed to keep its view."""
    for _ in range(KEEP_VIEW_FROM_LOAD):
        await w.service.load(sid)
    assert w.feed.current(sid) is not None


def folded(records: list[Recorded]) -> SessionView:
    return fold(records)


async def test_a_followed_session_is_read_from_its_current_view_after_the_hello() -> None:
    async with viewing_world() as (w, store):
        opened = await w.service.open_session()
        sid = opened.session_id
        await w.feed.watch(sid)
        await w.service.load(sid)  # the hello's two loads: no view kept yet (idle sockets
        await w.service.load(sid)  # stay small)
        assert w.feed.current(sid) is None
        await w.service.load(sid)  # the first command: kept
        reads = store.reads
        for n in range(5):
            await w.service.submit_message(
                sid, conversation_id=opened.conversation_id, client_message_id=f"c{n}", text="q"
            )
            await w.service.cancel_reply(sid, conversation_id=opened.conversation_id)
        assert store.reads == reads  # ten commands, not one read of the log
        assert w.feed.view_hits >= 10
        assert await w.service.load(sid) == folded(await MemoryEventStore.read(store, sid))


async def test_a_view_handed_out_is_a_copy() -> None:
    async with viewing_world() as (w, _):
        sid = (await w.service.open_session()).session_id
        await w.feed.watch(sid)
        await kept(w, sid)
        mine = await w.service.load(sid)
        mine.profile = Profile(display_name="changed by a caller")
        mine.conversations.clear()
        again = await w.service.load(sid)
        assert again.profile.display_name is None
        assert again.conversations
        with pytest.raises(ValidationError):  # what copies share cannot be changed
            again.profile.display_name = "changed in place"  # type: ignore[misc]


async def test_a_view_not_at_the_feed_s_cursor_is_not_kept() -> None:
    async with viewing_world() as (w, store):
        sid = (await w.service.open_session()).session_id
        await w.feed.watch(sid)
        await w.service.load(sid)
        behind = await w.service.load(sid)  # (the second offer; the next one would keep it)
        elsewhere = bootstrap(clock=w.clock, store=store).service  # another process, say
        await elsewhere.update_profile(sid, display_name="Ada", language=None)
        w.feed.offer(sid, behind)  # older than what the feed has pushed: would miss a record
        assert w.feed.current(sid) is None
        await w.service.load(sid)
        assert w.feed.current(sid) == folded(await MemoryEventStore.read(store, sid))


async def test_a_current_view_stays_the_fold_of_the_log_through_missed_pushes() -> None:
    async with viewing_world() as (w, store):
        opened = await w.service.open_session()
        sid = opened.session_id
        await w.feed.watch(sid)
        await kept(w, sid)
        w.sub.skip = 2  # two pushes never arrive: the feed reads the gap
        for name in ("A", "B", "C", "D"):
            await w.service.update_profile(sid, display_name=name, language=None)
        log = await MemoryEventStore.read(store, sid)
        await eventually(lambda: w.feed.current(sid) == folded(log))
        w.sub.lose()  # the whole subscription: every followed session is read again
        await w.service.rename_conversation(
            sid, conversation_id=opened.conversation_id, title="Trip"
        )
        log = await MemoryEventStore.read(store, sid)
        await eventually(lambda: w.feed.current(sid) == folded(log), timeout=10)


async def test_a_deleted_session_is_not_found_through_its_view() -> None:
    async with viewing_world() as (w, _):
        sid = (await w.service.open_session()).session_id
        await w.feed.watch(sid)
        await kept(w, sid)
        await w.service.delete_session(sid)
        with pytest.raises(SessionNotFound):
            await w.service.load(sid)


async def test_a_released_session_keeps_no_view() -> None:
    async with viewing_world() as (w, _):
        sid = (await w.service.open_session()).session_id
        watch = await w.feed.watch(sid)
        await kept(w, sid)
        assert w.feed.current(sid) is not None
        watch.release()
        assert w.feed.current(sid) is None
