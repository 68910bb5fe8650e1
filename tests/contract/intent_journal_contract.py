"""The contract every IntentJournal adapter keeps (subclass as ``Test<Adapter>IntentJournal``
and implement ``make_journal``; this base is not collected on its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chatcore.errors import InvalidIdentifier
from chatcore.ports import IntentJournal
from tests.support.factories import HOSTILE_SESSION_IDS, session_id

# Intents are judged old by a clock the journal reads itself (Redis: the server's), so these
# tests wait a little real time; ``older_than=0`` means "any intent at all".
AGE = 0.05


class IntentJournalContract:
    async def make_journal(self) -> IntentJournal:
        raise NotImplementedError

    async def close_journal(self, journal: IntentJournal) -> None:
        return None

    @pytest.fixture
    async def journal(self) -> AsyncIterator[IntentJournal]:
        journal = await self.make_journal()
        try:
            yield journal
        finally:
            await self.close_journal(journal)

    async def test_intents_are_recorded_reported_when_stale_and_cleared(
        self, journal: IntentJournal
    ) -> None:
        sid = session_id()
        await journal.record(sid, "cm1")
        await journal.record(sid, "cm2")
        assert (sid, "cm1") not in await journal.stale(older_than=30)
        assert {(sid, "cm1"), (sid, "cm2")} <= set(await journal.stale(older_than=0))
        await journal.clear(sid, "cm1")
        stale = await journal.stale(older_than=0)
        assert (sid, "cm1") not in stale and (sid, "cm2") in stale

    async def test_a_client_message_id_comes_back_as_written(self, journal: IntentJournal) -> None:
        sid = session_id()
        await journal.record(sid, "web:42:a.b")
        assert (sid, "web:42:a.b") in await journal.stale(older_than=0)
        await journal.clear(sid, "web:42:a.b")
        assert (sid, "web:42:a.b") not in await journal.stale(older_than=0)

    async def test_clearing_an_unknown_intent_is_harmless(self, journal: IntentJournal) -> None:
        await journal.clear(session_id(), "never-recorded")

    @pytest.mark.parametrize("hostile", HOSTILE_SESSION_IDS[:4])
    async def test_hostile_session_ids_are_rejected(
        self, journal: IntentJournal, hostile: str
    ) -> None:
        with pytest.raises(InvalidIdentifier):
            await journal.record(hostile, "cm1")
