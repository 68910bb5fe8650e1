"""Appends pushed to the API as they happen: Redis pub/sub, one channel per session.

The append script publishes every successful append on ``live:{<session_id>}``: the log's
previous last id, then each new entry's id and stored event, one per line (a stored event is
compact JSON, which never holds a raw newline). An API process subscribes to the channels of
the sessions it has sockets for, so it receives only their events, with no read to re-issue
when the set of sessions changes (I8). On a single server that is ONE pub/sub connection. On a
Redis Cluster the push is a sharded one (``SPUBLISH``, which goes only to the shard that owns
the session's slot instead of to every node) and the subscription holds one connection per
shard it needs (``SSUBSCRIBE`` to each channel on the node that owns it).

Pub/sub forgets what it could not deliver. Three rules keep the feed gap-free (I5):

* :meth:`RedisLiveSubscription.follow` returns only once Redis has confirmed the subscription,
  so the caller's next read of the log and the pushes overlap instead of leaving a hole;
* each push names the position it follows, so a subscriber that missed one notices it at the
  next one and reads the gap from the log;
* any trouble with the connection (an error, a reconnect redis-py would otherwise do quietly,
  a keep-alive ping left unanswered) marks the subscription lost; :meth:`wait_lost` says so, and
  the caller reconnects and reads what it may have missed from the log.

One task reads each connection: its reader. The connection is a client of its own with
redis-py's health check off, because when a check falls due, redis-py sends a PING before the
next command and reads the answer itself, in the task sending the command (a ``follow`` of a
new socket) while the reader is waiting on the same socket: "read() called while another
coroutine is already waiting". The reader sends the keep-alive pings instead (every
``health_check_interval`` seconds of silence) and reads their answers with everything else; a
ping unanswered for another interval means the connection is dead, whatever TCP still
believes. Nor does the client retry: any connection trouble, on any shard, loses the whole
subscription, and the feed reads every followed session from its cursor. A shard that drops
channels by itself (its slots moved to another node) loses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster

from chatcore.errors import CorruptRecord, StoreUnavailable
from chatcore.events import Recorded
from chatcore.ports import Appended, AppendListener
from chatcore_adapters.codec import decode_records
from chatcore_adapters.pushes import hand_over
from chatcore_adapters.redis.connection import (
    REDIS_ERRORS,
    RedisConnection,
    create_pubsub_client,
    unavailable,
)

log = logging.getLogger(__name__)


def parse_push(data: bytes) -> tuple[str | None, list[Recorded]]:
    """The previous position and the records of one push (see the module's docstring)."""
    lines = data.split(b"\n")
    if len(lines) < 3 or len(lines) % 2 == 0:
        raise CorruptRecord("a live push is not '<after>\\n(<id>\\n<event>)+'")
    after = lines[0].decode() or None
    pairs = [(lines[i].decode(), lines[i + 1]) for i in range(1, len(lines), 2)]
    return after, decode_records(pairs)


class _Lane:
    """One pub/sub connection and its reader: the single server's, or one Cluster shard's."""

    def __init__(self, sub: RedisLiveSubscription, client: Any, *, sharded: bool) -> None:
        self._sub = sub
        self._client = client
        self._sharded = sharded
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}
        # Channels this lane was asked to leave: their unsubscribe confirmations are expected.
        self._leaving: set[bytes] = set()
        # Commands go out in the order they were asked for (an unfollow then a follow of the
        # same session must leave it followed); confirmations are awaited outside the lock.
        self._sending = asyncio.Lock()

    async def subscribe(self, channels: list[str]) -> None:
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter: asyncio.Future[None] = loop.create_future()
            self._confirmations.setdefault(channel.encode(), deque()).append(waiter)
            waiters.append(waiter)
        try:
            async with self._sending:
                if self._pubsub is None:
                    self._pubsub = self._client.pubsub()
                for channel in channels:
                    self._leaving.discard(channel.encode())
                if self._sharded:
                    # One command per channel: an SSUBSCRIBE's channels must share a slot.
                    for channel in channels:
                        await self._pubsub.ssubscribe(channel)
                else:
                    await self._pubsub.subscribe(*channels)
                if self._reader is None:
                    self._reader = asyncio.create_task(self._read(), name="chatcore-live")
            await asyncio.gather(*waiters)
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
                elif not waiter.cancelled():
                    waiter.exception()  # retrieved: the caller got the error

    async def unsubscribe(self, channel: str) -> None:
        if self._pubsub is None:
            return
        async with self._sending:
            self._leaving.add(channel.encode())
            if self._sharded:
                await self._pubsub.sunsubscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)

    def fail_waiters(self) -> None:
        for waiters in self._confirmations.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StoreUnavailable("the live subscription was lost"))
        self._confirmations.clear()

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pubsub, self._pubsub = self._pubsub, None
        with contextlib.suppress(*REDIS_ERRORS):
            if pubsub is not None:
                await pubsub.aclose()
            await self._client.aclose()
        self._confirmations.clear()

    async def _read(self) -> None:
        pubsub = self._pubsub
        sub = self._sub
        prefix = len(sub.keys.live_prefix)
        settings = sub.conn.settings
        interval = float(settings.health_check_interval)
        wait = min(settings.max_block, interval) if interval > 0 else settings.max_block
        loop = asyncio.get_running_loop()
        heard = loop.time()  # when the connection last proved alive
        pinged: float | None = None  # when the unanswered keep-alive ping went out
        try:
            while True:
                message = await pubsub.get_message(timeout=wait)
                now = loop.time()
                if message is None:
                    if interval <= 0:
                        continue
                    if pinged is not None and now - pinged >= interval:
                        sub.lose(TimeoutError("no answer to the live connection's ping"))
                        return
                    if pinged is None and now - heard >= interval:
                        async with self._sending:
                            await pubsub.ping()
                        pinged = now
                    continue
                heard, pinged = now, None
                kind = message["type"]
                if kind in ("message", "smessage"):
                    channel: bytes = message["channel"]
                    sub.push(channel[prefix:-1].decode(), message["data"])
                elif kind in ("subscribe", "ssubscribe"):
                    waiters = self._confirmations.get(message["channel"])
                    if waiters:
                        waiter = waiters.popleft()
                        if not waiter.done():
                            waiter.set_result(None)
                elif kind == "sunsubscribe" and message["channel"] not in self._leaving:
                    # The shard let the channel go by itself: its slot moved (resharding, a
                    # failover). Pushes for that session now go elsewhere: start again.
                    sub.lose(ConnectionError("a shard dropped a live channel (slot moved)"))
                    return
                elif kind in ("unsubscribe", "sunsubscribe"):
                    self._leaving.discard(message["channel"])
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            sub.lose(unavailable("live", exc))
        except Exception as exc:
            log.exception("live subscription reader failed")
            sub.lose(exc)


