"""Session-wide Redis fixtures (registered in ``tests/conftest.py``).

``redis_url``: a private single ``redis-server`` for the whole run (or
``CHATCORE_TEST_REDIS_URL``). ``redis_cluster_url``: a private three-master cluster (or
``CHATCORE_TEST_REDIS_CLUSTER_URL``). Tests isolate themselves with
:func:`tests.support.redis_server.unique_prefix` and must not depend on the server's state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.redis_server import (
    CLUSTER_URL_ENV,
    URL_ENV,
    RedisClusterServers,
    RedisServer,
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    url = os.environ.get(CLUSTER_URL_ENV)
    if url:
        yield url
        return
    with RedisClusterServers(3) as cluster:
        yield cluster.url


@pytest.fixture(scope="session")
def redis_replicated_cluster_url() -> Iterator[str]:
    """A three-master Cluster with one replica per master, for durable writes (WAIT)."""
    with RedisClusterServers(3, replicas=1) as cluster:
        yield cluster.url
