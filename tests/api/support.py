"""Running real API servers in the test's event loop, and a small protocol client.

``serve(settings, llm=..., share=...)`` starts the app under a real uvicorn server on a free
loopback port (the same :class:`ChatServer` and config the ``chatcore serve`` command uses)
and stops it cleanly. ``WsClient`` speaks protocol v1 over a real ``websockets`` connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from dependency_injector import providers
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatcore.ports import LLM
from chatcore_adapters.memory import (
    MemoryEventStore,
    MemoryHeartbeats,
    MemoryIntentJournal,
    MemoryLeases,
    MemoryRateLimits,
    MemorySessionCache,
    MemoryWorkQueue,
)
from chatcore_adapters.system import SystemClock
from chatcore_api.app import create_app
from chatcore_api.container import Container
from chatcore_api.server import ChatServer, server_config
from chatcore_api.settings import ApiSettings, load_settings
from tests.support.redis_server import unique_prefix

Frame = dict[str, Any]
SECRET = "test-secret-" + "k" * 40
WAIT = 10.0


# Limits per client address and per connection out of the way: every test client comes from
# 127.0.0.1. A test of a limit names its own.
GENEROUS: dict[str, Any] = {
    "sessions_per_minute": 100_000,
    "ip_messages_per_minute": 1_000_000,
    "ip_messages_burst": 100_000,
    "ip_tokens_per_minute": 0,
    "frames_per_minute": 1_000_000,
    "frames_burst": 100_000,
    "conversations_per_minute": 100_000,
    "conversations_burst": 10_000,
    "max_connections_per_ip": 100_000,
    "max_connections_per_session": 10_000,
}


def settings_for(**overrides: Any) -> ApiSettings:
    """Settings for a test server: the defaults, with no web client and an explicit key, and
    the :data:`GENEROUS` limits."""
    base: dict[str, Any] = {
        "secret_key": SECRET,
        "web_dir": None,
        "log_format": "text",
        **GENEROUS,
    }
    base.update(overrides)
    if "redis_url" not in base:
        base.setdefault("storage", "memory")  # (the server's default is a file: chosen here)
    web_dir = base.pop("web_dir")
    settings = load_settings(environ={}, **base)
    return settings.model_copy(update={"web_dir": web_dir})


@dataclass
class SharedMemory:
    """One set of in-memory adapters shared by several apps (as one Redis would be)."""

    clock: SystemClock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        self.store = MemoryEventStore(self.clock)
        self.cache = MemorySessionCache(self.clock)
        self.queue = MemoryWorkQueue(self.clock)
        self.intents = MemoryIntentJournal(self.clock)
        self.leases = MemoryLeases(self.clock)
        self.heartbeats = MemoryHeartbeats(self.clock)
        self.rate_limits = MemoryRateLimits(self.clock)

    def attach(self, container: Container) -> None:
        container.clock.override(providers.Object(self.clock))
        container.store.override(providers.Object(self.store))
        container.cache.override(providers.Object(self.cache))
        container.queue.override(providers.Object(self.queue))
        container.intents.override(providers.Object(self.intents))
        container.leases.override(providers.Object(self.leases))
        container.heartbeats.override(providers.Object(self.heartbeats))
        container.rate_limits.override(providers.Object(self.rate_limits))


class SharedSqlite:
    """One SQLite database in a directory, its adapters shared by several apps (as the one
    process of the embedded mode would hold them)."""

    def __init__(self, directory: Path) -> None:
        from chatcore_adapters.sqlite import (
            SqliteDatabase,
            SqliteEventStore,
            SqliteHeartbeats,
            SqliteIntentJournal,
            SqliteLeases,
            SqliteSessionCache,
            SqliteWorkQueue,
        )

        self.clock = SystemClock()
        self.db = SqliteDatabase.open(directory / "chatcore.db")
        self.store = SqliteEventStore(self.db, self.clock)
        self.cache = SqliteSessionCache(self.db, self.clock)
        self.queue = SqliteWorkQueue(self.db, self.clock)
        self.intents = SqliteIntentJournal(self.db, self.clock)
        self.leases = SqliteLeases(self.db, self.clock)
        self.heartbeats = SqliteHeartbeats(self.db, self.clock)
        # The embedded mode's limits live in its one process (bootstrap does the same).
        self.rate_limits = MemoryRateLimits(self.clock)

    def attach(self, container: Container) -> None:
        container.clock.override(providers.Object(self.clock))
        container.store.override(providers.Object(self.store))
        container.cache.override(providers.Object(self.cache))
        container.queue.override(providers.Object(self.queue))
        container.intents.override(providers.Object(self.intents))
        container.leases.override(providers.Object(self.leases))
        container.heartbeats.override(providers.Object(self.heartbeats))
        container.rate_limits.override(providers.Object(self.rate_limits))

    async def close(self) -> None:
        await self.db.close()


@dataclass
class Backend:
    """Where the servers of one test keep their state. Every server started through
    :meth:`settings`/:meth:`share` of the same Backend sees the same sessions."""

    name: str
    redis_url: str | None = None
    prefix: str = field(default_factory=unique_prefix)
    memory: SharedMemory | SharedSqlite | None = None

    def settings(self, **overrides: Any) -> ApiSettings:
        if self.redis_url is not None:
            overrides.setdefault("redis_url", self.redis_url)
            overrides.setdefault("redis", {"prefix": self.prefix})
        return settings_for(**overrides)

    def share(self, container: Container) -> None:
        if self.memory is not None:
            self.memory.attach(container)


@dataclass
class RunningApi:
    app: FastAPI
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def container(self) -> Container:
        container: Container = self.app.state.container
        return container

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.http, timeout=WAIT)

    async def new_session(self, **body: Any) -> dict[str, Any]:
        async with self.client() as http:
            response = await http.post("/api/sessions", json=body or None)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    @asynccontextmanager
    async def ws(self, **kwargs: Any) -> AsyncIterator[WsClient]:
        client = await WsClient.open(self.ws_url, **kwargs)
        try:
            yield client
        finally:
            await client.close()


@asynccontextmanager
async def serve(
    settings: ApiSettings | None = None,
    *,
    llm: LLM | None = None,
    share: Callable[[Container], None] | None = None,
) -> AsyncIterator[RunningApi]:
    settings = settings or settings_for()
    app = create_app(settings)
    container: Container = app.state.container
    if llm is not None:
        container.llm.override(providers.Object(llm))
    if share is not None:
        share(container)
    server = ChatServer(server_config(app, settings, host="127.0.0.1", port=0), app)
    task = asyncio.create_task(server.serve(), name="test-uvicorn")
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the server stopped while starting")
                await asyncio.sleep(0.01)
        yield RunningApi(app, server.bound_port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


Start = Callable[..., Awaitable[RunningApi]]
"""``await start(llm=..., **settings)``: a running server on the test's backend."""


