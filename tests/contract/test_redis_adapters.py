"""The contract suites, run against the Redis adapters on one server and on a 3-node Cluster.

Every adapter gets its own connection and key prefix, so tests never see each other's keys
(and never touch anything but the private servers of ``tests/support/redis_fixtures.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from chatcore.errors import ConcurrencyConflict, CorruptRecord, StoreUnavailable
from chatcore.gcra import Rate
from chatcore.ports import (
    EventStore,
    Heartbeats,
    IntentJournal,
    Leases,
    RateLimits,
    SessionCache,
    WorkItem,
)
from chatcore_adapters.bootstrap import intake_for
from chatcore_adapters.codec import encode_event
from chatcore_adapters.near_cache import NearCache
from chatcore_adapters.redis import (
    KeySpace,
    RedisConnection,
    RedisEventStore,
    RedisHeartbeats,
    RedisIntake,
    RedisIntentJournal,
    RedisLeases,
    RedisRateLimits,
    RedisSessionCache,
    RedisSettings,
    RedisWorkQueue,
    connect,
)
from chatcore_adapters.redis.queue import encode_item
from chatcore_adapters.system import SystemClock
from tests.contract.event_store_contract import EventStoreContract, Pushes
from tests.contract.heartbeats_contract import HeartbeatsContract
from tests.contract.intake_contract import IntakeContract, Parts, item
from tests.contract.intent_journal_contract import IntentJournalContract
from tests.contract.leases_contract import LeasesContract
from tests.contract.rate_limits_contract import RateLimitsContract
from tests.contract.session_cache_contract import SessionCacheContract
from tests.contract.work_queue_contract import DeadLetteringQueue, WorkQueueContract
from tests.support.factories import EPOCH, delta, message, opening, session_id
from tests.support.redis_server import free_port, unique_prefix

pytestmark = pytest.mark.redis


class _OnRedis:
    """Where the adapters of a test class connect to: one server."""

    url: str
    cluster = False
    wait_replicas = 0

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str) -> None:
        self.url = redis_url

    def connect(self) -> RedisConnection:
        return connect(
            RedisSettings(
                url=self.url,
                cluster=self.cluster,
                prefix=unique_prefix(),
                client_name="chatcore-test",
                max_block=5.0,
                operation_timeout=5.0,
                wait_replicas=self.wait_replicas,
            )
        )


class _OnCluster(_OnRedis):
    """The same, on the three-master cluster."""

    cluster = True

    @pytest.fixture(autouse=True)
    def _server(self, redis_cluster_url: str) -> None:
        self.url = redis_cluster_url


class _OnReplicatedCluster(_OnRedis):
    """On a three-master cluster with a replica each, every write waiting for its replica."""

    cluster = True
    wait_replicas = 1

    @pytest.fixture(autouse=True)
    def _server(self, redis_replicated_cluster_url: str) -> None:
        self.url = redis_replicated_cluster_url


class _Store(_OnRedis, EventStoreContract):
    async def make_store(self, *, retention: float | None = None) -> EventStore:
        return RedisEventStore(self.connect(), retention=retention)

    async def stored_bytes(self, store: EventStore, session_id: str) -> bytes:
        # DUMP: the key's value serialised as an RDB snapshot persists it (uncompressed here,
        # so that text inside it can be looked for).
        assert isinstance(store, RedisEventStore)
        client = store.conn.client
        every: dict[str, Any] = (
            {"target_nodes": RedisCluster.ALL_NODES} if store.conn.cluster else {}
        )
        await client.config_set("rdbcompression", "no", **every)
        try:
            dumped = await client.dump(store.conn.keys.events(session_id))
        finally:
            await client.config_set("rdbcompression", "yes", **every)
        scratch = await store.conn.client.exists(store.conn.keys.rewrite(session_id))
        assert scratch == 0  # the rewrite's scratch key never outlives its script
        return bytes(dumped or b"")

    async def close_store(self, store: EventStore) -> None:
        assert isinstance(store, RedisEventStore)
        await store.conn.aclose()

    async def test_a_long_session_is_read_in_pages(self) -> None:
        """A log longer than a page comes back whole, and ``limit`` across pages holds."""
        store = RedisEventStore(self.connect(), page_size=7)
        try:
            sid = session_id()
            recorded = await store.append(sid, [delta(n) for n in range(50)], expected_version=None)
            assert await store.read(sid) == recorded
            assert await store.read(sid, after=recorded[3].position, limit=20) == recorded[4:24]
            assert await store.read(sid, limit=14) == recorded[:14]
        finally:
            await store.conn.aclose()


class _Cache(_OnRedis, SessionCacheContract):
    async def make_cache(self, *, ttl: float) -> SessionCache:
        return RedisSessionCache(self.connect(), ttl=ttl)

    async def close_cache(self, cache: SessionCache) -> None:
        assert isinstance(cache, RedisSessionCache)
        await cache.conn.aclose()

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        assert isinstance(cache, RedisSessionCache)
        await cache.conn.client.set(cache.conn.keys.view(session_id), raw, px=60_000)


class _NearCache(_Cache):
    """A process's own views in front of the Redis cache (what a worker process uses)."""

    async def make_cache(self, *, ttl: float) -> SessionCache:
        return NearCache(RedisSessionCache(self.connect(), ttl=ttl), SystemClock(), ttl=ttl)

    async def close_cache(self, cache: SessionCache) -> None:
        assert isinstance(cache, NearCache)
        await super().close_cache(cache.shared)

    async def plant_raw(self, cache: SessionCache, session_id: str, raw: bytes) -> None:
        assert isinstance(cache, NearCache)
        await super().plant_raw(cache.shared, session_id, raw)


