"""Durable writes on a Redis Cluster with replicas (``wait_replicas``): what an adapter said was
written survives the failover of its master, and no subscriber is pushed an event a failover
could take back. Each test has a cluster of its own (3 masters, a replica each), since it kills
nodes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator

import pytest

from chatcore.errors import ConcurrencyConflict, StoreUnavailable
from chatcore_adapters.redis import RedisEventStore, RedisSettings, RedisWorkQueue, connect
from tests.contract.event_store_contract import Pushes
from tests.support.factories import EPOCH, delta, opening, session_id
from tests.support.redis_server import RedisClusterServers, unique_prefix

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers(3, replicas=1) as servers:
        yield servers


def durable(url: str, *, wait_timeout: float = 1.0) -> RedisSettings:
    return RedisSettings(
        url=url,
        cluster=True,
        prefix=unique_prefix(),
        max_block=1.0,
        read_margin=1.0,
        connect_timeout=0.5,
        operation_timeout=3.0,
        retries=1,
        backoff_base=0.05,
        backoff_cap=0.2,
        health_check_interval=1,
        wait_replicas=1,
        wait_timeout=wait_timeout,
    )


async def test_acknowledged_appends_and_work_survive_a_master_s_failover(
    cluster: RedisClusterServers,
) -> None:
    conn = connect(durable(cluster.url))
    store, queue = RedisEventStore(conn), RedisWorkQueue(conn, shards=3)
    heard = Pushes()
    live = store.subscribe(heard)
    sid = session_id()
    try:
        await live.follow(sid)
        acked = [r.position for r in await store.append(sid, opening(sid), expected_version=None)]
        version: str | None = acked[-1]
        queued = 0
        killed_at = served_again_at = 0.0
        dead = cluster.nodes[0]
        n = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n += 1
            if n == 40:
                dead = cluster.kill_master_of(conn.keys.events(sid))
                killed_at = time.monotonic()
            if killed_at and not dead.running and _promoted(cluster, conn.keys.events(sid)):
                # Brought back as a supervisor would, once its replica took over: it rejoins as
                # the replica of the promoted master. (With one replica per master, the promoted
                # master has none until then, and a durable write to its slots cannot be
                # acknowledged. Brought back before the promotion, without persistence, it would
                # come back empty and its replica would copy that: see docs/redis.md.)
                dead.start()
            try:
                recorded = await store.append(sid, [delta(n)], expected_version=version)
                from chatcore.ports import WorkItem

                await queue.enqueue(
                    WorkItem(
                        session_id=sid,
                        conversation_id="c1",
                        message_id=f"m{n}",
                        enqueued_at=EPOCH,
                    )
                )
                queued += 1
            except (StoreUnavailable, ConcurrencyConflict):
                # Not acknowledged: as a writer would, look where the log is and go on.
                await asyncio.sleep(0.05)
                with contextlib.suppress(StoreUnavailable):
                    version = await store.last_position(sid)
                continue
            acked += [r.position for r in recorded]
            version = recorded[-1].position
            if killed_at and not served_again_at:
                served_again_at = time.monotonic()
            if served_again_at and n >= 120:
                break
        assert killed_at and served_again_at, "the cluster never served again after the kill"
        cluster.wait_ready()

        log = [r.position for r in await store.read(sid)]
        assert set(acked) <= set(log), "an acknowledged append was lost in the failover"
        # Nothing pushed that the log does not hold (pushes go out only once replicated).
        await live.reconnect()
        pushed = [r.position for a in heard.heard for r in a.records]
        assert set(pushed) <= set(log)
        depths = await queue.depths()
        assert sum(d.waiting for d in depths) == queued, "a queued work item was lost"
        print(f"serving again {served_again_at - killed_at:.1f}s after the master was killed")  # noqa: T201
    finally:
        await live.close()
        await queue.aclose()
        await conn.aclose()


async def test_a_write_its_replica_cannot_take_fails_and_is_not_pushed(
    cluster: RedisClusterServers,
) -> None:
    conn = connect(durable(cluster.url, wait_timeout=0.5))
    store = RedisEventStore(conn)
    heard = Pushes()
    live = store.subscribe(heard)
    sid = session_id()
    try:
        await live.follow(sid)
        first = await store.append(sid, opening(sid), expected_version=None)
        await heard.until(len(first))
        master = cluster.master_of(conn.keys.events(sid))
        replica = next(
            node
            for node in cluster.nodes
            if node is not master
            and node.running
            and node not in cluster.masters()
            and _replicates(node, master)
        )
        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable):
                await store.append(sid, [delta(1)], expected_version=first[-1].position)
        finally:
            replica.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.3)
        assert heard.count() == len(first), "a write that was not replicated was pushed"
        # The write stands on the master (WAIT cannot undo it): the log shows it, and the
        # next push names it, so a subscriber reads it from the log.
        log = await store.read(sid)
        assert len(log) == len(first) + 1
        more = await store.append(sid, [delta(2)], expected_version=log[-1].position)
        (push,) = await heard.until(len(first) + 1)
        assert push.after == log[-1].position and list(push.records) == more
    finally:
        await live.close()
        await conn.aclose()


def _promoted(cluster: RedisClusterServers, key: str) -> bool:
    """Whether a running master serves ``key``'s slot again (its replica was promoted)."""
    try:
        cluster.master_of(key)
    except RuntimeError:
        return False
    return True


def _replicates(node: object, master: object) -> bool:
    from tests.support.redis_server import RedisServer

    assert isinstance(node, RedisServer) and isinstance(master, RedisServer)
    with node.client() as client:
        info = client.info("replication")
    return int(info.get("master_port", 0)) == master.port
