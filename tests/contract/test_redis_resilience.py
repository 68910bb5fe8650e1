"""The Redis adapters when things go wrong: the server dies and comes back, connections are
killed, the cache lies, ids are hostile, a process dies between two steps.

Each test that stops a server runs its own (append-only, fsync always), so the shared server
of the other tests is never disturbed. Every wait is bounded by the test itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import pytest
import redis

from chatcore.errors import InvalidIdentifier, StoreUnavailable
from chatcore.events import Recorded, event_type
from chatcore.gcra import Rate
from chatcore.ports import DeadLetter, Delivery, WorkItem
from chatcore.service import ChatService
from chatcore.view import SessionView
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.codec import encode_view
from chatcore_adapters.redis import (
    RedisConnection,
    RedisEventStore,
    RedisIntentJournal,
    RedisLeases,
    RedisRateLimits,
    RedisSessionCache,
    RedisSettings,
    RedisWorkQueue,
    connect,
)
from tests.contract.event_store_contract import Pushes
from tests.support.factories import (
    EPOCH,
    HOSTILE_SESSION_IDS,
    CountingIds,
    delta,
    message,
    opening,
    session_id,
)
from tests.support.redis_server import RedisServer, free_port, unique_prefix

pytestmark = [pytest.mark.redis, pytest.mark.slow]

T = TypeVar("T")

# Long enough for any single call below, short enough that a hang fails the test quickly.
CALL_BOUND = 15.0


def fast_settings(url: str, *, name: str = "chatcore-resilience") -> RedisSettings:
    """Short timeouts, so a dead server is reported within a couple of seconds."""
    return RedisSettings(
        url=url,
        prefix=unique_prefix(),
        client_name=name,
        max_block=2.0,
        read_margin=2.0,
        connect_timeout=0.5,
        operation_timeout=2.0,
        retries=2,
        backoff_base=0.02,
        backoff_cap=0.2,
        health_check_interval=1,
    )


async def bounded(call: Awaitable[T]) -> T:
    """Await ``call``, failing the test (not hanging it) if it takes unreasonably long."""
    async with asyncio.timeout(CALL_BOUND):
        return await call


def item(n: int, sid: str) -> WorkItem:
    return WorkItem(session_id=sid, conversation_id="c1", message_id=f"m{n}", enqueued_at=EPOCH)


@pytest.fixture
def durable_server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
async def durable_conn(durable_server: RedisServer) -> AsyncIterator[RedisConnection]:
    conn = connect(fast_settings(durable_server.url))
    try:
        yield conn
    finally:
        await conn.aclose()


class Adapters:
    def __init__(self, conn: RedisConnection) -> None:
        self.store = RedisEventStore(conn)
        self.cache = RedisSessionCache(conn, ttl=60)
        self.queue = RedisWorkQueue(conn, reclaim_after=30)
        self.intents = RedisIntentJournal(conn)
        self.leases = RedisLeases(conn)

    def every_call(self, sid: str, version: str | None, delivery: Delivery) -> list[Awaitable[Any]]:
        """One call of every adapter method (each needs Redis)."""
        return [
            self.store.append(sid, [message(9)], expected_version=version),
            self.store.read(sid),
            self.store.last_position(sid),
            self.cache.get(sid),
            self.cache.put(sid, SessionView()),
            self.cache.delete(sid),
            self.queue.enqueue(item(9, sid)),
            self.queue.recover("w1"),
            self.queue.claim("w1", count=1, block=0.5),
            self.queue.touch(delivery),
            self.queue.ack(delivery),
            self.queue.dead_letter(delivery, "x"),
            self.queue.dead_letters(),
            self.intents.record(sid, "cm9"),
            self.intents.clear(sid, "cm9"),
            self.intents.stale(0),
            self.leases.acquire("k", "me", 5),
            self.leases.replace("k", "me", "you", 5),
            self.leases.renew("k", "me", 5),
            self.leases.release("k", "me"),
        ]


# --- (a) the server stops and starts again ------------------------------------------------------


async def test_a_server_restart_is_reported_then_survived_and_nothing_acknowledged_is_lost(
    durable_server: RedisServer, durable_conn: RedisConnection
) -> None:
    a = Adapters(durable_conn)
    sid = session_id()
    recorded = await a.store.append(sid, opening(sid), expected_version=None)
    recorded += await a.store.append(
        sid, [delta(n) for n in range(50)], expected_version=recorded[-1].position
    )
    for n in range(3):
        await a.queue.enqueue(item(n, sid))
    done, pending = await a.queue.claim("w1", count=2, block=1)
    await a.queue.ack(done)
    await a.intents.record(sid, "cm1")
    assert await a.leases.acquire("reply:" + sid + ":m1", "w1", 60) is None

    # Calls waiting on the server when it dies end with StoreUnavailable, in bounded time.
    idle_queue = RedisWorkQueue(durable_conn, name="idle")  # nothing to claim: it waits
    claims = [asyncio.create_task(idle_queue.claim(f"w{n}", count=5, block=2)) for n in range(2, 4)]
    await asyncio.sleep(0.2)
    durable_server.kill()
    for task in claims:
        with pytest.raises(StoreUnavailable):
            await bounded(task)

    # While it is down, every call says so (a port error, never a redis-py one).
    for call in a.every_call(sid, recorded[-1].position, pending):
        with pytest.raises(StoreUnavailable):
            await bounded(call)
    assert not await durable_conn.ping(timeout=1)

    # Back on the same port: the same objects work again by themselves.
    durable_server.start()
    assert await bounded(durable_conn.ping(timeout=5))
    assert await bounded(a.store.read(sid)) == recorded
    assert await a.store.last_position(sid) == recorded[-1].position
    more = await a.store.append(sid, [message(1)], expected_version=recorded[-1].position)
    assert await a.store.read(sid, after=recorded[-1].position) == more

    again = await a.queue.recover("w1")
    assert [(d.item, d.delivery_id) for d in again] == [(pending.item, pending.delivery_id)]
    fresh = await a.queue.claim("w3", count=5, block=0.2)
    assert [d.item for d in fresh] == [item(2, sid)]  # the acknowledged one never comes back
    assert (sid, "cm1") in await a.intents.stale(0)
    assert await a.leases.acquire("reply:" + sid + ":m1", "w2", 60) == "w1"


async def test_a_blocking_wait_never_outlives_its_deadline_on_a_silent_server(
    durable_server: RedisServer,
) -> None:
    """A server that accepts connections but never answers (stopped with SIGSTOP) is reported
    as unavailable once the call's deadline passes, instead of hanging."""
    settings = dataclasses.replace(
        fast_settings(durable_server.url), operation_timeout=1.0, max_block=1.0
    )
    conn = connect(settings)
    try:
        store, queue = RedisEventStore(conn), RedisWorkQueue(conn)
        sid = session_id()
        await store.append(sid, opening(sid), expected_version=None)
        assert durable_server.process is not None
        durable_server.process.send_signal(signal.SIGSTOP)
        try:
            for call in (
                store.read(sid),
                queue.claim("w", count=1, block=0.5),
            ):
                with pytest.raises(StoreUnavailable):
                    await bounded(call)
        finally:
            durable_server.process.send_signal(signal.SIGCONT)
        assert len(await bounded(store.read(sid))) == 2
    finally:
        await conn.aclose()