class _Queue(_OnRedis, WorkQueueContract):
    async def make_queue(self, *, reclaim_after: float) -> DeadLetteringQueue:
        return RedisWorkQueue(self.connect(), reclaim_after=reclaim_after)

    async def close_queue(self, queue: DeadLetteringQueue) -> None:
        assert isinstance(queue, RedisWorkQueue)
        await queue.conn.aclose()


class _ShardedQueue(_Queue):
    async def make_queue(self, *, reclaim_after: float) -> DeadLetteringQueue:
        return RedisWorkQueue(self.connect(), reclaim_after=reclaim_after, shards=3)


class _Intents(_OnRedis, IntentJournalContract):
    async def make_journal(self) -> IntentJournal:
        return RedisIntentJournal(self.connect())

    async def close_journal(self, journal: IntentJournal) -> None:
        assert isinstance(journal, RedisIntentJournal)
        await journal.conn.aclose()


class _Intake(_OnRedis, IntakeContract):
    shards = 1

    async def make_intake(self) -> Parts:
        conn = self.connect()
        store, queue = RedisEventStore(conn), RedisWorkQueue(conn, shards=self.shards)
        return Parts(RedisIntake(store, queue), store, queue)

    async def close_intake(self, parts: Parts) -> None:
        assert isinstance(parts.store, RedisEventStore)
        await parts.store.conn.aclose()

    async def test_a_retried_script_queues_its_item_once(self, parts: Parts) -> None:
        """redis-py sends a script again when the connection drops before its reply: the
        second run finds the first's token and neither appends nor queues again."""
        store, queue = parts.store, parts.queue
        assert isinstance(store, RedisEventStore) and isinstance(queue, RedisWorkQueue)
        sid = session_id()
        keys = [store.conn.keys.events(sid), queue.shard_of(sid).keys.stream]
        args: list[bytes | str] = ["", "a-retried-token", store.conn.keys.live(sid), "0"]
        args += [*map(encode_event, opening(sid)), encode_item(item(sid))]
        first = await store._batcher.script(store._append_script, keys, list(args))
        again = await store._batcher.script(store._append_script, keys, list(args))
        assert first[0] == 1 and again == first
        assert len(await store.read(sid)) == 2
        assert await self.queued(parts) == [item(sid)]


