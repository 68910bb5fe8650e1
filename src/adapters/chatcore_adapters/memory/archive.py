"""Moving sessions into and out of the in-memory store (tests, and library code that keeps
its sessions in one process): see :mod:`chatcore_adapters.archive`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from chatcore.ports import Clock, WorkItem
from chatcore_adapters.archive import Entry, SessionLog, Written
from chatcore_adapters.codec import encode_event
from chatcore_adapters.memory.event_store import MemoryEventStore
from chatcore_adapters.memory.queue import MemoryWorkQueue


class MemoryLogArchive:
    """The :class:`~chatcore_adapters.archive.LogSource` and
    :class:`~chatcore_adapters.archive.LogImport` of a :class:`MemoryEventStore` and its
    :class:`MemoryWorkQueue`. (The in-memory cache of another process cannot hold an imported
    session: there is none to drop.)"""

    def __init__(self, store: MemoryEventStore, queue: MemoryWorkQueue, clock: Clock) -> None:
        self.store = store
        self.queue = queue
        self._clock = clock

    async def session_ids(self) -> AsyncIterator[str]:
        for session_id in self.store.session_ids():
            yield session_id

    async def read_log(self, session_id: str) -> list[Entry]:
        records = await self.store.read(session_id)
        return [(record.position, encode_event(record.event)) for record in records]

    async def import_log(
        self, log: SessionLog, *, work: Sequence[WorkItem], expire_at_ms: int | None
    ) -> Written:
        expires_in = None
        if expire_at_ms is not None:
            expires_in = (expire_at_ms - self._clock.now().timestamp() * 1000) / 1000
        # Nothing suspends between writing the log and queueing its work.
        if not self.store.put_log(log.session_id, log.records, expires_in=expires_in):
            return Written.EXISTS
        for item in work:
            await self.queue.enqueue(item)
        return Written.IMPORTED