# --- (b) connections killed under the adapters ----------------------------------------------------


def kill_clients(server: RedisServer, name: str) -> int:
    """Kill every connection of the clients called ``name``; returns how many."""
    with server.client() as admin:
        clients: Any = admin.client_list()
        killed = 0
        for client in clients:
            if client.get("name") == name:
                with contextlib.suppress(redis.ResponseError):
                    killed += int(admin.client_kill_filter(_id=client["id"]))
        return killed


async def test_killed_connections_are_replaced_by_the_next_calls(
    durable_server: RedisServer,
) -> None:
    conn = connect(fast_settings(durable_server.url, name="chatcore-killed"))
    writer = connect(fast_settings(durable_server.url, name="chatcore-writer"))
    try:
        a = Adapters(conn)
        sid = session_id()
        recorded = await a.store.append(sid, opening(sid), expected_version=None)
        await a.cache.put(sid, SessionView())
        idle = RedisWorkQueue(conn, name="idle")
        claim = asyncio.create_task(idle.claim("w", count=1, block=2))
        await asyncio.sleep(0.2)
        assert kill_clients(durable_server, "chatcore-killed") >= 1
        # A claim waiting on a killed connection either waits again or reports the failure.
        with contextlib.suppress(StoreUnavailable):
            assert await bounded(claim) == []

        # Plain kill of everything normal (the adapters' idle pool connections too).
        with durable_server.client() as admin:
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert await bounded(a.store.read(sid)) == recorded
        assert await a.cache.get(sid) is not None
        assert await a.leases.acquire("k1", "me", 5) is None
        await a.queue.enqueue(item(1, sid))
        assert [d.item for d in await a.queue.claim("w", count=1, block=1)] == [item(1, sid)]

        # A claim started after the kill still wakes up for work queued by another client.
        waiting = asyncio.create_task(idle.claim("w", count=1, block=2))
        await asyncio.sleep(0.1)
        other = RedisWorkQueue(RedisConnection(writer.client, conn.settings), name="idle")
        await other.enqueue(item(2, sid))
        assert [d.item for d in await bounded(waiting)] == [item(2, sid)]
    finally:
        await conn.aclose()
        await writer.aclose()