class _Leases(_OnRedis, LeasesContract):
    async def make_leases(self) -> Leases:
        return RedisLeases(self.connect())

    async def close_leases(self, leases: Leases) -> None:
        assert isinstance(leases, RedisLeases)
        await leases.conn.aclose()


class _RateLimits(_OnRedis, RateLimitsContract):
    async def make_limits(self) -> RateLimits:
        return RedisRateLimits(self.connect())

    async def close_limits(self, limits: RateLimits) -> None:
        assert isinstance(limits, RedisRateLimits)
        await limits.conn.aclose()

    async def test_a_key_expires_once_its_allowance_is_full_again(self) -> None:
        limits = RedisRateLimits(self.connect())
        try:
            await limits.acquire("expiring", Rate(limit=5, period=1.0, burst=2))
            key = limits.conn.keys.rate("expiring")
            ttl = await limits.conn.client.pttl(key)
            assert 0 < ttl <= 201, "the state lives one interval (0.2 s), no longer"
        finally:
            await limits.conn.aclose()


class _Heartbeats(_OnRedis, HeartbeatsContract):
    async def make_heartbeats(self) -> Heartbeats:
        return RedisHeartbeats(self.connect())

    async def close_heartbeats(self, heartbeats: Heartbeats) -> None:
        assert isinstance(heartbeats, RedisHeartbeats)
        await heartbeats.conn.aclose()

    async def test_the_keys_expire_with_the_last_record(self) -> None:
        from tests.contract.heartbeats_contract import status

        heartbeats = RedisHeartbeats(self.connect())
        try:
            await heartbeats.beat(status("w1"), ttl=0.2)
            client = heartbeats.conn.client
            assert 0 < await client.pttl(heartbeats.records) <= 200
            assert 0 < await client.pttl(heartbeats.expiry) <= 200
            await asyncio.sleep(0.4)
            assert await client.exists(heartbeats.records, heartbeats.expiry) == 0
        finally:
            await heartbeats.conn.aclose()


class TestRedisEventStore(_Store):
    pass


class TestRedisNearCache(_NearCache):
    pass


class TestRedisSessionCache(_Cache):
    pass


class TestRedisWorkQueue(_Queue):
    pass


class TestRedisShardedWorkQueue(_ShardedQueue):
    pass


class TestRedisIntake(_Intake):
    pass


class TestRedisShardedIntake(_Intake):
    shards = 3


class TestRedisIntentJournal(_Intents):
    pass


class TestRedisShardedIntentJournal(_Intents):
    async def make_journal(self) -> IntentJournal:
        return RedisIntentJournal(self.connect(), shards=3)


class TestRedisLeases(_Leases):
    pass


class TestRedisRateLimits(_RateLimits):
    pass


class TestRedisHeartbeats(_Heartbeats):
    pass


@pytest.mark.cluster
class TestClusterEventStore(_OnCluster, _Store):
    pass


@pytest.mark.cluster
class TestClusterSessionCache(_OnCluster, _Cache):
    pass


@pytest.mark.cluster
class TestClusterWorkQueue(_OnCluster, _Queue):
    pass


@pytest.mark.cluster
class TestClusterShardedWorkQueue(_OnCluster, _ShardedQueue):
    pass


@pytest.mark.cluster
class TestClusterIntentJournal(_OnCluster, _Intents):
    pass


@pytest.mark.cluster
class TestDurableClusterEventStore(_OnReplicatedCluster, _Store):
    pass


@pytest.mark.cluster
class TestDurableClusterWorkQueue(_OnReplicatedCluster, _ShardedQueue):
    pass


@pytest.mark.cluster
class TestClusterShardedIntentJournal(_OnCluster, _Intents):
    async def make_journal(self) -> IntentJournal:
        return RedisIntentJournal(self.connect(), shards=3)


@pytest.mark.cluster
class TestClusterLeases(_OnCluster, _Leases):
    pass


@pytest.mark.cluster
@pytest.mark.cluster
class TestClusterRateLimits(_OnCluster, _RateLimits):
    atomic_admit = False


