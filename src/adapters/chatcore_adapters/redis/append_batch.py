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

With durable writes (``RedisSettings.wait_replicas``), every send is a pipeline: the scripts,
then a ``WAIT`` per node on the same connection; an append its node could not replicate in
time fails (``NotReplicated``), and only then do the appends that succeeded get published, in
a second round trip (``publish``), so no subscriber ever sees an event a failover could take
back.

On a Redis Cluster the batch is a cluster pipeline: redis-py splits it by node and sends each
node its share as one pipeline, the nodes in parallel. A call the cluster answers with an
error of its own (a slot that moved, a node that went away) is sent again on its own through
the cluster client, which follows redirections and refreshes the slot map; the retry token
makes that safe too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatcore_adapters.redis.connection import RedisConnection

log = logging.getLogger(__name__)

_Call = tuple[list[str], list[bytes | str], "asyncio.Future[Any]"]


Publisher = Callable[[list[tuple[list[bytes | str], Any]]], Awaitable[None]]


class AppendBatcher:
    def __init__(
        self,
        conn: RedisConnection,
        script: Any,
        *,
        max_in_flight: int = 2,
        publish: Publisher | None = None,
    ) -> None:
        self._conn = conn
        self._script = script
        self._max_in_flight = max_in_flight
        # Durable mode: what publishes the (args, reply) of the appends once replicated.
        self._publish = publish
        self._durable = conn.settings.wait_replicas > 0
        self._in_flight = 0
        self._pending: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.batched_calls = 0

    async def call(self, keys: list[str], args: list[bytes | str]) -> Any:
        """Run the append script for ``keys`` (the stream first); its reply (or its error)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        call: _Call = (keys, args, future)
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
            if len(batch) == 1 and not self._durable:
                keys, args, future = batch[0]
                reply = await self._script(keys=keys, args=args)
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
            await self._publish_replicated(batch)
        except BaseException as exc:  # every caller hears about it; cancellation included
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError())
            if not isinstance(exc, Exception):
                raise

    async def _settle_or_resend(self, call: _Call, reply: Any) -> None:
        keys, args, future = call
        if self._conn.cluster and _cluster_error(reply):
            try:
                if self._durable:
                    (reply,) = await self._pipeline([call])
                else:
                    reply = await self._script(keys=keys, args=args)
            except Exception as exc:  # (the caller hears of it)  # noqa: BLE001
                reply = exc
        _settle(future, reply)

    async def _publish_replicated(self, batch: list[_Call]) -> None:
        """Durable mode: push the appends that succeeded (and were replicated)."""
        if self._publish is None:
            return
        done = [
            (args, future.result())
            for _, args, future in batch
            if future.done() and not future.cancelled() and future.exception() is None
        ]
        done = [(args, reply) for args, reply in done if reply[0] == 1]
        if done:
            try:
                await self._publish(done)
            except Exception:  # (subscribers find the gap at the next push)
                log.warning("could not publish replicated appends", exc_info=True)

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        if self._durable:
            await self._conn.initialized()
        pipe = self._conn.client.pipeline(transaction=False)
        for keys, args, _ in calls:
            # (execute_command: redis-py's cluster pipeline refuses its evalsha() helper, but
            # routes an EVALSHA by its key like any keyed command)
            pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
        # Durable mode: a WAIT per node, behind that node's appends.
        waited: dict[str, int] = {}  # node name -> index of its WAIT's reply
        for keys, _, _ in calls:
            node = self._conn.node_of(keys[0])
            name = "" if node is None else str(node.name)
            if name not in waited and self._conn.add_wait(pipe, keys[0]):
                waited[name] = len(calls) + len(waited)
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception:
            if self._durable:
                await self._conn.refresh_slots()  # (a WAIT aimed at a node now gone)
            raise
        out = replies[: len(calls)]
        if self._durable and any(_cluster_error(r) for r in replies):
            await self._conn.refresh_slots()
        for n, (keys, _, _) in enumerate(calls):
            node = self._conn.node_of(keys[0])
            index = waited.get("" if node is None else str(node.name))
            if index is None or isinstance(out[n], BaseException):
                continue
            problem = self._conn.check_wait(replies[index], "append")
            if problem is not None and out[n][0] == 1:
                out[n] = problem
        return out


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