async def test_a_killed_pubsub_connection_is_reported_and_reconnect_follows_again(
    durable_server: RedisServer,
) -> None:
    """Pub/sub forgets what it could not deliver, so a dropped subscription must say so (the
    feed then reads the gap from the log), never re-subscribe quietly."""
    conn = connect(fast_settings(durable_server.url, name="chatcore-live"))
    writer = connect(fast_settings(durable_server.url, name="chatcore-writer"))
    store = RedisEventStore(RedisConnection(writer.client, conn.settings))  # same key prefix
    heard = Pushes()
    sub = RedisEventStore(conn).subscribe(heard)
    try:
        sid = session_id()
        await bounded(sub.follow(sid))
        recorded = await store.append(sid, opening(sid), expected_version=None)
        got = await heard.until(len(recorded))
        assert [r for a in got for r in a.records] == recorded
        assert kill_clients(durable_server, "chatcore-killed") == 0
        assert kill_clients(durable_server, "chatcore-live-live") >= 1  # its pub/sub client
        missed = await store.append(sid, [message(1)], expected_version=recorded[-1].position)
        await bounded(sub.wait_lost())
        assert await bounded(sub.wait_lost())  # it stays lost until reconnected
        await bounded(sub.reconnect())
        more = await store.append(sid, [message(2)], expected_version=missed[-1].position)
        (pushed,) = await heard.until(len(recorded) + 1)
        assert pushed.after == missed[-1].position  # so the subscriber sees the gap
        assert list(pushed.records) == more

        # Redis itself restarts: the same, and reconnect waits until it is back.
        durable_server.stop()
        await bounded(sub.wait_lost())
        with pytest.raises(StoreUnavailable):
            await bounded(sub.reconnect())
        durable_server.start()
        async with asyncio.timeout(CALL_BOUND):
            while True:
                try:
                    await sub.reconnect()
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
        last = await bounded(store.append(sid, [message(3)], expected_version=more[-1].position))
        (pushed,) = await heard.until(len(recorded) + 2)
        assert list(pushed.records) == last
    finally:
        await sub.close()
        await conn.aclose()
        await writer.aclose()


# --- (c) the cache is only a shortcut (I2) --------------------------------------------------------


@pytest.fixture
async def shared_conn(redis_url: str) -> AsyncIterator[RedisConnection]:
    conn = connect(fast_settings(redis_url))
    try:
        yield conn
    finally:
        await conn.aclose()


def service_on(conn: RedisConnection) -> ChatService:
    return bootstrap(
        store=RedisEventStore(conn), cache=RedisSessionCache(conn, ttl=60), ids=CountingIds()
    ).service


async def delete_cached_views(conn: RedisConnection) -> int:
    keys = [key async for key in conn.client.scan_iter(match=f"{conn.settings.prefix}session:*")]
    return int(await conn.client.delete(*keys)) if keys else 0


async def test_what_the_cache_holds_never_changes_what_load_returns(
    shared_conn: RedisConnection,
) -> None:
    service = service_on(shared_conn)
    opened = await service.open_session(display_name="Ada")
    sid, conv = opened.session_id, opened.conversation_id
    key = shared_conn.keys.view(sid)
    early: Any = await shared_conn.client.get(key)
    await service.submit_message(sid, conversation_id=conv, client_message_id="cm1", text="hi")
    second, _ = await service.start_conversation(sid, title="Second")
    await service.submit_message(sid, conversation_id=second, client_message_id="cm2", text="yo")
    await service.rename_conversation(sid, conversation_id=conv, title="Renamed")
    truth = (await service.load(sid)).model_dump()
    other = await service.open_session()

    async def load() -> dict[str, Any]:
        return (await service.load(sid)).model_dump()

    assert await delete_cached_views(shared_conn) >= 2
    assert await load() == truth
    future = SessionView.model_validate(truth)
    future.version = "99999999999999-0"
    planted: list[bytes] = [
        early,  # an old view: the events after it are folded in
        b"garbage",
        b'{"snapshot": 1, "view": {"version": "1-0"}}',
        encode_view(future),  # a view "from the future" of this log
        encode_view(other.view),  # another session's view
        encode_view(SessionView()),
    ]
    for raw in planted:
        await shared_conn.client.set(key, raw)
        assert await load() == truth
    await shared_conn.client.delete(key)
    assert await load() == truth


