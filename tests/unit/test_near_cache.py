"""A process's own views in front of the shared cache (``chatcore_adapters.near_cache``): what a
worker process saves with it, and that the log still decides what a load returns when other
processes write, erase and delete. (The SessionCache contract runs on it in
``tests/contract``.)"""

from __future__ import annotations

import pytest

from chatcore.errors import SessionNotFound
from chatcore.ports import CachedView
from chatcore.service import ChatService
from chatcore.view import SessionView, fold
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.memory import MemoryEventStore, MemorySessionCache
from chatcore_adapters.near_cache import NearCache
from tests.support.factories import ManualClock


class CountingCache(MemorySessionCache):
    """The shared cache, counting what it is asked (each get decodes, each put encodes)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.gets = 0
        self.puts = 0

    async def get(self, session_id: str) -> CachedView | None:
        self.gets += 1
        return await super().get(session_id)

    async def put(self, session_id: str, view: SessionView) -> None:
        self.puts += 1
        await super().put(session_id, view)


class Processes:
    """Two processes on one log: a worker with a near cache, and an API with the shared one."""

    def __init__(self, *, max_events: int = 50_000, write_every: int = 64) -> None:
        self.clock = ManualClock()
        self.store = MemoryEventStore(self.clock)
        self.shared = CountingCache(self.clock)
        self.near = NearCache(
            self.shared, self.clock, max_events=max_events, write_every=write_every
        )
        self.worker: ChatService = bootstrap(
            clock=self.clock, store=self.store, cache=self.near
        ).service
        self.api: ChatService = bootstrap(
            clock=self.clock, store=self.store, cache=self.shared
        ).service

    async def truth(self, session_id: str) -> SessionView:
        return fold(await self.store.read(session_id))

    async def say(
        self, service: ChatService, session_id: str, conversation_id: str, n: int
    ) -> None:
        """A message, and a Stop that ends its turn (so the next may follow)."""
        await service.submit_message(
            session_id, conversation_id=conversation_id, client_message_id=f"c{n}", text=f"q{n}"
        )
        await service.cancel_reply(session_id, conversation_id=conversation_id)


async def test_a_session_loaded_again_is_read_from_this_process_not_decoded() -> None:
    p = Processes(write_every=16)
    opened = await p.api.open_session()
    sid, cid = opened.session_id, opened.conversation_id
    for n in range(40):
        await p.say(p.worker, sid, cid, n)
        assert await p.worker.load(sid) == await p.truth(sid)
    assert p.near.hits >= 39
    assert p.shared.gets <= 1  # the first load only
    # Written to the shared cache when new to it, then once every 16 events, not every put.
    events = (await p.truth(sid)).event_count
    assert 1 <= p.shared.puts <= 1 + events // 16 + 1


async def test_what_other_processes_write_is_in_the_next_load() -> None:
    p = Processes()
    opened = await p.api.open_session()
    sid, cid = opened.session_id, opened.conversation_id
    await p.say(p.worker, sid, cid, 1)
    await p.worker.load(sid)
    await p.say(p.api, sid, cid, 2)  # another process appends
    await p.api.update_profile(sid, display_name="Ada", language=None)
    view = await p.worker.load(sid)
    assert view == await p.truth(sid)
    assert view.profile.display_name == "Ada"


async def test_a_conversation_erased_elsewhere_is_gone_from_the_next_load() -> None:
    p = Processes()
    opened = await p.api.open_session()
    sid, cid = opened.session_id, opened.conversation_id
    await p.say(p.worker, sid, cid, 1)
    other, _ = await p.api.start_conversation(sid)
    await p.worker.load(sid)
    await p.api.delete_conversation(sid, conversation_id=cid)
    view = await p.worker.load(sid)
    assert cid not in view.conversations and other in view.conversations
    assert view == await p.truth(sid)
    assert '"q1"' not in view.model_dump_json()  # (quoted: a random id may hold q1)


async def test_a_session_deleted_elsewhere_is_not_found() -> None:
    p = Processes()
    opened = await p.api.open_session()
    sid = opened.session_id
    await p.worker.load(sid)
    await p.api.delete_session(sid)
    with pytest.raises(SessionNotFound):
        await p.worker.load(sid)
    assert p.near.sessions_held == 0


async def test_memory_is_bounded_by_the_events_the_views_hold() -> None:
    p = Processes(max_events=40)
    sessions = []
    for _ in range(6):
        opened = await p.api.open_session()
        for n in range(4):
            await p.say(p.api, opened.session_id, opened.conversation_id, n)
        sessions.append(opened.session_id)
    for sid in sessions:
        assert await p.worker.load(sid) == await p.truth(sid)
        assert p.near.events_held <= 40
    assert 0 < p.near.sessions_held < len(sessions)
    last = sessions[-1]
    hits = p.near.hits
    await p.worker.load(last)  # the most recently used is still here
    assert p.near.hits == hits + 1


async def test_a_view_handed_out_is_the_caller_s_own() -> None:
    p = Processes()
    opened = await p.api.open_session()
    sid = opened.session_id
    mine = await p.worker.load(sid)
    mine.conversations.clear()
    assert (await p.worker.load(sid)).conversations
