"""Appends pushed to the API as they happen: Redis pub/sub, one channel per session.

The append script publishes every successful append on ``live:{<session_id>}``: the log's
previous last id, then each new entry's id and stored event, one per line (a stored event is
compact JSON, which never holds a raw newline). An API process holds ONE pub/sub connection
and subscribes to the channels of the sessions it has sockets for, so it receives only their
events, with no read to re-issue when the set of sessions changes (I8).

Pub/sub forgets what it could not deliver. Three rules keep the feed gap-free (I5):

* :meth:`RedisLiveSubscription.follow` returns only once Redis has confirmed the subscription,
  so the caller's next read of the log and the pushes overlap instead of leaving a hole;
* each push names the position it follows, so a subscriber that missed one notices it at the
  next one and reads the gap from the log;
* any trouble with the connection (an error, a reconnect redis-py would otherwise do quietly,
  a keep-alive ping left unanswered) marks the subscription lost; :meth:`wait_lost` says so, and
  the caller reconnects and reads what it may have missed from the log.

One task reads the connection: the reader. redis-py's own health check is turned off on it,
because when a check falls due, redis-py sends a PING before the next command and reads the
answer itself, in the task sending the command (a ``follow`` of a new socket) while the reader
is waiting on the same socket: "read() called while another coroutine is already waiting". The
reader sends the keep-alive pings instead (every ``health_check_interval`` seconds of silence)
and reads their answers with everything else; a ping unanswered for another interval means the
connection is dead, whatever TCP still believes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from chatcore.errors import CorruptRecord, StoreUnavailable
from chatcore.events import Recorded
from chatcore.ids import validate_session_id
from chatcore.ports import Appended, AppendListener
from chatcore_adapters.codec import decode_records
from chatcore_adapters.pushes import hand_over
from chatcore_adapters.redis.connection import REDIS_ERRORS, RedisConnection, unavailable

log = logging.getLogger(__name__)


def parse_push(data: bytes) -> tuple[str | None, list[Recorded]]:
    """The previous position and the records of one push (see the module's docstring)."""
    lines = data.split(b"\n")
    if len(lines) < 3 or len(lines) % 2 == 0:
        raise CorruptRecord("a live push is not '<after>\\n(<id>\\n<event>)+'")
    after = lines[0].decode() or None
    pairs = [(lines[i].decode(), lines[i + 1]) for i in range(1, len(lines), 2)]
    return after, decode_records(pairs)


class RedisLiveSubscription:
    """A :class:`chatcore.ports.LiveSubscription` on one pub/sub connection."""

    def __init__(self, conn: RedisConnection, listener: AppendListener) -> None:
        self._conn = conn
        self._keys = conn.keys
        self._listener = listener
        self._following: set[str] = set()
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._lost: BaseException | None = None
        self._lost_event = asyncio.Event()
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._closed = False
        # The health-check interval the connection had before it was lent to us (restored
        # when it goes back to the pool).
        self._pool_health_check: float | None = None
        # Commands go out in the order they were asked for (an unfollow then a follow of the
        # same session must leave it followed); confirmations are awaited outside the lock.
        self._sending = asyncio.Lock()

    # --- the port ---------------------------------------------------------------------------

    async def follow(self, session_id: str) -> None:
        channel = self._keys.live(session_id)
        self._check()
        self._following.add(session_id)
        await self._subscribe([channel])

    async def unfollow(self, session_id: str) -> None:
        validate_session_id(session_id)
        self._following.discard(session_id)
        if self._pubsub is None or self._lost is not None:
            return  # a lost subscription re-subscribes only what is still followed
        try:
            async with self._sending, self._conn.guard("unfollow"):
                await self._pubsub.unsubscribe(self._keys.live(session_id))
        except StoreUnavailable as exc:
            self._lose(exc)
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
        channels = [self._keys.live(sid) for sid in sorted(self._following)]
        if channels:
            await self._subscribe(channels)
        log.info("live subscription re-established", extra={"sessions": len(channels)})

    async def close(self) -> None:
        self._closed = True
        self._following.clear()
        self._lost_event.set()
        await self._drop()

    # --- the connection ---------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("the subscription is closed")
        if self._lost is not None:
            raise StoreUnavailable("the live subscription was lost; reconnect")

    def _lose(self, error: BaseException) -> None:
        if self._lost is None:
            self._lost = error
            log.warning("live subscription lost", extra={"error": type(error).__name__})
        for waiters in self._confirmations.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StoreUnavailable("the live subscription was lost"))
        self._confirmations.clear()
        self._lost_event.set()

    async def _subscribe(self, channels: list[str]) -> None:
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            waiter: asyncio.Future[None] = loop.create_future()
            self._confirmations.setdefault(channel.encode(), deque()).append(waiter)
            waiters.append(waiter)
        try:
            async with self._conn.guard("follow"):
                async with self._sending:
                    if self._pubsub is None:
                        if self._conn.cluster:
                            # Any node will do: a PUBLISH reaches the subscribers of every node.
                            await self._conn.client.initialize()
                        self._pubsub = self._conn.client.pubsub()
                    await self._pubsub.subscribe(*channels)
                    if self._reader is None:
                        connection = self._pubsub.connection
                        # From here on, redis-py would reconnect and re-subscribe by itself
                        # after a dropped connection, losing what was published meanwhile.
                        connection.register_connect_callback(self._reconnected)
                        # The reader alone reads this connection, pings included.
                        self._pool_health_check = connection.health_check_interval
                        connection.health_check_interval = 0
                        self._reader = asyncio.create_task(self._read(), name="chatcore-live")
                await asyncio.gather(*waiters)
        except StoreUnavailable as exc:
            self._lose(exc)
            raise
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
                elif not waiter.cancelled():
                    waiter.exception()  # retrieved: the error was raised above

    async def _reconnected(self, connection: object) -> None:
        self._lose(ConnectionError("the pub/sub connection was re-established"))

    async def _drop(self) -> None:
        reader, self._reader = self._reader, None
        pubsub, self._pubsub = self._pubsub, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if pubsub is not None:
            if pubsub.connection is not None:
                # The connection goes back to the pool: it must not call us any more, and it
                # checks its health again as the pool's other connections do.
                with contextlib.suppress(ValueError):
                    pubsub.connection.deregister_connect_callback(self._reconnected)
                if self._pool_health_check is not None:
                    pubsub.connection.health_check_interval = self._pool_health_check
            with contextlib.suppress(*REDIS_ERRORS):
                await pubsub.aclose()
        self._pool_health_check = None
        self._confirmations.clear()

    async def _read(self) -> None:
        pubsub = self._pubsub
        prefix = len(self._keys.live_prefix)
        settings = self._conn.settings
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
                        self._lose(TimeoutError("no answer to the live connection's ping"))
                        return
                    if pinged is None and now - heard >= interval:
                        async with self._sending:
                            await pubsub.ping()
                        pinged = now
                    continue
                heard, pinged = now, None
                kind = message["type"]
                if kind == "message":
                    channel: bytes = message["channel"]
                    self._push(channel[prefix:-1].decode(), message["data"])
                elif kind == "subscribe":
                    waiters = self._confirmations.get(message["channel"])
                    if waiters:
                        waiter = waiters.popleft()
                        if not waiter.done():
                            waiter.set_result(None)
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            self._lose(unavailable("live", exc))
        except Exception as exc:
            log.exception("live subscription reader failed")
            self._lose(exc)

    def _push(self, session_id: str, data: bytes) -> None:
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
