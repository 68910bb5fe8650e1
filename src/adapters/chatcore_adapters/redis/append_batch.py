"""Group commit for appends: the appends of many sessions that queue up while others are on
their way share one round trip.

redis-py spends about 100 µs of CPU on any single command (a pool checkout, a send, a read,
the wake-ups around them) whatever the command does, and a saturated worker issues thousands
of appends a second, one per reply per flush. :class:`AppendBatcher` lets at most
``max_in_flight`` sends be on their way at once. An append that finds a free slot is sent at
once, by its caller, with no added wait; appends that find every slot busy queue up, and when
a send completes, everything queued goes out as one non-transactional pipeline of ``EVALSHA``
calls, each caller getting its own script reply. So an idle worker pays nothing, and a busy
one pays one round trip per batch instead of one per append.

Each script still runs on its own (a pipeline is not a transaction), so two appends of one
session in one batch behave exactly as if sent one after the other: the second sees the
first's write and conflicts if it expected the older version. A retried pipeline (redis-py
re-sends it after a dropped connection) is made safe by each script's retry token.

On a Redis Cluster the batch is a cluster pipeline: redis-py splits it by node and sends each
node its share as one pipeline, the nodes in parallel. A call the cluster answers with an
error of its own (a slot that moved, a node that went away) is sent again on its own through
the cluster client, which follows redirections and refreshes the slot map; the retry token
makes that safe too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatcore_adapters.redis.connection import RedisConnection

log = logging.getLogger(__name__)

_Call = tuple[str, list[bytes | str], "asyncio.Future[Any]"]


class AppendBatcher:
    def __init__(self, conn: RedisConnection, script: Any, *, max_in_flight: int = 2) -> None:
        self._conn = conn
        self._script = script
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.batched_calls = 0

    async def call(self, key: str, args: list[bytes | str]) -> Any:
        """Run the append script for ``key``; its reply (or its error)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        call: _Call = (key, args, future)
        if self._in_flight >= self._max_in_flight:
            self._pending.append(call)  # the send now on its way launches it when done
            return await future
        self._in_flight += 1
        try:
            await self._send([call])
        finally:
            self._in_flight -= 1
            self._launch_pending()
        return future.result()

    def _launch_pending(self) -> None:
        if not self._pending or self._in_flight >= self._max_in_flight:
            return
        batch, self._pending = self._pending, []
        self._in_flight += 1
        task = asyncio.create_task(self._send_batch(batch), name="chatcore-append-batch")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send_batch(self, batch: list[_Call]) -> None:
        try:
            await self._send(batch)
        finally:
            self._in_flight -= 1
            self._launch_pending()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if len(batch) == 1:
                key, args, future = batch[0]
                reply = await self._script(keys=[key], args=args)
                _settle(future, reply)
                return
            self.batches += 1
            self.batched_calls += len(batch)
            replies = await self._pipeline(batch)
            lost = [isinstance(r, NoScriptError) for r in replies]
            if any(lost):
                # Redis restarted (or flushed its scripts): load it once, send those again.
                await self._conn.client.script_load(self._script.script)
                again = [c for c, miss in zip(batch, lost, strict=True) if miss]
                for call, reply in zip(again, await self._pipeline(again), strict=True):
                    await self._settle_or_resend(call, reply)
            for call, reply, miss in zip(batch, replies, lost, strict=True):
                if not miss:
                    await self._settle_or_resend(call, reply)
        except BaseException as exc:  # every caller hears about it; cancellation included
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError())
            if not isinstance(exc, Exception):
                raise

    async def _settle_or_resend(self, call: _Call, reply: Any) -> None:
        key, args, future = call
        if self._conn.cluster and _cluster_error(reply):
            try:
                reply = await self._script(keys=[key], args=args)
            except Exception as exc:  # (the caller hears of it)  # noqa: BLE001
                reply = exc
        _settle(future, reply)

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        pipe = self._conn.client.pipeline(transaction=False)
        for key, args, _ in calls:
            # (execute_command: redis-py's cluster pipeline refuses its evalsha() helper, but
            # routes an EVALSHA by its key like any keyed command)
            pipe.execute_command("EVALSHA", self._script.sha, 1, key, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _cluster_error(reply: Any) -> bool:
    """A reply that says where the call should have gone, or that the node is gone."""
    if isinstance(reply, (RedisConnectionError, RedisTimeoutError, OSError, RedisClusterException)):
        return True
    return isinstance(reply, ResponseError) and str(reply).split(" ", 1)[0] in _REDIRECTS


_REDIRECTS = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"})


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():
        return  # the caller gave up (cancelled or timed out); the append stands
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)
