"""Fixtures of the worker-process tests: a private redis-server per test (append-only, fsync
always, so it can be restarted without losing anything acknowledged), the processes a test
starts (all killed at the end, their logs printed when the test fails), and the test's own
ChatService on that server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.redis_chat import RedisChat
from tests.support.redis_server import RedisServer, unique_prefix
from tests.support.worker_processes import ProcessPool

# Short timeouts so that every scenario plays out in seconds. The worker's own checks hold:
# keepalive well under the reclaim timeout and the lease ttl, heartbeat ttl over the interval.
RECLAIM_AFTER = 1.5
LEASE_TTL = 2.5
HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TTL = 2.0
CLAIM_BLOCK = 0.5
# With the demo model at this pace a reply takes about 3.5 s (176 words).
DEMO_DELAY = 0.02


def worker_env(url: str, prefix: str) -> dict[str, str]:
    return {
        "CHATCORE_REDIS_URL": url,
        "CHATCORE_REDIS__PREFIX": prefix,
        "CHATCORE_REDIS__RECLAIM_AFTER": str(RECLAIM_AFTER),
        "CHATCORE_WORKER__CLAIM_BLOCK": str(CLAIM_BLOCK),
        "CHATCORE_WORKER__LEASE_TTL": str(LEASE_TTL),
        "CHATCORE_WORKER__KEEPALIVE_INTERVAL": "0.4",
        "CHATCORE_WORKER__HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "CHATCORE_WORKER__HEARTBEAT_TTL": str(HEARTBEAT_TTL),
        "CHATCORE_WORKER__BACKOFF_MAX": "1",
        "CHATCORE_WORKER__SHUTDOWN_GRACE": "8",
        "CHATCORE_LLM__DEMO_DELAY": str(DEMO_DELAY),
        "CHATCORE_LOG_LEVEL": "info",
        "CHATCORE_LOG_FORMAT": "json",
    }


@dataclass
class Deployment:
    server: RedisServer
    prefix: str
    pool: ProcessPool

    @property
    def env(self) -> dict[str, str]:
        return dict(self.pool.env)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
def deployment(
    redis_server: RedisServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    prefix = unique_prefix()
    pool = ProcessPool(tmp_path, worker_env(redis_server.url, prefix))
    try:
        yield Deployment(redis_server, prefix, pool)
    finally:
        pool.close()
        # Shown by pytest only when the test failed.
        print("\n".join(pool.dump()))  # noqa: T201


@pytest.fixture
async def chat(deployment: Deployment) -> AsyncIterator[RedisChat]:
    async with RedisChat(
        deployment.server.url, deployment.prefix, reclaim_after=RECLAIM_AFTER
    ) as chat:
        yield chat