class TestClusterHeartbeats(_OnCluster, _Heartbeats):
    pass


# --- Redis specifics, beyond the contracts ------------------------------------------------------


@pytest.fixture
async def conn(redis_url: str) -> AsyncIterator[RedisConnection]:
    conn = _OnRedis.connect(_with_url(redis_url))
    try:
        yield conn
    finally:
        await conn.aclose()


def _with_url(url: str) -> _OnRedis:
    holder = _OnRedis()
    holder.url = url
    return holder


def _with_cluster_url(url: str) -> _OnRedis:
    holder = _OnCluster()
    holder.url = url
    return holder


def test_the_key_layout() -> None:
    sid = session_id()
    keys = KeySpace()
    assert keys.events(sid) == f"chat:{{{sid}}}"
    assert keys.view(sid) == f"session:{{{sid}}}"
    assert keys.lease(f"reply:{sid}:msg_1") == f"lease:{{{sid}}}:reply:msg_1"
    assert keys.lease("k1") == "lease:{k1}"
    queue = keys.queue("chatcore:work")
    assert (queue.stream, queue.dead, queue.intents) == (
        "{chatcore:work}",
        "{chatcore:work}:dead",
        "{chatcore:work}:intents",
    )
    assert KeySpace("t1:").events(sid) == f"t1:chat:{{{sid}}}"
    # A session's keys share one cluster slot; so do a queue's.
    slots = {key_slot(k.encode()) for k in (keys.events(sid), keys.view(sid))}
    slots.add(key_slot(keys.lease(f"reply:{sid}:m1").encode()))
    assert len(slots) == 1
    assert len({key_slot(k.encode()) for k in (queue.stream, queue.dead, queue.intents)}) == 1


@pytest.mark.parametrize("prefix", ["{x}", "a b", "*", "x" * 65])
def test_an_unsafe_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisSettings(prefix=prefix)


def test_settings_keep_the_socket_timeout_above_every_block() -> None:
    settings = RedisSettings(max_block=7.0, read_margin=3.0)
    assert settings.socket_timeout == 10.0 > settings.max_block
    with pytest.raises(ValueError, match="scheme"):
        RedisSettings(url="http://localhost:6379")
    with pytest.raises(ValueError, match="max_block"):
        RedisSettings(max_block=0)


async def test_block_times_are_clamped_and_never_zero(conn: RedisConnection) -> None:
    assert conn.block_ms(0) is None
    assert conn.block_ms(-1) is None
    assert conn.block_ms(0.0001) == 1
    assert conn.block_ms(2.5) == 2500
    assert conn.block_ms(3600) == int(conn.settings.max_block * 1000)


async def test_ping_tells_whether_redis_answers(conn: RedisConnection) -> None:
    assert await conn.ping() is True
    closed = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", retries=0))
    try:
        assert await closed.ping(timeout=2) is False
    finally:
        await closed.aclose()


async def test_a_retried_append_is_applied_once(conn: RedisConnection) -> None:
    """The reply of an append is lost and redis-py sends the same script again: the second
    run answers with the ids of the first instead of a conflict or a second copy."""
    store = RedisEventStore(conn)
    sid = session_id()
    base = await store.append(sid, opening(sid), expected_version=None)
    key = conn.keys.events(sid)
    args: list[bytes | str] = [base[-1].position, "token-1", conn.keys.live(sid), "0"]
    args += [encode_event(message(1)), encode_event(delta(1))]
    script = store._append_script
    first = await script(keys=[key], args=args)
    again = await script(keys=[key], args=args)
    assert first == again and first[0] == 1
    assert [r.event for r in await store.read(sid)] == [*opening(sid), message(1), delta(1)]
    # Another token at the same version is a genuine conflict.
    with pytest.raises(ConcurrencyConflict):
        await store.append(sid, [message(2)], expected_version=base[-1].position)


