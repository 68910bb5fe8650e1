"""The contract every Intake adapter keeps (subclass as ``Test<Adapter>Intake`` and implement
``make_intake`` and ``close_intake``; this base is not collected on its own): appending and
queueing happen together or not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from chatcore.errors import ConcurrencyConflict, InvalidIdentifier
from chatcore.ports import EventStore, Intake, WorkItem, WorkQueue
from tests.contract.event_store_contract import Pushes
from tests.support.factories import HOSTILE_SESSION_IDS, message, opening, session_id


@dataclass
class Parts:
    """An intake, and the store and queue it writes to."""

    intake: Intake
    store: EventStore
    queue: WorkQueue


def item(sid: str, message_id: str = "m1") -> WorkItem:
    return WorkItem(
        session_id=sid,
        conversation_id="c1",
        message_id=message_id,
        enqueued_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


class IntakeContract:
    async def make_intake(self) -> Parts:
        raise NotImplementedError

    async def close_intake(self, parts: Parts) -> None:
        return None

    @pytest.fixture
    async def parts(self) -> AsyncIterator[Parts]:
        parts = await self.make_intake()
        try:
            yield parts
        finally:
            await self.close_intake(parts)

    async def queued(self, parts: Parts) -> list[WorkItem]:
        """Every item there is to claim now."""
        out: list[WorkItem] = []
        while got := await parts.queue.claim("contract", count=100, block=0):
            out += [d.item for d in got]
            for d in got:
                await parts.queue.ack(d)
        return out

    async def test_the_events_are_appended_and_the_item_is_queued(self, parts: Parts) -> None:
        sid = session_id()
        first = await parts.store.append(sid, opening(sid), expected_version=None)
        recorded = await parts.intake.append_and_enqueue(
            sid, [message(1)], expected_version=first[-1].position, item=item(sid)
        )
        assert await parts.store.read(sid) == first + recorded
        assert await self.queued(parts) == [item(sid)]

    async def test_a_new_log_may_start_with_queued_work(self, parts: Parts) -> None:
        sid = session_id()
        recorded = await parts.intake.append_and_enqueue(
            sid, opening(sid), expected_version=None, item=item(sid)
        )
        assert await parts.store.read(sid) == recorded
        assert await self.queued(parts) == [item(sid)]

    async def test_at_a_stale_version_nothing_is_appended_or_queued(self, parts: Parts) -> None:
        sid = session_id()
        first = await parts.store.append(sid, opening(sid), expected_version=None)
        later = await parts.store.append(sid, [message(1)], expected_version=first[-1].position)
        for stale in (None, first[-1].position, "99999999999999-0"):
            with pytest.raises(ConcurrencyConflict):
                await parts.intake.append_and_enqueue(
                    sid, [message(2)], expected_version=stale, item=item(sid, "m2")
                )
        assert await parts.store.read(sid) == first + later
        assert await self.queued(parts) == []

    async def test_subscribers_hear_the_append(self, parts: Parts) -> None:
        sid = session_id()
        heard = Pushes()
        sub = parts.store.subscribe(heard)
        try:
            await sub.follow(sid)
            recorded = await parts.intake.append_and_enqueue(
                sid, opening(sid), expected_version=None, item=item(sid)
            )
            (got,) = await heard.until(1)
            assert (got.after, list(got.records)) == (None, recorded)
        finally:
            await sub.close()

    async def test_each_call_queues_its_own_item(self, parts: Parts) -> None:
        sid, other = session_id(), session_id()
        a = await parts.intake.append_and_enqueue(
            sid, opening(sid), expected_version=None, item=item(sid, "m1")
        )
        await parts.intake.append_and_enqueue(
            other, opening(other), expected_version=None, item=item(other, "m9")
        )
        await parts.intake.append_and_enqueue(
            sid, [message(2)], expected_version=a[-1].position, item=item(sid, "m2")
        )
        got = await self.queued(parts)
        assert sorted((i.session_id, i.message_id) for i in got) == sorted(
            [(sid, "m1"), (other, "m9"), (sid, "m2")]
        )

    @pytest.mark.parametrize("hostile", HOSTILE_SESSION_IDS[:4])
    async def test_hostile_session_ids_are_rejected(self, parts: Parts, hostile: str) -> None:
        with pytest.raises(InvalidIdentifier):
            await parts.intake.append_and_enqueue(
                hostile, [message(1)], expected_version=None, item=item("s" * 8)
            )
        assert await self.queued(parts) == []
