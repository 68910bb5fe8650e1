"""The contract every SessionCache adapter keeps (subclass as ``Test<Adapter>SessionCache``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatcore.errors import InvalidIdentifier
from chatcore.events import Recorded
from chatcore.ports import SessionCache
from chatcore.view import SessionView, fold
from tests.support.factories import HOSTILE_SESSION_IDS, delta, message, opening, session_id


def sample_view(sid: str) -> SessionView:
    events = [*opening(sid), message(1), delta(1)]
    return fold(Recorded(position=f"5-{n}", event=e) for n, e in enumerate(events))


def at_version(sid: str, version: str) -> SessionView:
    view = sample_view(sid)
    view.version = version
    return view


class SessionCacheContract:
    ttl: float = 0.6

    async def make_cache(self, *, ttl: float) -> SessionCache:
        raise NotImplementedError

    async def close_cache(self, cache: SessionCache) -> None:
        return None

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        """Store ``raw`` as the cache entry of ``session_id`` (to test unreadable entries)."""
        raise NotImplementedError

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` of the adapter's own time pass: real time by default (Redis keeps
        time itself); an adapter built on a clock the test holds advances that instead."""
        await asyncio.sleep(seconds)

    @pytest.fixture
    async def cache(self) -> AsyncIterator[SessionCache]:
        cache = await self.make_cache(ttl=self.ttl)
        try:
            yield cache
        finally:
            await self.close_cache(cache)

    async def test_a_missing_entry_reads_as_none(self, cache: SessionCache) -> None:
        assert await cache.get(session_id()) is None

    async def test_put_then_get_returns_an_equal_view_and_its_version(
        self, cache: SessionCache
    ) -> None:
        sid = session_id()
        view = sample_view(sid)
        await cache.put(sid, view)
        got = await cache.get(sid)
        assert got is not None
        assert got.view == view
        assert got.version == "5-3"

    async def test_the_cached_view_is_a_copy(self, cache: SessionCache) -> None:
        sid = session_id()
        view = sample_view(sid)
        await cache.put(sid, view)
        view.conversations.clear()
        got = await cache.get(sid)
        assert got is not None and got.view.conversations

    async def test_delete_and_overwrite(self, cache: SessionCache) -> None:
        sid = session_id()
        await cache.put(sid, sample_view(sid))
        newer = sample_view(sid)
        newer.version = "6-0"
        await cache.put(sid, newer)
        got = await cache.get(sid)
        assert got is not None and got.version == "6-0"
        await cache.delete(sid)
        assert await cache.get(sid) is None

    @pytest.mark.parametrize(
        "raw", [b"", b"not json", b"[1,2]", b'{"snapshot": 999, "view": {}}', b'{"snapshot": 1}']
    )
    async def test_an_unreadable_entry_reads_as_none(self, cache: SessionCache, raw: bytes) -> None:
        sid = session_id()
        await self.plant_raw(cache, sid, raw)
        assert await cache.get(sid) is None

    async def test_entries_expire_after_the_idle_time(self, cache: SessionCache) -> None:
        sid = session_id()
        await cache.put(sid, sample_view(sid))
        await self.wait(self.ttl + 0.6)
        assert await cache.get(sid) is None

    async def test_reading_an_entry_keeps_it_alive(self, cache: SessionCache) -> None:
        sid = session_id()
        await cache.put(sid, sample_view(sid))
        for _ in range(4):  # twice the idle time in all, read every half of it
            await self.wait(self.ttl / 2)
            assert await cache.get(sid) is not None

    async def test_an_older_view_never_replaces_a_newer_one(self, cache: SessionCache) -> None:
        """Versions compare as positions: (ms, seq) as integers, not as strings."""
        sid = session_id()
        for older, newer in [
            ("5-3", "6-0"),
            ("9-5", "10-0"),
            ("1795884255665-9", "1795884255665-12"),
        ]:
            await cache.put(sid, at_version(sid, newer))
            await cache.put(sid, at_version(sid, older))
            got = await cache.get(sid)
            assert got is not None and got.version == newer, (older, newer)
        await cache.put(sid, at_version(sid, "1795884255665-12"))  # the same again: kept
        newest = at_version(sid, "1795884255666-0")
        await cache.put(sid, newest)
        got = await cache.get(sid)
        assert got is not None and got.view == newest

    async def test_after_delete_any_view_may_be_stored_again(self, cache: SessionCache) -> None:
        sid = session_id()
        await cache.put(sid, at_version(sid, "9-0"))
        await cache.delete(sid)
        await cache.put(sid, at_version(sid, "3-0"))
        got = await cache.get(sid)
        assert got is not None and got.version == "3-0"

    async def test_an_unreadable_entry_is_replaced_by_any_view(self, cache: SessionCache) -> None:
        sid = session_id()
        await self.plant_raw(cache, sid, b"not json")
        await cache.put(sid, at_version(sid, "1-0"))
        got = await cache.get(sid)
        assert got is not None and got.version == "1-0"

    async def test_a_forgotten_session_is_not_cached_again_for_the_idle_time(
        self, cache: SessionCache
    ) -> None:
        sid, other = session_id(), session_id()
        await cache.put(sid, at_version(sid, "5-0"))
        await cache.put(other, at_version(other, "5-0"))
        await cache.forget(sid)
        assert await cache.get(sid) is None
        await cache.put(sid, at_version(sid, "6-0"))  # a reader racing the deletion
        assert await cache.get(sid) is None
        assert await cache.get(other) is not None
        await self.wait(self.ttl + 0.6)
        await cache.put(sid, at_version(sid, "7-0"))
        got = await cache.get(sid)
        assert got is not None and got.version == "7-0"

    @pytest.mark.parametrize("hostile", HOSTILE_SESSION_IDS)
    async def test_hostile_ids_are_rejected(self, cache: SessionCache, hostile: str) -> None:
        with pytest.raises(InvalidIdentifier):
            await cache.get(hostile)
        with pytest.raises(InvalidIdentifier):
            await cache.put(hostile, SessionView())
        with pytest.raises(InvalidIdentifier):
            await cache.delete(hostile)
        with pytest.raises(InvalidIdentifier):
            await cache.forget(hostile)