async def test_unreadable_log_entries_raise_corrupt_record(conn: RedisConnection) -> None:
    store = RedisEventStore(conn)
    for fields in ({"x": b"1"}, {"e": b"not json"}, {"e": b'{"type": "no_such_event"}'}):
        sid = session_id()
        await conn.client.xadd(conn.keys.events(sid), fields)  # type: ignore[arg-type]
        with pytest.raises(CorruptRecord):
            await store.read(sid)


async def test_a_vanished_consumer_group_comes_back_with_the_work_left(
    conn: RedisConnection,
) -> None:
    queue = RedisWorkQueue(conn, reclaim_after=30)
    sid = session_id()
    items = [_item(n, sid) for n in range(3)]
    for it in items:
        await queue.enqueue(it)
    (first,) = await queue.claim("a", count=1, block=1)
    await queue.ack(first)
    await conn.client.xgroup_destroy(queue.keys.stream, queue.group)
    got = await queue.claim("b", count=10, block=1)
    assert [d.item for d in got] == items[1:]
    assert await queue.touch(first) is False
    # Also when the whole stream is gone (a restart without persistence).
    await conn.client.delete(queue.keys.stream)
    assert await queue.recover("b") == []
    assert await queue.touch(got[0]) is False
    await queue.enqueue(items[0])
    assert [d.item for d in await queue.claim("c", count=10, block=1)] == [items[0]]


async def test_an_unreadable_work_item_becomes_a_dead_letter(conn: RedisConnection) -> None:
    queue = RedisWorkQueue(conn)
    sid = session_id()
    await queue.ensure_group()
    await conn.client.xadd(queue.keys.stream, {"i": b"{not an item"})
    await queue.enqueue(_item(1, sid))
    got = await queue.claim("a", count=10, block=1)
    assert [d.item for d in got] == [_item(1, sid)]
    assert await conn.client.xlen(queue.keys.dead) == 1
    assert await queue.dead_letters() == []  # listed only when it reads back as an item
    assert await queue.claim("b", count=10, block=0.05) == []


