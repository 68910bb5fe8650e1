"""Fixtures shared by every test package."""

import os
import tempfile

# The embedded mode's default data directory follows XDG_DATA_HOME: no test may touch the
# real one of whoever runs the suite.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="chatcore-test-data-")

from tests.support.redis_fixtures import (
    redis_cluster_url,
    redis_replicated_cluster_url,
    redis_url,
)

__all__ = ["redis_cluster_url", "redis_replicated_cluster_url", "redis_url"]
