"""Fixtures of the API tests: a ``backend`` to run each protocol test on (the in-memory
embedded mode, and Redis on a private redis-server), and a ``start`` factory for servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from chatcore.ports import LLM
from tests.api.support import Backend, RunningApi, SharedMemory, SharedSqlite, Start, serve

BACKENDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        yield Backend("redis", redis_url=url)
    elif request.param == "sqlite":
        shared = SharedSqlite(tmp_path)
        try:
            yield Backend("sqlite", memory=shared)
        finally:
            await shared.close()
    else:
        yield Backend("memory", memory=SharedMemory())


@pytest.fixture
async def start(backend: Backend) -> AsyncIterator[Start]:
    """``api = await start(llm=..., **settings)``: a server on the test's backend; every
    server of one test shares the backend, and all are stopped at the end."""
    async with AsyncExitStack() as stack:

        async def starter(*, llm: LLM | None = None, **overrides: Any) -> RunningApi:
            return await stack.enter_async_context(
                serve(backend.settings(**overrides), llm=llm, share=backend.share)
            )

        yield starter