async def test_a_claim_that_finds_work_is_one_round_trip(
    conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy worker's claim takes over what dead consumers left and reads new work in one
    script: one command, however long the claim may block."""
    queue = RedisWorkQueue(conn, reclaim_after=0.05)
    sid = session_id()
    await queue.enqueue(_item(1, sid))
    assert len(await queue.claim("dead", count=1, block=1)) == 1
    await asyncio.sleep(0.1)  # the dead consumer's delivery is now idle past reclaim_after
    await queue.enqueue(_item(2, sid))
    await queue.enqueue(_item(3, sid))
    sent: list[object] = []
    real = conn.client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return await real(*args, **options)

    monkeypatch.setattr(conn.client, "execute_command", counted)
    got = await queue.claim("alive", count=10, block=5)
    assert [(d.item.message_id, d.attempt) for d in got] == [("m1", 2), ("m2", 1), ("m3", 1)]
    assert sent == ["EVALSHA"]


async def test_attempts_count_every_delivery(conn: RedisConnection) -> None:
    queue = RedisWorkQueue(conn, reclaim_after=0.05)
    sid = session_id()
    await queue.enqueue(_item(1, sid))
    attempts = [d.attempt for d in await queue.claim("a", count=1, block=1)]
    attempts += [d.attempt for d in await queue.recover("a")]
    await asyncio.sleep(0.1)
    attempts += [d.attempt for d in await queue.claim("b", count=1, block=1)]
    attempts += [d.attempt for d in await queue.recover("b")]
    assert attempts == [1, 2, 3, 4]


def _item(n: int, sid: str) -> WorkItem:
    return WorkItem(session_id=sid, conversation_id="c1", message_id=f"m{n}", enqueued_at=EPOCH)


@pytest.fixture(params=[False, pytest.param(True, marks=pytest.mark.cluster)])
async def server_or_cluster(request: pytest.FixtureRequest) -> AsyncIterator[RedisConnection]:
    """A connection to the test's private Redis server, then to its private Cluster."""
    if request.param:
        conn = _OnRedis.connect(_with_cluster_url(request.getfixturevalue("redis_cluster_url")))
    else:
        conn = _OnRedis.connect(_with_url(request.getfixturevalue("redis_url")))
    try:
        yield conn
    finally:
        await conn.aclose()


async def test_appends_due_together_share_a_pipeline_and_keep_their_semantics(
    server_or_cluster: RedisConnection,
) -> None:
    """Appends that queue up behind others go out as one pipeline (on a Cluster: one per
    node, in parallel); each is still its own optimistic append (a second append at the same
    version conflicts), and a Redis that lost its scripts (SCRIPT FLUSH, as after a restart) is
    handled inside a batch too."""
    await _appends_due_together(server_or_cluster)


async def _appends_due_together(conn: RedisConnection) -> None:
    store = RedisEventStore(conn)
    batcher = store._batcher
    assert batcher is not None
    sids = [session_id() for _ in range(20)]
    opened = await asyncio.gather(
        *(store.append(sid, opening(sid), expected_version=None) for sid in sids)
    )
    assert batcher.batches >= 1 and batcher.batched_calls >= 10  # all but the first few
    for sid, recorded in zip(sids, opened, strict=True):
        assert await store.read(sid) == recorded

    version = opened[0][-1].position
    first, second = await asyncio.gather(
        store.append(sids[0], [message(1)], expected_version=version),
        store.append(sids[0], [message(2)], expected_version=version),
        return_exceptions=True,
    )
    assert isinstance(second, ConcurrencyConflict) and not isinstance(first, BaseException)
    assert [r.event for r in await store.read(sids[0], after=version)] == [message(1)]

    await conn.client.script_flush()
    more = await asyncio.gather(
        *(
            store.append(sid, [delta(1)], expected_version=rec[-1].position)
            for sid, rec in zip(sids[1:], opened[1:], strict=True)
        )
    )
    for sid, rec, extra in zip(sids[1:], opened[1:], more, strict=True):
        assert await store.read(sid) == [*rec, *extra]


async def test_calls_of_different_adapters_made_together_share_a_round_trip(
    server_or_cluster: RedisConnection,
) -> None:
    """The calls of a worker's replies made in the same step (a lease, a log read, an ack,
    a rate limit) go out as one pipeline through the connection's batcher; each caller gets
    its own reply, a call that fails fails alone, and a Redis that lost its scripts is
    handled inside the batch."""
    await _calls_made_together(server_or_cluster)


async def test_a_call_given_up_before_it_left_is_not_sent(conn: RedisConnection) -> None:
    """A call waits for the next step of the event loop to leave with the others: one whose
    caller gave up meanwhile (cancelled, or past its deadline) is dropped, not sent."""
    leases = RedisLeases(conn)
    gone = asyncio.create_task(leases.acquire("reply:s:m", "gone", 30))
    await asyncio.sleep(0)  # the call waits for its batch
    gone.cancel()
    assert (await asyncio.gather(gone, return_exceptions=True))[0].__class__ is (
        asyncio.CancelledError
    )
    for _ in range(100):  # until nothing is on its way any more
        await asyncio.sleep(0.01)
        if not conn.batch._running:
            break
    assert await conn.client.get(conn.keys.lease("reply:s:m")) is None  # never taken


async def _calls_made_together(conn: RedisConnection) -> None:
    store, leases = RedisEventStore(conn), RedisLeases(conn)
    limits, queue = RedisRateLimits(conn), RedisWorkQueue(conn)
    await queue.ensure_group()
    sids = [session_id() for _ in range(6)]
    opened = [await store.append(sid, opening(sid), expected_version=None) for sid in sids]
    for n, sid in enumerate(sids):
        await queue.enqueue(_item(n, sid))
    deliveries = await queue.claim("w", count=len(sids), block=1)
    assert len(deliveries) == len(sids)
    await leases.acquire("reply:taken", "someone", 30)
    rate = Rate(limit=2, period=60.0, burst=2)
    # A key of the wrong type: the one read of it fails, the others in its batch do not.
    wrong = session_id()
    await conn.client.set(conn.keys.events(wrong), b"not a stream")
    await conn.client.script_flush()
    batcher = conn.batch
    batches, calls = batcher.batches, batcher.batched_calls

    results = await asyncio.gather(
        *(store.read(sid) for sid in sids),
        *(leases.acquire(f"reply:{sid}:m", "w1", 30) for sid in sids),
        leases.acquire("reply:taken", "w1", 30),
        *(queue.ack(d) for d in deliveries),
        *(limits.acquire("k", rate) for _ in range(3)),
        store.read(wrong),
        return_exceptions=True,
    )
    n = len(sids)
    reads, taken, lost = results[:n], results[n : 2 * n], results[2 * n]
    acks, waits, failed = results[2 * n + 1 : 3 * n + 1], results[3 * n + 1 : -1], results[-1]
    assert reads == opened
    assert taken == [None] * n and lost == "someone"
    assert acks == [None] * n
    assert waits[:2] == [0.0, 0.0] and isinstance(waits[2], float) and waits[2] > 0
    assert isinstance(failed, StoreUnavailable)
    if not conn.cluster:  # (a Cluster may split a batch's calls by node)
        assert batcher.batches == batches + 1
    assert batcher.batched_calls - calls == len(results)
    assert await queue.claim("w", count=10, block=0.05) == []
    assert await queue.recover("w") == []


@pytest.mark.cluster
async def test_cluster_pushes_are_sharded_to_the_owner_of_the_session_s_slot(
    redis_cluster_url: str,
) -> None:
    """On a Cluster, an append's push is an SPUBLISH (it stays on the shard owning the
    session's slot; a PUBLISH would be broadcast to every node) and the subscriber holds one
    shard subscription per node it needs, on that node."""
    conn = _OnRedis.connect(_with_cluster_url(redis_cluster_url))
    store = RedisEventStore(conn)
    heard = Pushes()
    sub = store.subscribe(heard)
    try:
        sids = [session_id() for _ in range(12)]  # spread over the three masters' slots
        for sid in sids:
            await sub.follow(sid)
        for sid in sids:
            await store.append(sid, opening(sid), expected_version=None)
        await heard.until(2 * len(sids))
        client = conn.client
        assert isinstance(client, RedisCluster)
        owners = {client.get_node_from_key(conn.keys.live(sid)).name for sid in sids}  # type: ignore[union-attr]
        assert len(owners) > 1
        for node in client.get_primaries():
            shard_channels: Any = await client.execute_command(
                "PUBSUB", "SHARDCHANNELS", target_nodes=node
            )
            classic: Any = await client.execute_command("PUBSUB", "CHANNELS", target_nodes=node)
            owned = {
                conn.keys.live(sid).encode()
                for sid in sids
                if client.get_node_from_key(conn.keys.live(sid)).name == node.name  # type: ignore[union-attr]
            }
            assert set(shard_channels) == owned
            assert classic == []
    finally:
        await sub.close()
        await conn.aclose()


# --- a sharded work queue -------------------------------------------------------------------------


def test_queue_shards_split_the_slot_space_evenly() -> None:
    keys = KeySpace("p:").queue_shards("chatcore:work", 3)
    slots = [key_slot(k.stream.encode()) for k in keys]
    assert [s * 3 // 16384 for s in slots] == [0, 1, 2]
    for k in keys:  # a shard's keys share its slot
        assert (
            key_slot(k.dead.encode()) == key_slot(k.intents.encode()) == key_slot(k.stream.encode())
        )
    assert KeySpace().queue_shards("chatcore:work", 1)[0].stream == "{chatcore:work}"


async def test_a_session_s_work_always_goes_to_one_shard_in_order(conn: RedisConnection) -> None:
    queue = RedisWorkQueue(conn, shards=4)
    sids = [session_id() for _ in range(12)]
    for n in range(3):
        for sid in sids:
            await queue.enqueue(_item(n, sid))
    for sid in sids:
        shard = queue.shard_of(sid)
        entries: Any = await conn.client.xrange(shard.keys.stream)
        mine = [WorkItem.model_validate_json(f[b"i"]) for _, f in entries]
        assert [i.message_id for i in mine if i.session_id == sid] == ["m0", "m1", "m2"]
    used = {queue.shard_of(sid).keys.stream for sid in sids}
    assert len(used) > 1  # sessions spread over the shards


async def test_claims_take_from_every_shard_and_a_wait_wakes_for_any(
    conn: RedisConnection,
) -> None:
    queue = RedisWorkQueue(conn, shards=3, reclaim_after=30)
    by_shard: dict[int, str] = {}
    while len(by_shard) < 3:  # one session per shard
        sid = session_id()
        by_shard.setdefault(queue.streams.index(queue.shard_of(sid)), sid)
    for sid in by_shard.values():
        for n in range(4):
            await queue.enqueue(_item(n, sid))
    # Small claims rotate over the shards: none waits for another to drain.
    first = [await queue.claim("w", count=1, block=0) for _ in range(3)]
    assert {d[0].item.session_id for d in first} == set(by_shard.values())
    rest = await queue.claim("w", count=100, block=0)
    assert len(rest) == 9

    # Nothing waits anywhere: the claim blocks on all shards and wakes for the first.
    waiting = asyncio.create_task(queue.claim("w", count=5, block=5))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await queue.enqueue(_item(9, by_shard[2]))
    (got,) = await asyncio.wait_for(waiting, timeout=5)
    assert got.item == _item(9, by_shard[2])
    # The other shards' reads are still waiting, and what they bring goes to the next claim.
    await queue.enqueue(_item(10, by_shard[0]))
    later = await queue.claim("w", count=5, block=5)
    assert [d.item for d in later] == [_item(10, by_shard[0])]
    for delivery in [*(d for batch in first for d in batch), *rest, got, *later]:
        await queue.ack(delivery)
    await queue.aclose()


async def test_every_shard_reports_its_depth(conn: RedisConnection) -> None:
    queue = RedisWorkQueue(conn, shards=3)
    await queue.ensure_group()
    sid = session_id()
    for n in range(3):
        await queue.enqueue(_item(n, sid))
    (claimed,) = await queue.claim("w", count=1, block=1)
    depths = await queue.depths()
    assert [d.stream for d in depths] == [s.keys.stream for s in queue.streams]
    mine = queue.streams.index(queue.shard_of(sid))
    assert [(d.waiting, d.pending) for d in depths] == [
        (2, 1) if n == mine else (0, 0) for n in range(3)
    ]
    await queue.ack(claimed)
    assert (await queue.depths())[mine].pending == 0


@pytest.mark.cluster
async def test_a_cluster_subscription_re_established_follows_sessions_of_many_slots(
    redis_cluster_url: str,
) -> None:
    """A reconnect subscribes again to every followed session, however many slots they
    span on one node (an SSUBSCRIBE's channels must share a slot)."""
    conn = _OnRedis.connect(_with_cluster_url(redis_cluster_url))
    store = RedisEventStore(conn)
    heard = Pushes()
    sub = store.subscribe(heard)
    try:
        sids = [session_id() for _ in range(20)]
        for sid in sids:
            await sub.follow(sid)
        await sub.reconnect()
        for sid in sids:
            await store.append(sid, opening(sid), expected_version=None)
        got = await heard.until(2 * len(sids))
        assert sorted({a.session_id for a in got}) == sorted(sids)
    finally:
        await sub.close()
        await conn.aclose()


@pytest.mark.cluster
async def test_a_cluster_has_no_intake(redis_cluster_url: str) -> None:
    """The log and the queue are in different slots of a Cluster: no script reaches both."""
    conn = connect(
        RedisSettings(url=redis_cluster_url, cluster=True, prefix=unique_prefix(), max_block=5.0)
    )
    try:
        store, queue = RedisEventStore(conn), RedisWorkQueue(conn)
        assert intake_for(store, queue) is None
        with pytest.raises(ValueError, match="Cluster"):
            RedisIntake(store, queue)
    finally:
        await conn.aclose()
