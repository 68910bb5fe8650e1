"""Group commit: the Redis calls of many replies and requests that queue up while others are on
their way share one round trip.

redis-py spends about 100 µs of CPU on any single command (a pool checkout, a send, a read,
the wake-ups around them) whatever the command does, and a busy process issues thousands a
second: a worker's appends, lease takes and releases, log reads and acks; an API's rate
limits and intakes. Measured on one core: 96 µs a command sent alone by 64 concurrent
callers, 43 µs in pipelines of 8, 31 µs in pipelines of 16.

A :class:`Batcher` lets at most ``max_in_flight`` sends be on their way at once. The calls made
in one step of the event loop go out together at the next (the takes of a lease and the log
reads of every reply one claim handed over, the starts of those replies once both are back);
calls made while every slot is busy queue up, and when a send completes, everything queued
goes out as one non-transactional pipeline, each caller getting its own reply (or its own
error). A call whose caller gave up before it left (cancelled, or past its deadline) is not
sent. So an idle process waits one step of its loop (microseconds), and a busy one pays one
round trip per batch instead of one per call.

A call is a script (``EVALSHA``, with the script loaded again when Redis lost it: after a
restart, or ``SCRIPT FLUSH``) or a plain command that never blocks (a ``BLOCK`` read would
hold every call behind it). Each still runs on its own (a pipeline is not a transaction), so
two calls in one batch behave exactly as if sent one after the other: an append sees the
append before it and conflicts if it expected the older version. A retried pipeline (redis-py
re-sends it after a dropped connection) is made safe by each write's own guard (an append's
retry token, a lease's compare-and-set, an ack of an entry already acknowledged doing nothing).

Appends have a batcher of their own, because of durable writes (``RedisSettings.wait_replicas``):
there every send is a pipeline, the scripts then a ``WAIT`` per node on the same connection; an
append its node could not replicate in time fails (``NotReplicated``), and only then do the
appends that succeeded get published, in a second round trip (``publish``), so no subscriber
ever sees an event a failover could take back.

On a Redis Cluster a batch is a cluster pipeline: redis-py splits it by node and sends each
node its share as one pipeline, the nodes in parallel. A call the cluster answers with an
error of its own (a slot that moved, a node that went away) is sent again on its own through
the cluster client, which follows redirections and refreshes the slot map.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from chatcore_adapters.redis.connection import RedisConnection

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Call:
    script: Any  # a registered script (redis-py's AsyncScript), or None: a plain command
    keys: Sequence[Any]  # a script's keys; a command: the key it is routed by
    args: Sequence[Any]  # a script's arguments; a command: the whole command
    future: asyncio.Future[Any]


Publisher = Callable[[list[tuple[Sequence[Any], Any]]], Awaitable[None]]


class Batcher:
    def __init__(
        self,
        conn: RedisConnection,
        *,
        max_in_flight: int = 2,
        durable: bool = False,
        publish: Publisher | None = None,
    ) -> None:
        """``durable``: wait for the replicas after every send (``wait_replicas``), and hand
        the (args, reply) of the calls that succeeded to ``publish`` (appends only)."""
        self._conn = conn
        self._max_in_flight = max_in_flight
        self._publish = publish
        self._durable = durable and conn.settings.wait_replicas > 0
        self._scheduled = False
        self._in_flight = 0
        self._pending: list[_Call] = []
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.batched_calls = 0

    async def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` (registered with the connection's client); its reply (or error)."""
        return await self._call(_Call(script, keys, args, self._future()))

    async def command(self, *command: Any, key: str) -> Any:
        """Run a command that does not block, routed by ``key``; its reply (or error)."""
        return await self._call(_Call(None, (key,), command, self._future()))

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _call(self, call: _Call) -> Any:
        self._pending.append(call)
        if not self._scheduled and self._in_flight < self._max_in_flight:
            # Sent at the next step of the event loop, with every call made in this one.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._ticked)
        return await call.future

    def _ticked(self) -> None:
        self._scheduled = False
        self._launch_pending()

    def _launch_pending(self) -> None:
        if not self._pending or self._in_flight >= self._max_in_flight:
            return
        batch = [call for call in self._pending if not call.future.done()]
        self._pending = []
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.create_task(self._send_batch(batch), name="chatcore-redis-batch")
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
                call = batch[0]
                _settle(call.future, await self._alone(call))
                return
            self.batches += 1
            self.batched_calls += len(batch)
            replies = await self._pipeline(batch)
            lost = [isinstance(r, NoScriptError) for r in replies]
            if any(lost):
                # Redis restarted (or flushed its scripts): load each once, send those again.
                again = [c for c, miss in zip(batch, lost, strict=True) if miss]
                for text in {c.script.script for c in again}:
                    await self._conn.client.script_load(text)
                for call, reply in zip(again, await self._pipeline(again), strict=True):
                    await self._settle_or_resend(call, reply)
            for call, reply, miss in zip(batch, replies, lost, strict=True):
                if not miss:
                    await self._settle_or_resend(call, reply)
            await self._publish_replicated(batch)
        except BaseException as exc:  # every caller hears about it; cancellation included
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(
                        exc if isinstance(exc, Exception) else ConnectionError()
                    )
            if not isinstance(exc, Exception):
                raise

    async def _alone(self, call: _Call) -> Any:
        """One call, sent by itself (its error is its reply)."""
        try:
            if call.script is not None:
                return await call.script(keys=list(call.keys), args=list(call.args))
            return await self._conn.client.execute_command(*call.args)
        except Exception as exc:  # (the caller hears of it)  # noqa: BLE001
            return exc

    async def _settle_or_resend(self, call: _Call, reply: Any) -> None:
        if self._conn.cluster and _cluster_error(reply):
            if self._durable:
                try:
                    (reply,) = await self._pipeline([call])
                except Exception as exc:  # (the caller hears of it)  # noqa: BLE001
                    reply = exc
            else:
                reply = await self._alone(call)
        _settle(call.future, reply)

    async def _publish_replicated(self, batch: list[_Call]) -> None:
        """Durable mode: push the appends that succeeded (and were replicated)."""
        if self._publish is None:
            return
        done = [
            (call.args, call.future.result())
            for call in batch
            if call.future.done()
            and not call.future.cancelled()
            and call.future.exception() is None
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
        for call in calls:
            # (execute_command: redis-py's cluster pipeline refuses its evalsha() helper, but
            # routes an EVALSHA by its key like any keyed command)
            if call.script is None:
                pipe.execute_command(*call.args)
            else:
                pipe.execute_command(
                    "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
                )
        waited = self._add_waits(pipe, calls) if self._durable else {}
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception:
            if self._durable:
                await self._conn.refresh_slots()  # (a WAIT aimed at a node now gone)
            raise
        out = replies[: len(calls)]
        if self._durable:
            if any(_cluster_error(r) for r in replies):
                await self._conn.refresh_slots()
            self._check_waits(calls, out, replies, waited)
        return out

    def _add_waits(self, pipe: Any, calls: list[_Call]) -> dict[str, int]:
        """Durable mode: a WAIT per node, behind that node's writes; node name -> the index
        of its WAIT's reply."""
        waited: dict[str, int] = {}
        for call in calls:
            node = self._conn.node_of(call.keys[0])
            name = "" if node is None else str(node.name)
            if name not in waited and self._conn.add_wait(pipe, call.keys[0]):
                waited[name] = len(calls) + len(waited)
        return waited

    def _check_waits(
        self, calls: list[_Call], out: list[Any], replies: list[Any], waited: dict[str, int]
    ) -> None:
        """A write its node could not replicate in time becomes ``NotReplicated``."""
        for n, call in enumerate(calls):
            node = self._conn.node_of(call.keys[0])
            index = waited.get("" if node is None else str(node.name))
            if index is None or isinstance(out[n], BaseException):
                continue
            problem = self._conn.check_wait(replies[index], "append")
            if problem is not None and out[n][0] == 1:
                out[n] = problem


def _cluster_error(reply: Any) -> bool:
    """A reply that says where the call should have gone, or that the node is gone."""
    if isinstance(reply, (RedisConnectionError, RedisTimeoutError, OSError, RedisClusterException)):
        return True
    return isinstance(reply, ResponseError) and str(reply).split(" ", 1)[0] in _REDIRECTS


_REDIRECTS = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"})


def _succeeded(future: asyncio.Future[Any]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _settle(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():
        return  # the caller gave up (cancelled or timed out); the call stands
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)