class WsClient:
    """A protocol v1 client over a real WebSocket connection.

    A background task reads every frame as it arrives (as a browser does), so the client
    never pushes back on the server unless a test pauses it on purpose.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[Frame] = []
        self._inbox: asyncio.Queue[str | bytes | ConnectionClosed] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name="test-ws-reader")
        self.closed: ConnectionClosed | None = None

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self._inbox.put_nowait(raw)
        except ConnectionClosed as exc:
            self._inbox.put_nowait(exc)
        else:
            closed = self.ws.protocol.close_exc
            self._inbox.put_nowait(closed)

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> WsClient:
        kwargs.setdefault("compression", None)
        kwargs.setdefault("open_timeout", WAIT)
        kwargs.setdefault("max_size", 4 * 1024 * 1024)
        return cls(await connect(url, **kwargs))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), timeout=5)
        except (TimeoutError, OSError):
            self.ws.transport.abort()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def send(self, frame: Frame | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.ws.send(json.dumps(frame))
        else:
            await self.ws.send(frame)

    async def _next(self, timeout: float) -> str | bytes:
        if self.closed is not None:
            raise self.closed
        item = await asyncio.wait_for(self._inbox.get(), timeout=timeout)
        if isinstance(item, ConnectionClosed):
            self.closed = item
            raise item
        return item

    async def recv(self, timeout: float = WAIT) -> Frame:
        raw = await self._next(timeout)
        assert isinstance(raw, str), "the server sent a binary frame"
        frame: Frame = json.loads(raw)
        self.received.append(frame)
        return frame

    async def recv_until(self, done: Callable[[Frame], bool], timeout: float = WAIT) -> list[Frame]:
        """Frames up to and including the first for which ``done`` is true."""
        frames = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout=timeout)
                frames.append(frame)
                if done(frame):
                    return frames

    async def until(self, done: Callable[[Frame], bool], timeout: float = WAIT) -> list[Frame]:
        """Every frame received so far, once one of them (old or new) satisfies ``done``."""
        if not any(done(f) for f in self.received):
            try:
                await self.recv_until(done, timeout)
            except TimeoutError:
                kinds = [f.get("event", {}).get("type", f["type"]) for f in self.received]
                raise AssertionError(f"timed out; received so far: {kinds}") from None
        return list(self.received)

    async def hello(
        self, token: str, last_event_id: str | None = None, **extra: Any
    ) -> tuple[Frame, list[Frame]]:
        """Send hello; return the welcome and the frames up to and including caught_up."""
        await self.send({"type": "hello", "token": token, "last_event_id": last_event_id, **extra})
        welcome = await self.recv()
        assert welcome["type"] == "welcome", welcome
        frames = await self.recv_until(lambda f: f["type"] == "caught_up")
        return welcome, frames

    async def request(self, frame: Frame, timeout: float = WAIT) -> Frame:
        """Send a command and return its ack or error (events received meanwhile are kept)."""
        request_id = frame.setdefault("request_id", "r" + secrets.token_hex(4))
        await self.send(frame)
        frames = await self.recv_until(
            lambda f: f["type"] in {"ack", "error"} and f.get("request_id") == request_id,
            timeout,
        )
        return frames[-1]

    async def ping(self, timeout: float = WAIT) -> Frame:
        nonce = secrets.token_hex(4)
        await self.send({"type": "ping", "nonce": nonce})
        frames = await self.recv_until(
            lambda f: f["type"] == "pong" and f.get("nonce") == nonce, timeout
        )
        return frames[-1]

    async def close_code(self, timeout: float = WAIT) -> int | None:
        """Read until the server closes; the close code it sent."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    raw = await self._next(timeout)
                    if isinstance(raw, str):
                        self.received.append(json.loads(raw))
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd is not None else None


def events(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f["type"] == "event"]


def event_types(frames: list[Frame]) -> list[str]:
    return [f["event"]["type"] for f in events(frames)]


def is_terminal(frame: Frame) -> bool:
    return frame["type"] == "event" and frame["event"]["type"] in {
        "reply_completed",
        "reply_failed",
        "reply_cancelled",
    }


def is_event(kind: str) -> Callable[[Frame], bool]:
    return lambda frame: frame["type"] == "event" and frame["event"]["type"] == kind


def delta_text(frames: list[Frame]) -> str:
    """The reply text carried by the ``reply_delta`` events among ``frames``."""
    return "".join(
        f["event"]["text"] for f in events(frames) if f["event"]["type"] == "reply_delta"
    )


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, seq = cursor.split("-")
    return int(ms), int(seq)


def send_frame(session: Mapping[str, str], text: str = "Hi", cmid: str = "m1") -> Frame:
    """A ``send`` frame for the session's first conversation."""
    return {
        "type": "send",
        "conversation_id": session["conversation_id"],
        "client_message_id": cmid,
        "text": text,
    }
