"""Fixtures shared by every test package."""

from tests.support.redis_fixtures import (
    redis_cluster_url,
    redis_replicated_cluster_url,
    redis_url,
)

__all__ = ["redis_cluster_url", "redis_replicated_cluster_url", "redis_url"]
