"""Appending and queueing in one step, in one process: the in-memory store and queue change
without the event loop running anything in between, so no other task sees one without the
other (and a crash loses both, being memory). The version is checked first and the item
queued before the events are appended, so an enqueue that fails leaves no message behind."""

from __future__ import annotations

from collections.abc import Sequence

from chatcore.errors import ConcurrencyConflict
from chatcore.events import Event, Recorded
from chatcore.ids import validate_session_id
from chatcore.ports import WorkItem
from chatcore_adapters.memory.event_store import MemoryEventStore
from chatcore_adapters.memory.queue import MemoryWorkQueue


class MemoryIntake:
    """The :class:`chatcore.ports.Intake` of a :class:`MemoryEventStore` and a
    :class:`MemoryWorkQueue`."""

    def __init__(self, store: MemoryEventStore, queue: MemoryWorkQueue) -> None:
        self.store = store
        self.queue = queue

    async def append_and_enqueue(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_version: str | None,
        item: WorkItem,
    ) -> list[Recorded]:
        # None of these calls suspends (plain code behind `async def`): nothing runs between
        # them, so the append cannot meet a conflict the check did not.
        validate_session_id(session_id)
        if not events:
            raise ValueError("nothing to append")
        actual = await self.store.last_position(session_id)
        if actual != expected_version:
            raise ConcurrencyConflict(session_id, expected_version, actual)
        await self.queue.enqueue(item)
        return await self.store.append(session_id, events, expected_version=expected_version)