# --- (d) hostile ids never reach Redis ---------------------------------------------------------


HOSTILE_LEASE_KEYS = ["", "*", "{x}", "reply:*:m1", "a b", "k\n", "x" * 300]


def hostile_calls(conn: RedisConnection, hostile: str) -> list[Awaitable[Any]]:
    store, cache = RedisEventStore(conn), RedisSessionCache(conn, ttl=60)
    intents = RedisIntentJournal(conn)
    return [
        store.append(hostile, opening("x" * 22), expected_version=None),
        store.read(hostile),
        store.last_position(hostile),
        cache.get(hostile),
        cache.put(hostile, SessionView()),
        cache.delete(hostile),
        intents.record(hostile, "cm1"),
        intents.clear(hostile, "cm1"),
    ]


@pytest.mark.parametrize("hostile", HOSTILE_SESSION_IDS)
async def test_hostile_ids_are_refused_before_any_io(hostile: str) -> None:
    """Adapters pointed at a closed port: any I/O would fail with StoreUnavailable."""
    conn = connect(fast_settings(f"redis://127.0.0.1:{free_port()}/0"))
    try:
        for call in hostile_calls(conn, hostile):
            with pytest.raises(InvalidIdentifier):
                await bounded(call)
        leases = RedisLeases(conn)
        for key in HOSTILE_LEASE_KEYS:
            with pytest.raises(InvalidIdentifier):
                await leases.acquire(key, "me", 5)
    finally:
        await conn.aclose()


async def test_hostile_ids_send_no_command_to_redis(
    shared_conn: RedisConnection, redis_url: str
) -> None:
    with redis.Redis.from_url(redis_url, single_connection_client=True) as admin:

        def commands() -> dict[str, int]:
            stats: Any = admin.info("commandstats")
            return {k: int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}

        await shared_conn.ping()  # connect first: the handshake is not the adapters' doing
        before = commands()
        for hostile in HOSTILE_SESSION_IDS:
            for call in hostile_calls(shared_conn, hostile):
                with pytest.raises(InvalidIdentifier):
                    await call
        assert commands() == before


# --- (e) a crash between "append the message" and "queue its work" -----------------------------


class ProcessDied(Exception):
    pass


class DiesBeforeEnqueue(RedisWorkQueue):
    """A queue whose process dies right before it would queue the work."""

    async def enqueue(self, item: WorkItem) -> None:
        raise ProcessDied


async def test_a_message_whose_submitter_died_before_queueing_is_repaired_by_the_sweeper(
    shared_conn: RedisConnection,
) -> None:
    store, cache = RedisEventStore(shared_conn), RedisSessionCache(shared_conn, ttl=60)
    queue = RedisWorkQueue(shared_conn, name="chatcore:work")
    intents = RedisIntentJournal(shared_conn)
    ids = CountingIds()

    def service_with(queue: RedisWorkQueue) -> ChatService:
        # The two steps with an intent between them, as on a Redis Cluster (one server takes
        # both in one script: the next test).
        return bootstrap(
            store=store, cache=cache, queue=queue, intents=intents, ids=ids, use_intake=False
        ).service

    healthy = service_with(queue)
    doomed = service_with(DiesBeforeEnqueue(shared_conn, name="chatcore:work"))

    opened = await healthy.open_session()
    sid, conv = opened.session_id, opened.conversation_id
    with pytest.raises(ProcessDied):
        await doomed.submit_message(sid, conversation_id=conv, client_message_id="cm1", text="hi")
    # The message is in the log, its work is not in the queue, the intent says so.
    ref = (await healthy.load(sid)).client_messages["cm1"]
    assert await queue.claim("w", count=10, block=0.05) == []
    assert await intents.stale(0) == [(sid, "cm1")]

    assert await healthy.sweep_intents(older_than=0) == 1
    (delivery,) = await queue.claim("w", count=10, block=1)
    assert (delivery.item.session_id, delivery.item.message_id) == (sid, ref.message_id)
    assert await intents.stale(0) == []
    assert await healthy.sweep_intents(older_than=0) == 0
    await queue.ack(delivery)
    assert await queue.claim("w", count=10, block=0.05) == []
    letters: list[DeadLetter] = await queue.dead_letters()
    assert letters == []


