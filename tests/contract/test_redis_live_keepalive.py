"""The live subscription after a quiet spell: one task reads the pub/sub connection.

redis-py checks a connection's health before sending a command when the check is due; on a
pub/sub connection with no channel left, ``subscribe()`` would then read the PING's answer
itself while the subscription's reader task is already waiting on the same socket
("read() called while another coroutine is already waiting for incoming data"). An API
process whose sockets have all gone quiet for longer than the health-check interval met this
at its next connection. Here the subscription turns redis-py's check off on that connection
and its reader sends the keep-alive pings itself, so every read stays in one task.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from chatcore.ports import Appended
from chatcore_adapters.redis import RedisEventStore, RedisSettings, connect
from tests.support.factories import message, opening, session_id
from tests.support.redis_server import RedisServer, unique_prefix

pytestmark = pytest.mark.redis

HEALTH_CHECK = 1  # seconds: the shortest interval redis-py takes


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
async def test_following_after_a_quiet_spell_longer_than_the_health_check(
    cluster: bool, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    conn = connect(
        RedisSettings(
            url=url,
            cluster=cluster,
            prefix=unique_prefix(),
            health_check_interval=HEALTH_CHECK,
            # The reader's wait is longer than the check's interval, as in production (10 s
            # against 15 s between checks, a check due while a read is waiting).
            max_block=HEALTH_CHECK * 5,
        )
    )
    store = RedisEventStore(conn)
    pushed: asyncio.Queue[Appended] = asyncio.Queue()
    live = store.subscribe(pushed.put_nowait)
    try:
        first, second = session_id(), session_id()
        await store.append(first, opening(first), expected_version=None)
        opened = await store.append(second, opening(second), expected_version=None)
        # The last socket of a session goes: the connection is left with no channel, and the
        # reader waits on it.
        await live.follow(first)
        await live.unfollow(first)
        # The quiet spell: the health check falls due while the reader waits (this wait is the
        # scenario itself, not a synchronisation; the window is from 1 s to 5 s after the
        # reader's last answer).
        await asyncio.sleep(HEALTH_CHECK * 2.5)

        await live.follow(second)  # raised RuntimeError before the fix
        appended = await store.append(second, [message(1)], expected_version=opened[-1].position)

        push = await asyncio.wait_for(pushed.get(), timeout=5)
        assert push.session_id == second
        assert push.after == opened[-1].position
        assert [r.position for r in push.records] == [r.position for r in appended]
        # The subscription is still healthy: nothing was lost along the way.
        lost = asyncio.create_task(live.wait_lost())
        await asyncio.sleep(0)
        assert not lost.done()
        lost.cancel()
    finally:
        await live.close()
        await conn.aclose()


async def test_an_idle_subscription_is_kept_alive_and_a_frozen_server_noticed() -> None:
    """With redis-py's check off, the reader's own pings keep the connection tested: quiet
    spells pass without a loss, and a server that stops answering (SIGSTOP: the socket stays
    open, nothing comes back) is reported lost instead of hanging quietly."""
    with RedisServer() as server:
        conn = connect(
            RedisSettings(
                url=server.url,
                prefix=unique_prefix(),
                health_check_interval=HEALTH_CHECK,
                max_block=HEALTH_CHECK * 5,
                retries=0,
            )
        )
        store = RedisEventStore(conn)
        live = store.subscribe(lambda appended: None)
        sid = session_id()
        try:
            await store.append(sid, opening(sid), expected_version=None)
            await live.follow(sid)
            # Several intervals of silence: each ping is answered, nothing is lost.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(live.wait_lost(), timeout=HEALTH_CHECK * 4)

            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            try:
                why = await asyncio.wait_for(live.wait_lost(), timeout=HEALTH_CHECK * 10)
            finally:
                server.process.send_signal(signal.SIGCONT)
            assert "no answer to the live connection's ping" in why
        finally:
            await live.close()
            await conn.aclose()
