"""The work queue in SQLite, with the semantics of a Redis consumer group.

``work_items`` holds the work not yet acknowledged: a row with no ``consumer`` is queued; a
row with one is pending at that consumer since ``delivered_ms`` and has been delivered
``deliveries`` times. Claiming, reclaiming, touching and acknowledging are each one write
transaction, so two consumers never get one item at once. An acknowledged item is deleted;
a dead-lettered one moves to ``dead_letters`` in the same transaction.

A delivery id is ``<enqueued ms>-<row id>``; row ids are never reused (``AUTOINCREMENT``), so
neither is a delivery id, which reply leases are named after. Idle times are measured on the
clock's wall time, stored in the file, so after a restart the items a dead process left
pending are reclaimed once they have been idle ``reclaim_after`` seconds, as on Redis.

``claim`` wakes up at once for an enqueue of this process, and looks at the file every
``poll_interval`` seconds otherwise (items coming idle, another process's enqueues).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError

from chatcore.ports import Clock, DeadLetter, Delivery, WorkItem
from chatcore_adapters.sqlite.database import SqliteDatabase, epoch_ms, statement

log = logging.getLogger(__name__)

_ENQUEUE = "INSERT INTO work_items (queue, item, enqueued_ms) VALUES (?, ?, ?)"
_IDLE = (
    "SELECT id, enqueued_ms, item, deliveries FROM work_items "
    "WHERE queue = ? AND consumer IS NOT NULL AND delivered_ms <= ? "
    "ORDER BY delivered_ms, id LIMIT ?"
)
_NEW = (
    "SELECT id, enqueued_ms, item, deliveries FROM work_items "
    "WHERE queue = ? AND consumer IS NULL ORDER BY id LIMIT ?"
)
_MINE = (
    "SELECT id, enqueued_ms, item, deliveries FROM work_items "
    "WHERE queue = ? AND consumer = ? ORDER BY id LIMIT ?"
)
_DELIVER = "UPDATE work_items SET consumer = ?, delivered_ms = ?, deliveries = ? WHERE id = ?"
_TOUCH = "UPDATE work_items SET delivered_ms = ? WHERE id = ? AND queue = ? AND consumer = ?"
_ACK = "DELETE FROM work_items WHERE id = ? AND queue = ?"
_DEAD = (
    "INSERT INTO dead_letters (queue, delivery_id, item, reason, attempts, at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_PRUNE_DEAD = (
    "DELETE FROM dead_letters WHERE queue = ? AND id <= "
    "(SELECT id FROM dead_letters WHERE queue = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)
_DEAD_LETTERS = (
    "SELECT id, item, reason, attempts, at FROM dead_letters WHERE queue = ? "
    "ORDER BY id DESC LIMIT ?"
)

# (row id, enqueued ms, stored item, deliveries so far)
_Row = tuple[int, int, bytes, int]


def _parse(raw: bytes) -> WorkItem | None:
    try:
        return WorkItem.model_validate_json(raw)
    except ValidationError:
        return None


def _row_id(delivery_id: str) -> int | None:
    _, _, row = delivery_id.rpartition("-")
    return int(row) if row.isdigit() else None


class SqliteWorkQueue:
    """The :class:`chatcore.ports.WorkQueue` and its :class:`chatcore.ports.DeadLetterLog` on
    an SQLite file."""

    def __init__(
        self,
        db: SqliteDatabase,
        clock: Clock,
        *,
        name: str = "chatcore:work",
        reclaim_after: float = 30.0,
        poll_interval: float = 0.5,
        recover_limit: int = 1000,
        max_dead_letters: int = 10_000,
    ) -> None:
        if reclaim_after <= 0 or poll_interval <= 0:
            raise ValueError("reclaim_after and poll_interval must be positive")
        self.db = db
        self.name = name
        self.reclaim_after = reclaim_after
        self.poll_interval = poll_interval
        self.recover_limit = recover_limit
        self.max_dead_letters = max_dead_letters
        self._clock = clock
        self._arrived = asyncio.Event()

    # --- work ---------------------------------------------------------------------------------

    async def enqueue(self, item: WorkItem) -> None:
        await self.db.write(self.enqueue_job(item), operation="enqueue", on_commit=self.wake)

    def enqueue_job(self, item: WorkItem) -> Callable[[sqlite3.Connection], int]:
        """The writer's job of :meth:`enqueue`; call :meth:`wake` once it committed."""
        # Without fields at their defaults, as on Redis: an item that charges nothing reads
        # the same to a worker that predates WorkItem.charges.
        raw = item.model_dump_json(exclude_defaults=True).encode()
        return statement(_ENQUEUE, (self.name, raw, epoch_ms(self._clock)))

    def wake(self, _: object = None) -> None:
        """Wake this process's waiting claims: something was queued."""
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    def _deliver(
        self, conn: sqlite3.Connection, rows: list[_Row], consumer: str, now: int
    ) -> list[Delivery]:
        """Hand ``rows`` to ``consumer`` (one more delivery each); an unreadable item is
        moved to the dead letters instead: it could never be done."""
        conn.executemany(
            _DELIVER, [(consumer, now, deliveries + 1, row) for row, _, _, deliveries in rows]
        )
        out: list[Delivery] = []
        for row, enqueued, raw, deliveries in rows:
            delivery_id = f"{enqueued}-{row}"
            item = _parse(raw)
            if item is None:
                log.error(
                    "unreadable work item moved to the dead letters",
                    extra={"delivery_id": delivery_id},
                )
                self._bury(conn, delivery_id, raw, "unreadable work item", deliveries + 1)
                continue
            out.append(Delivery(item, delivery_id, deliveries + 1, consumer))
        return out

    async def recover(self, consumer: str) -> list[Delivery]:
        def recover(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(_MINE, (self.name, consumer, self.recover_limit)).fetchall()
            return self._deliver(conn, rows, consumer, epoch_ms(self._clock))

        return await self.db.write(recover, operation="recover")

    async def claim(self, consumer: str, *, count: int, block: float) -> list[Delivery]:
        if count < 1:
            return []
        reclaim_ms = max(1, int(self.reclaim_after * 1000))

        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            now = epoch_ms(self._clock)
            rows = conn.execute(_IDLE, (self.name, now - reclaim_ms, count)).fetchall()
            if len(rows) < count:
                rows += conn.execute(_NEW, (self.name, count - len(rows))).fetchall()
            return self._deliver(conn, rows, consumer, now) if rows else []

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, block)
        while True:
            arrived = self._arrived
            out = await self.db.write(claim, operation="claim")
            remaining = deadline - loop.time()
            if out or remaining <= 0:
                return out
            try:
                async with asyncio.timeout(min(remaining, self.poll_interval)):
                    await arrived.wait()
            except TimeoutError:
                continue

    async def touch(self, delivery: Delivery) -> bool:
        row = _row_id(delivery.delivery_id)
        if row is None:
            return False
        params = (epoch_ms(self._clock), row, self.name, delivery.consumer)
        return await self.db.write(statement(_TOUCH, params), operation="touch") == 1

    async def ack(self, delivery: Delivery) -> None:
        row = _row_id(delivery.delivery_id)
        if row is not None:
            await self.db.write(statement(_ACK, (row, self.name)), operation="ack")

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        raw = delivery.item.model_dump_json().encode()

        def bury(conn: sqlite3.Connection) -> None:
            self._bury(conn, delivery.delivery_id, raw, reason, delivery.attempt)

        await self.db.write(bury, operation="dead_letter")

    def _bury(
        self, conn: sqlite3.Connection, delivery_id: str, raw: bytes, reason: str, attempts: int
    ) -> None:
        """Keep the item as a dead letter and take it out of the queue (one transaction)."""
        at = self._clock.now().isoformat()
        conn.execute(_DEAD, (self.name, delivery_id, raw, reason, attempts, at))
        conn.execute(_PRUNE_DEAD, (self.name, self.name, self.max_dead_letters))
        row = _row_id(delivery_id)
        if row is not None:
            conn.execute(_ACK, (row, self.name))

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        if limit < 1:
            return []

        def letters(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(_DEAD_LETTERS, (self.name, limit)).fetchall()
            out: list[DeadLetter] = []
            for row, raw, reason, attempts, at in reversed(rows):
                try:
                    item = WorkItem.model_validate_json(raw)
                    out.append(DeadLetter(item, reason, int(attempts), datetime.fromisoformat(at)))
                except (ValidationError, ValueError, TypeError):
                    log.warning("skipping an unreadable dead letter", extra={"row": row})
            return out

        return await self.db.read(letters, operation="dead_letters")