class LosesTheReply(RedisEventStore):
    """A store whose process dies after Redis ran its script, before the reply came back."""

    async def append_and_queue(self, *args: Any, **kwargs: Any) -> list[Recorded]:
        await super().append_and_queue(*args, **kwargs)
        raise ProcessDied


async def test_on_one_server_a_message_and_its_work_are_written_together(
    shared_conn: RedisConnection,
) -> None:
    """No intent is needed: the script that appends the message queues its work. A process
    dying after the script leaves both; the client's resend is then a duplicate."""
    cache = RedisSessionCache(shared_conn, ttl=60)
    queue = RedisWorkQueue(shared_conn, name="chatcore:work")
    intents = RedisIntentJournal(shared_conn)
    ids = CountingIds()

    def service_with(store: RedisEventStore) -> ChatService:
        core = bootstrap(store=store, cache=cache, queue=queue, intents=intents, ids=ids)
        assert core.service.intake is not None
        return core.service

    healthy = service_with(RedisEventStore(shared_conn))
    doomed = service_with(LosesTheReply(shared_conn))
    opened = await healthy.open_session()
    sid, conv = opened.session_id, opened.conversation_id
    with pytest.raises(ProcessDied):
        await doomed.submit_message(sid, conversation_id=conv, client_message_id="cm1", text="hi")
    ref = (await healthy.load(sid)).client_messages["cm1"]
    assert await intents.stale(0) == []
    (delivery,) = await queue.claim("w", count=10, block=1)
    assert (delivery.item.session_id, delivery.item.message_id) == (sid, ref.message_id)
    again = await healthy.submit_message(
        sid, conversation_id=conv, client_message_id="cm1", text="hi"
    )
    assert again.duplicate and again.message_id == ref.message_id


async def test_a_burst_larger_than_the_cluster_pool_waits_for_connections(
    redis_cluster_url: str,
) -> None:
    """redis-py's Cluster client raises ``MaxConnectionsError`` past ``max_connections`` to one
    node instead of waiting (a clean-clone CI run saw 503s when many sessions were created at
    once). Calls beyond the pool take turns, and every one of a burst 50 times the pool
    succeeds, blocking reads included."""
    settings = dataclasses.replace(
        fast_settings(redis_cluster_url, name="chatcore-burst"), cluster=True, max_connections=2
    )
    conn = connect(settings)
    try:
        limits = RedisRateLimits(conn)
        store = RedisEventStore(conn)
        rate = Rate(limit=1000.0, period=60.0, burst=1000.0)
        sids = [session_id() for _ in range(25)]

        async def appends(sid: str) -> list[str]:
            await store.append(sid, opening(sid), expected_version=None)
            return [event_type(r.event) for r in await store.read(sid)]

        async def admits(n: int) -> float:
            return await limits.acquire(f"burst:{n % 7}", rate)

        waits = await bounded(asyncio.gather(*(admits(n) for n in range(75))))
        assert waits == [0.0] * 75
        logs = await bounded(asyncio.gather(*(appends(sid) for sid in sids)))
        assert logs == [["session_opened", "conversation_started"]] * len(sids)
    finally:
        await conn.aclose()


async def test_a_cluster_connection_closed_under_a_call_is_reported_as_unavailable(
    redis_cluster_url: str,
) -> None:
    """redis-py's Cluster client may close a connection under a call still running on it;
    the call then fails inside redis-py with ``AttributeError`` (its socket is gone). That
    is a failed Redis call like any other, reported as ``StoreUnavailable`` so the caller
    retries; an ``AttributeError`` of our own code is still a bug and goes through."""
    conn = connect(
        dataclasses.replace(fast_settings(redis_cluster_url, name="chatcore-closed"), cluster=True)
    )
    never_connected = redis.asyncio.connection.Connection()
    try:
        with pytest.raises(StoreUnavailable, match="append failed"):
            async with conn.guard("append"):
                await never_connected._send_packed_command([b"PING\r\n"])
        with pytest.raises(AttributeError):
            async with conn.guard("append"):
                _ = None.__len__  # type: ignore[attr-defined]  # our own bug
        # The connection still works afterwards.
        async with conn.guard("ping"):
            assert await conn.client.ping()
    finally:
        await conn.aclose()
