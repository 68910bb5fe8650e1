"""``/readyz`` of an API process with Redis reads the workers' heartbeats from Redis (the same
records as ``chatcore worker --check``) and counts only workers beating on time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chatcore.ports import WorkerStatus
from chatcore_adapters.redis import RedisHeartbeats, RedisSettings, connect
from chatcore_api.app import create_app
from chatcore_api.settings import load_settings
from tests.support.redis_server import unique_prefix

pytestmark = pytest.mark.redis


@pytest.fixture
async def beats(redis_url: str) -> AsyncIterator[tuple[str, RedisHeartbeats]]:
    prefix = unique_prefix()
    conn = connect(RedisSettings(url=redis_url, prefix=prefix))
    try:
        yield prefix, RedisHeartbeats(conn)
    finally:
        await conn.aclose()


def beat(worker_id: str, age: float) -> WorkerStatus:
    now = datetime.now(UTC)
    return WorkerStatus(
        worker_id=worker_id,
        started_at=now - timedelta(minutes=1),
        beat_at=now - timedelta(seconds=age),
    )


async def test_readyz_counts_the_worker_processes_beating_on_time(
    redis_url: str, beats: tuple[str, RedisHeartbeats]
) -> None:
    prefix, heartbeats = beats
    settings = load_settings(
        environ={
            "CHATCORE_REDIS_URL": redis_url,
            "CHATCORE_SECRET_KEY": "k" * 40,
            "CHATCORE_REDIS__PREFIX": prefix,
            "CHATCORE_WORKER__ENABLED": "false",
            "CHATCORE_WORKER__HEARTBEAT_INTERVAL": "1",
        }
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as client,
    ):
        assert isinstance(app.state.container.core().heartbeats, RedisHeartbeats)

        nobody = await client.get("/readyz")
        assert (nobody.status_code, nobody.json()["workers"]) == (503, 0)

        await heartbeats.beat(beat("late", age=5), ttl=30)  # frozen: missed its beats
        stale = await client.get("/readyz")
        assert (stale.status_code, stale.json()["workers"]) == (503, 0)

        await heartbeats.beat(beat("fresh", age=0.2), ttl=30)
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "storage": True,
            "workers": 1,
            "in_process_worker": False,
        }
