"""The consumer group does not grow with every worker process that ever ran, and tidying it
never drops pending work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from chatcore.ports import WorkItem
from chatcore_adapters.redis import RedisSettings, RedisWorkQueue, connect
from chatcore_adapters.redis.consumers import ConsumerJanitor
from tests.support.redis_server import unique_prefix

pytestmark = pytest.mark.redis


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[RedisWorkQueue]:
    conn = connect(RedisSettings(url=redis_url, prefix=unique_prefix(), max_block=2.0))
    try:
        yield RedisWorkQueue(conn, reclaim_after=30)
    finally:
        await conn.aclose()


def item(n: int) -> WorkItem:
    return WorkItem(
        session_id="s" * 20, conversation_id="c", message_id=f"m{n}", enqueued_at=datetime.now(UTC)
    )


async def consumers(queue: RedisWorkQueue) -> dict[str, int]:
    rows = await queue.conn.client.xinfo_consumers(queue.keys.stream, queue.group)
    return {row["name"].decode(): int(row["pending"]) for row in rows}


async def test_consumers_without_pending_work_are_forgotten_and_the_others_kept(
    queue: RedisWorkQueue,
) -> None:
    janitor = ConsumerJanitor(queue)
    assert await janitor.forget_idle(0) == 0  # no stream yet: nothing to do
    await queue.conn.client.xadd(queue.keys.stream, {"x": "1"})
    assert await janitor.forget_idle(0) == 0  # a stream without the group: nothing either
    await queue.conn.client.delete(queue.keys.stream)
    for n in range(3):
        await queue.enqueue(item(n))
    for name in ("finished", "busy", "other"):
        (got,) = await queue.claim(name, count=1, block=0.1)
        if name != "busy":
            await queue.ack(got)
    assert await consumers(queue) == {"finished": 0, "busy": 1, "other": 0}

    assert await janitor.forget("busy") is False
    assert await janitor.forget("finished") is True
    assert await consumers(queue) == {"busy": 1, "other": 0}

    assert await janitor.forget_idle(60) == 0  # nobody idle that long
    await asyncio.sleep(0.2)
    assert await janitor.forget_idle(0.1) == 1
    assert await consumers(queue) == {"busy": 1}
