"""A client that stops reading is closed with 1013 (it resumes from its cursor) and holds up
nobody else (each connection has its own bounded queue)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.types import Message
from starlette.websockets import WebSocket

from chatcore_adapters.memory import MemoryRateLimits
from chatcore_api.connection_caps import ConnectionCaps
from chatcore_api.connections import ConnectionManager
from chatcore_api.handler import ConnectionSettings, WebSocketHandler
from chatcore_api.metrics import ApiMetrics
from chatcore_api.ratelimit import ApiLimits
from chatcore_api.sessions import SessionManager
from chatcore_api.tokens import TokenSigner
from tests.api.support import settings_for
from tests.api.test_feed import eventually, world
from tests.support.factories import ManualClock

KEY = b"unit-test-key-" * 3


def signer(clock: ManualClock, ttl: timedelta = timedelta(hours=1)) -> TokenSigner:
    return TokenSigner(KEY, ttl=ttl, clock=clock)


class FakeClient:
    """The ASGI side of one WebSocket (the outer edge): frames in, frames out; ``flowing``
    cleared means the client stopped reading, so sends never complete."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def receive(self) -> Message:
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.send":
            await self.flowing.wait()
        self.sent.append(message)
        if message["type"] == "websocket.close":
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": message["code"]})

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    def socket(self) -> WebSocket:
        scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
        return WebSocket(scope, self.receive, self.send)


async def test_a_client_that_stops_reading_is_closed_with_1013_and_holds_up_nobody() -> None:
    async with world() as w:
        metrics = ApiMetrics()
        connections = ConnectionManager(w.feed, metrics)
        w.feed.set_sink(connections.fan_out)
        sessions = SessionManager(w.service, signer(ManualClock(datetime.now(UTC))))
        created = await sessions.create()
        clients = [FakeClient(), FakeClient()]
        tasks = []
        for client in clients:
            client.inbox.put_nowait({"type": "websocket.connect"})
            client.inbox.put_nowait(
                {
                    "type": "websocket.receive",
                    "text": json.dumps({"type": "hello", "token": created.token.token}),
                }
            )
            handler = WebSocketHandler(
                client.socket(),
                sessions=sessions,
                connections=connections,
                service=w.service,
                limits=ApiLimits(
                    settings_for(),
                    shared=MemoryRateLimits(w.clock),
                    local=MemoryRateLimits(w.clock),
                ),
                caps=ConnectionCaps(total=10, per_client=10, per_session=10),
                client="ip:test",
                metrics=metrics,
                settings=ConnectionSettings(send_queue_limit=16),
                model_name="test",
            )
            tasks.append(asyncio.create_task(handler.run()))
        slow, fine = clients
        await eventually(
            lambda: all(any(f["type"] == "caught_up" for f in c.frames()) for c in clients)
        )
        slow.flowing.clear()
        for n in range(40):
            await w.service.update_profile(created.session_id, display_name=f"n{n}", language=None)
            await asyncio.sleep(0.005)  # a steady stream, which the reading client keeps up with
        await eventually(lambda: slow.sent and slow.sent[-1]["type"] == "websocket.close")
        assert slow.sent[-1]["code"] == 1013
        await asyncio.wait_for(tasks[0], timeout=5)
        await eventually(
            lambda: (
                sum(
                    1
                    for f in fine.frames()
                    if f["type"] == "event" and f["event"]["type"] == "profile_updated"
                )
                == 40
            )
        )
        assert connections.count == 1
        fine.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(tasks[1], timeout=5)
        assert connections.count == 0 and w.feed.sessions == 0
