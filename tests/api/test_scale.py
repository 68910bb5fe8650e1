"""I8: many sockets, a bounded number of Redis connections. Every socket of the process is
served by the one live-feed read; no socket holds a Redis connection of its own."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from tests.api.support import WsClient, is_event, serve, settings_for
from tests.support.redis_server import unique_prefix

SOCKETS = 120


async def api_connections(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        listed = await client.client_list()
    finally:
        await client.aclose()
    return sum(1 for c in listed if c.get("name") == "chatcore-api")


@pytest.mark.redis
async def test_many_sockets_share_a_bounded_number_of_redis_connections(redis_url: str) -> None:
    settings = settings_for(
        redis_url=redis_url, redis={"prefix": unique_prefix(), "max_connections": 4}
    )
    clients: list[WsClient] = []
    async with serve(settings) as api:
        try:
            sessions = []
            for _ in range(0, SOCKETS, 20):
                sessions += await asyncio.gather(*(api.new_session() for _ in range(20)))
            for batch in range(0, SOCKETS, 20):
                opened = await asyncio.gather(
                    *(WsClient.open(api.ws_url) for _ in sessions[batch : batch + 20])
                )
                clients.extend(opened)
                await asyncio.gather(
                    *(c.hello(s["token"]) for c, s in zip(opened, sessions[batch:], strict=False))
                )
            assert api.app.state.runtime.connections.count == SOCKETS
            idle = await api_connections(redis_url)
            assert idle <= 4, f"{idle} Redis connections for {SOCKETS} sockets"

            # Every socket still gets its own session's live events, through the one feed.
            await asyncio.gather(
                *(
                    c.request({"type": "set_profile", "display_name": f"user{n}"})
                    for n, c in enumerate(clients)
                )
            )
            await asyncio.gather(*(c.until(is_event("profile_updated")) for c in clients))
            for n, client in enumerate(clients):
                updates = [
                    f["event"]["display_name"]
                    for f in client.received
                    if f["type"] == "event" and f["event"]["type"] == "profile_updated"
                ]
                assert updates == [f"user{n}"]
            assert await api_connections(redis_url) <= 4
        finally:
            await asyncio.gather(*(c.close() for c in clients))