class RedisLiveSubscription:
    """A :class:`chatcore.ports.LiveSubscription` on Redis pub/sub: one connection on a single
    server, one per shard needed on a Cluster."""

    def __init__(self, conn: RedisConnection, listener: AppendListener) -> None:
        self.conn = conn
        self.keys = conn.keys
        self._listener = listener
        self._following: set[str] = set()
        self._lanes: dict[str, _Lane] = {}
        self._lost: BaseException | None = None
        self._lost_event = asyncio.Event()
        self._closed = False

    # --- the port ---------------------------------------------------------------------------

    async def follow(self, session_id: str) -> None:
        channel = self.keys.live(session_id)
        self._check()
        self._following.add(session_id)
        try:
            async with self.conn.guard("follow"):
                lane = await self._lane_for(channel)
                await lane.subscribe([channel])
        except StoreUnavailable as exc:
            self.lose(exc)
            raise

    async def unfollow(self, session_id: str) -> None:
        channel = self.keys.live(session_id)
        self._following.discard(session_id)
        if self._lost is not None:
            return  # a lost subscription re-subscribes only what is still followed
        lane = self._lanes.get(self._lane_name(channel))
        if lane is None:
            return
        try:
            async with self.conn.guard("unfollow"):
                await lane.unsubscribe(channel)
        except StoreUnavailable as exc:
            self.lose(exc)
            raise

    async def wait_lost(self) -> str:
        while self._lost is None:
            if self._closed:
                raise RuntimeError("the subscription is closed")
            self._lost_event.clear()
            await self._lost_event.wait()
        return f"{type(self._lost).__name__}: {self._lost}"

    async def reconnect(self) -> None:
        if self._closed:
            raise RuntimeError("the subscription is closed")
        await self._drop()
        self._lost = None
        self._lost_event.clear()
        channels = [self.keys.live(sid) for sid in sorted(self._following)]
        try:
            async with self.conn.guard("follow"):
                client = self.conn.client
                if isinstance(client, RedisCluster):
                    # Shards may have moved (a failover): ask the cluster where slots are now.
                    await client.initialize()
                    await client.nodes_manager.initialize()
                by_lane: dict[str, list[str]] = {}
                for channel in channels:
                    by_lane.setdefault(self._lane_name(channel), []).append(channel)
                for group in by_lane.values():
                    lane = await self._lane_for(group[0])
                    await lane.subscribe(group)
        except StoreUnavailable as exc:
            self.lose(exc)
            raise
        log.info("live subscription re-established", extra={"sessions": len(channels)})

    async def close(self) -> None:
        self._closed = True
        self._following.clear()
        self._lost_event.set()
        await self._drop()

    # --- lanes ------------------------------------------------------------------------------

    def _node_of(self, channel: str) -> ClusterNode | None:
        """The Cluster node owning ``channel``'s slot (``None`` on a single server)."""
        client = self.conn.client
        if not isinstance(client, RedisCluster):
            return None
        node = client.get_node_from_key(channel)
        if node is None:
            raise StoreUnavailable(f"no node serves the slot of {channel!r}")
        return node

    def _lane_name(self, channel: str) -> str:
        """Which connection carries ``channel``: the node owning its slot on a Cluster."""
        node = self._node_of(channel)
        return "" if node is None else str(node.name)

    async def _lane_for(self, channel: str) -> _Lane:
        client = self.conn.client
        if isinstance(client, RedisCluster) and not client.nodes_manager.slots_cache:
            await client.initialize()
        node = self._node_of(channel)
        name = "" if node is None else str(node.name)
        lane = self._lanes.get(name)
        if lane is None:
            settings = self.conn.settings
            if node is None:
                pubsub_client = create_pubsub_client(settings)
            else:
                pubsub_client = create_pubsub_client(settings, host=node.host, port=int(node.port))
            lane = self._lanes[name] = _Lane(self, pubsub_client, sharded=node is not None)
        return lane

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("the subscription is closed")
        if self._lost is not None:
            raise StoreUnavailable("the live subscription was lost; reconnect")

    def lose(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
            log.warning("live subscription lost", extra={"error": type(error).__name__})
        for lane in self._lanes.values():
            lane.fail_waiters()
        self._lost_event.set()

    async def _drop(self) -> None:
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            await lane.close()

    def push(self, session_id: str, data: bytes) -> None:
        if session_id not in self._following:
            return  # unfollowed while the push was on its way
        try:
            after, records = parse_push(data)
        except CorruptRecord as exc:
            # Dropping it is safe: the next push names a position this one moved past, and
            # the subscriber reads the gap from the log (where the record is read again).
            log.warning(
                "unreadable live push", extra={"session_id": session_id, "error": exc.message}
            )
            return
        hand_over(Appended(session_id, after, records), self._listener)
