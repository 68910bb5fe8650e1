"""Appending and queueing in one script on a single Redis server: the append script also adds
the work item to the session's queue shard (``KEYS[2]``), so both are written or neither is,
in one round trip. A Redis Cluster keeps the two in different slots, where no script may
reach both: it has no intake, and the service brackets the two steps with an intent."""

from __future__ import annotations

from collections.abc import Sequence

from chatcore.events import Event, Recorded
from chatcore.ports import WorkItem
from chatcore_adapters.redis.event_store import RedisEventStore
from chatcore_adapters.redis.queue import RedisWorkQueue, encode_item


class RedisIntake:
    """The :class:`chatcore.ports.Intake` of a :class:`RedisEventStore` and a
    :class:`RedisWorkQueue` on one Redis server (not a Cluster)."""

    def __init__(self, store: RedisEventStore, queue: RedisWorkQueue) -> None:
        if store.conn.cluster or queue.conn.cluster:
            raise ValueError("a Redis Cluster has no intake: the log and the queue are apart")
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
        stream = self.queue.shard_of(session_id).keys.stream
        return await self.store.append_and_queue(
            session_id,
            events,
            expected_version=expected_version,
            queue=(stream, encode_item(item)),
        )
