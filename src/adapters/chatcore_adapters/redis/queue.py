"""The work queue on a Redis stream with a consumer group.

Keys (one slot, tagged with the queue's name, ``{chatcore:work}`` by default):

* ``{chatcore:work}``: the stream of work items (field ``i``: the item's JSON), read by the
  consumer group ``workers``. An acknowledged entry is deleted with its acknowledgement, so
  the stream only ever holds work not yet done, and a group created again from ``0`` (after
  the group vanished, e.g. a Redis restart without persistence) gets exactly that work;
* ``{chatcore:work}:dead``: the dead-letter stream (item, reason, attempts, time), read back
  as the :class:`chatcore.ports.DeadLetterLog`.

A delivery's ``attempt`` is Redis' delivery count of the entry: 1 when first read, +1 each
time it is read again from the pending list (``recover``) or claimed from another consumer.
Its ``delivery_id`` is the entry's id, and in a queue of several shards the shard's number
before it (``2/1733600000000-0``): two streams give out the same ids in the same millisecond,
and a delivery id names one entry in the whole queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from redis.exceptions import ResponseError

from chatcore.errors import PortError
from chatcore.ports import Clock, DeadLetter, Delivery, WorkItem
from chatcore_adapters.redis.connection import RedisConnection, is_error
from chatcore_adapters.redis.keys import QueueKeys
from chatcore_adapters.system import SystemClock

log = logging.getLogger(__name__)

T = TypeVar("T")

# KEYS[1] stream. ARGV[1] group, ARGV[2] consumer, ARGV[3] count.
# The consumer's pending entries, read again: {{id, payload, delivery count}...}. Entries
# deleted while pending cannot be worked on any more and are acknowledged.
_RECOVER = """
local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                       'STREAMS', KEYS[1], '0')
local out = {}
if not got or not got[1] then return out end
for _, entry in ipairs(got[1][2]) do
  local id = entry[1]
  if entry[2] and entry[2][2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    out[#out + 1] = {id, entry[2][2], p[1][4]}
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return out
"""

# KEYS[1] stream. ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms, ARGV[4] count.
# Entries idle longer than ARGV[3] at any consumer, now ARGV[2]'s, then as many new entries
# as there is room for (never waiting): {{id, payload, delivery count}...}, one round trip for
# a busy worker's claim.
_RECLAIM = """
local want = tonumber(ARGV[4])
local out = {}
local cursor = '0-0'
local rounds = 0
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor,
                       'COUNT', want - #out)
  cursor = r[1]
  for _, entry in ipairs(r[2]) do
    local id = entry[1]
    if entry[2] and entry[2][2] then
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
      out[#out + 1] = {id, entry[2][2], p[1][4]}
    else
      redis.call('XACK', KEYS[1], ARGV[1], id)
    end
  end
  rounds = rounds + 1
until cursor == '0-0' or #out >= want or rounds >= 16
if #out < want then
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want - #out,
                         'STREAMS', KEYS[1], '>')
  if got and got[1] then
    for _, entry in ipairs(got[1][2]) do
      out[#out + 1] = {entry[1], entry[2] and entry[2][2] or false, 1}
    end
  end
end
return out
"""

# KEYS[1] stream. ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id.
# Reset the entry's idle time if ARGV[2] still owns it: 1, else 0.
_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# KEYS[1] stream. ARGV[1] group, ARGV[2] entry id. Acknowledge, and delete what was acked.
_ACK = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] stream, KEYS[2] dead letters. ARGV[1] group, ARGV[2] entry id, ARGV[3] payload,
# ARGV[4] reason, ARGV[5] attempts, ARGV[6] time, ARGV[7] max dead letters kept (about).
# Record the dead letter (once, even when a lost reply makes the client send it again),
# then acknowledge and delete the entry.
_DEAD_LETTER = """
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #newest == 0 or newest[1][2][2] ~= ARGV[2] then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
             'd', ARGV[2], 'i', ARGV[3], 'r', ARGV[4], 'a', ARGV[5], 't', ARGV[6])
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class ShardDepth:
    stream: str
    waiting: int
    pending: int


def encode_item(item: WorkItem) -> bytes:
    """A work item as its stream entry holds it (field ``i``). Without fields at their
    defaults: an item that charges nothing reads the same to a worker that predates
    ``WorkItem.charges``."""
    return item.model_dump_json(exclude_defaults=True).encode()


class StreamQueue:
    """One stream of the work queue and its consumer group (a shard, or the whole queue)."""

    def __init__(
        self,
        conn: RedisConnection,
        keys: QueueKeys,
        *,
        group: str = "workers",
        reclaim_after: float = 30.0,
        clock: Clock | None = None,
        recover_limit: int = 1000,
        max_dead_letters: int = 10_000,
        tag: str = "",
    ) -> None:
        if reclaim_after <= 0:
            raise ValueError("reclaim_after must be positive")
        # What this stream's delivery ids start with (before the entry's id): its shard's
        # number in a queue of several, so that ids are unique across the queue.
        self.tag = tag
        self.conn = conn
        self.keys = keys
        self.group = group
        self.reclaim_after = reclaim_after
        self.clock: Clock = clock or SystemClock()
        self.recover_limit = recover_limit
        self.max_dead_letters = max_dead_letters
        client = conn.client
        self._recover = client.register_script(_RECOVER)
        self._reclaim = client.register_script(_RECLAIM)
        self._touch = client.register_script(_TOUCH)
        self._ack = client.register_script(_ACK)
        self._dead_letter = client.register_script(_DEAD_LETTER)

    # --- the consumer group -------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the stream and its group if missing (from ``0``: every entry still in the
        stream is work not yet acknowledged)."""
        try:
            await self.conn.client.xgroup_create(self.keys.stream, self.group, "0", mkstream=True)
            log.info("created the work queue's consumer group", extra={"group": self.group})
        except ResponseError as exc:
            if not is_error(exc, "BUSYGROUP"):
                raise

    async def _grouped(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call``; if the group is gone (NOGROUP), create it and run it once more."""
        try:
            return await call()
        except ResponseError as exc:
            if not is_error(exc, "NOGROUP"):
                raise
        await self.ensure_group()
        return await call()

    # --- work -------------------------------------------------------------------------------------

    async def enqueue(self, item: WorkItem) -> None:
        payload = encode_item(item)
        async with self.conn.guard("enqueue"):
            if self.conn.settings.wait_replicas <= 0:
                await self.conn.client.xadd(self.keys.stream, {"i": payload})
                return
            # Durable: the entry and a WAIT for its replicas, on one connection.
            await self.conn.initialized()
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.execute_command("XADD", self.keys.stream, "*", "i", payload)
            self.conn.add_wait(pipe, self.keys.stream)
            try:
                added, waited = await pipe.execute(raise_on_error=False)
            except Exception:
                await self.conn.refresh_slots()  # (a WAIT aimed at a node now gone)
                raise
            for problem in (added, self.conn.check_wait(waited, "enqueue")):
                if isinstance(problem, BaseException):
                    raise problem

    async def recover(self, consumer: str) -> list[Delivery]:
        args: list[str | int] = [self.group, consumer, self.recover_limit]
        async with self.conn.guard("recover"):
            rows = await self._grouped(lambda: self._recover(keys=[self.keys.stream], args=args))
            return await self._deliveries(rows, consumer)

    async def claim(self, consumer: str, *, count: int, block: float) -> list[Delivery]:
        """Up to ``count`` deliveries: taken over from dead consumers, then new (one script,
        one round trip); waiting up to ``block`` seconds for new work only when there was
        nothing at all."""
        if count < 1:
            return []
        min_idle = max(1, int(self.reclaim_after * 1000))
        args: list[str | int] = [self.group, consumer, min_idle, count]
        stream = self.keys.stream
        async with self.conn.guard("claim", block=block):
            rows = await self._grouped(
                lambda: self.conn.batch.script(self._reclaim, [stream], args)
            )
            out = await self._deliveries(rows, consumer)
            wait = self.conn.block_ms(block)
            if not out and wait is not None:
                reply: Any = await self._grouped(
                    lambda: self.conn.client.xreadgroup(
                        self.group,
                        consumer,
                        {self.keys.stream: ">"},
                        count=count,
                        block=wait,
                    )
                )
                fresh = [
                    (entry_id, fields.get(b"i") if fields else None, 1)
                    for _, entries in reply or ()
                    for entry_id, fields in entries
                ]
                out += await self._deliveries(fresh, consumer)
        return out

    async def depth(self) -> ShardDepth:
        """How much work this stream holds: waiting for a worker, and claimed (pending)."""
        async with self.conn.guard("queue depth"):
            waiting = int(await self.conn.client.xlen(self.keys.stream))
            try:
                summary: Any = await self.conn.client.xpending(self.keys.stream, self.group)
                pending = int(summary["pending"]) if summary else 0
            except ResponseError as exc:
                if not is_error(exc, "NOGROUP"):
                    raise
                pending = 0
        # (XLEN counts pending entries too: acknowledged ones are deleted.)
        return ShardDepth(self.keys.stream, max(0, waiting - pending), pending)

    async def _deliveries(self, rows: Any, consumer: str) -> list[Delivery]:
        out: list[Delivery] = []
        for entry_id, payload, count in rows or ():
            entry = _text(entry_id)
            try:
                item = WorkItem.model_validate_json(payload if payload is not None else b"")
            except ValidationError:
                await self._discard(entry, payload, int(count))
                continue
            out.append(Delivery(item, self.tag + entry, int(count), consumer))
        return out

    def _entry(self, delivery: Delivery) -> str:
        """The stream entry ``delivery`` is of."""
        if not delivery.delivery_id.startswith(self.tag):
            raise ValueError(
                f"delivery {delivery.delivery_id!r} is not of {self.keys.stream} "
                f"(its ids start with {self.tag!r})"
            )
        return delivery.delivery_id[len(self.tag) :]

    async def _discard(self, entry: str, payload: bytes | None, attempts: int) -> None:
        """An entry that is not a work item can never be done: keep it as a dead letter."""
        log.error(
            "unreadable work item moved to the dead letters",
            extra={"delivery_id": self.tag + entry},
        )
        await self._dead_letter(
            keys=[self.keys.stream, self.keys.dead],
            args=[
                self.group,
                entry,
                payload or b"",
                "unreadable work item",
                attempts,
                self.clock.now().isoformat(),
                self.max_dead_letters,
            ],
        )

    async def touch(self, delivery: Delivery) -> bool:
        args = [self.group, delivery.consumer, self._entry(delivery)]
        async with self.conn.guard("touch"):
            try:
                done = await self.conn.batch.script(self._touch, [self.keys.stream], args)
            except ResponseError as exc:
                if not is_error(exc, "NOGROUP"):
                    raise
                return False  # the group (and so every pending entry) is gone
        return bool(done)

    async def ack(self, delivery: Delivery) -> None:
        async with self.conn.guard("ack"):
            await self.conn.batch.script(
                self._ack, [self.keys.stream], [self.group, self._entry(delivery)]
            )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        args: list[bytes | str | int] = [
            self.group,
            self._entry(delivery),
            delivery.item.model_dump_json(exclude_defaults=True).encode(),
            reason,
            delivery.attempt,
            self.clock.now().isoformat(),
            self.max_dead_letters,
        ]
        async with self.conn.guard("dead_letter"):
            await self._dead_letter(keys=[self.keys.stream, self.keys.dead], args=args)

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        if limit < 1:
            return []
        async with self.conn.guard("dead_letters"):
            entries: Any = await self.conn.client.xrevrange(self.keys.dead, "+", "-", count=limit)
        out: list[DeadLetter] = []
        for entry_id, fields in reversed(entries):
            try:
                out.append(
                    DeadLetter(
                        item=WorkItem.model_validate_json(fields[b"i"]),
                        reason=fields[b"r"].decode(),
                        attempts=int(fields[b"a"]),
                        at=datetime.fromisoformat(fields[b"t"].decode()),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError, ValidationError):
                log.warning(
                    "skipping an unreadable dead letter", extra={"entry_id": _text(entry_id)}
                )
        return out


class RedisWorkQueue:
    """The :class:`chatcore.ports.WorkQueue` and its :class:`chatcore.ports.DeadLetterLog` on
    Redis streams and consumer groups: one stream (``{chatcore:work}``), or ``shards`` of them
    in different slots (``{chatcore:work:<n>...}``), so that on a Redis Cluster the claims and
    acknowledgements of all work are spread over the masters instead of one slot carrying them
    all. A session always maps to the same shard, so its turns stay in order.

    A claim takes from every shard: first what is waiting (taken over from dead consumers, then
    new), starting at a different shard each time so that none is starved; only when nothing
    waits anywhere does it block, on every shard at once. The first shard to answer ends the
    wait; the others' reads are left running, not cancelled (a cancelled read may already
    have been delivered), and what they bring is handed out by the next claim.
    """

    def __init__(
        self,
        conn: RedisConnection,
        *,
        name: str = "chatcore:work",
        shards: int = 1,
        group: str = "workers",
        reclaim_after: float = 30.0,
        clock: Clock | None = None,
        recover_limit: int = 1000,
        max_dead_letters: int = 10_000,
    ) -> None:
        if not 1 <= shards <= 256:
            raise ValueError("shards must be from 1 to 256")
        self.conn = conn
        self.group = group
        self.reclaim_after = reclaim_after
        self.streams = [
            StreamQueue(
                conn,
                keys,
                group=group,
                reclaim_after=reclaim_after,
                clock=clock,
                recover_limit=recover_limit,
                max_dead_letters=max_dead_letters,
                tag=f"{index}/" if shards > 1 else "",
            )
            for index, keys in enumerate(conn.keys.queue_shards(name, shards))
        ]
        # Reads still running from an earlier claim's wait, one per shard at most, and what
        # finished reads brought that no claim has handed out yet.
        self._reads: dict[int, asyncio.Task[list[Delivery]]] = {}
        self._next = 0

    @property
    def keys(self) -> QueueKeys:
        """The keys of the first (with one shard: the only) stream."""
        return self.streams[0].keys

    def shard_of(self, session_id: str) -> StreamQueue:
        return self.streams[shard_index(session_id, len(self.streams))]

    async def ensure_group(self) -> None:
        for stream in self.streams:
            await stream.ensure_group()

    async def enqueue(self, item: WorkItem) -> None:
        await self.shard_of(item.session_id).enqueue(item)

    async def recover(self, consumer: str) -> list[Delivery]:
        out: list[Delivery] = []
        for stream in self.streams:
            out += await stream.recover(consumer)
        return out

    async def claim(self, consumer: str, *, count: int, block: float) -> list[Delivery]:
        if count < 1:
            return []
        if len(self.streams) == 1:
            return await self.streams[0].claim(consumer, count=count, block=block)
        out = self._harvest(count)
        n = len(self.streams)
        start, self._next = self._next, (self._next + 1) % n
        for k in range(n):
            if len(out) >= count:
                break
            index = (start + k) % n
            if index in self._reads:
                continue  # a read of this shard is still waiting; it is not asked twice
            out += await self.streams[index].claim(consumer, count=count - len(out), block=0)
        if out or block <= 0:
            return out
        for index, stream in enumerate(self.streams):
            if index not in self._reads:
                self._reads[index] = asyncio.create_task(
                    stream.claim(consumer, count=1, block=block),
                    name=f"chatcore-claim:{index}",
                )
        await asyncio.wait(set(self._reads.values()), return_when=asyncio.FIRST_COMPLETED)
        return self._harvest(count)

    def _harvest(self, count: int) -> list[Delivery]:
        """What finished reads brought (a read's error is raised here, once)."""
        out: list[Delivery] = []
        error: BaseException | None = None
        for index, task in list(self._reads.items()):
            if not task.done():
                continue
            del self._reads[index]
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                error = error or exc
                continue
            out += task.result()
        if error is not None and not out:
            raise error
        return out  # (a read asks for one delivery: this is never far over ``count``)

    async def aclose(self) -> None:
        """Stop the reads still waiting (what they were delivered is reclaimed later)."""
        reads, self._reads = list(self._reads.values()), {}
        for task in reads:
            task.cancel()
        for task in reads:
            with contextlib.suppress(asyncio.CancelledError, PortError):
                await task

    async def touch(self, delivery: Delivery) -> bool:
        return await self.shard_of(delivery.item.session_id).touch(delivery)

    async def ack(self, delivery: Delivery) -> None:
        await self.shard_of(delivery.item.session_id).ack(delivery)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.shard_of(delivery.item.session_id).dead_letter(delivery, reason)

    async def depths(self) -> list[ShardDepth]:
        """Every shard's depth (reaching every shard: a readiness probe of the queue)."""
        return [await stream.depth() for stream in self.streams]

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        if limit < 1:
            return []
        letters: list[DeadLetter] = []
        for stream in self.streams:
            letters += await stream.dead_letters(limit=limit)
        letters.sort(key=lambda letter: letter.at)
        return letters[-limit:]


def shard_index(session_id: str, shards: int) -> int:
    """The shard of a session's work: fixed for a given number of shards."""
    if shards == 1:
        return 0
    return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=4).digest()) % shards
