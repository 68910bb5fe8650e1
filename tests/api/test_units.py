"""The API's parts on their own: tokens, rate limits, the Origin rule, the live feed (one read
for many sessions, I8) and a slow client's bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.types import Message
from starlette.websockets import WebSocket

from chatcore.errors import StoreUnavailable
from chatcore.ports import Appended
from chatcore.service import ChatService
from chatcore_adapters.memory import MemoryEventStore, MemorySessionCache, MemoryWorkQueue
from chatcore_adapters.memory.event_store import MemoryLiveSubscription
from chatcore_adapters.system import RandomIds, SystemClock
from chatcore_api.connections import ConnectionManager
from chatcore_api.errors import TokenExpired, Unauthorized
from chatcore_api.feed import SessionFeed
from chatcore_api.handler import ConnectionSettings, WebSocketHandler
from chatcore_api.metrics import ApiMetrics
from chatcore_api.ratelimit import RateLimiter
from chatcore_api.security import origin_allowed
from chatcore_api.sessions import SessionManager
from chatcore_api.tokens import TokenSigner
from tests.support.factories import ManualClock

KEY = b"unit-test-key-" * 3

# --- tokens ----------------------------------------------------------------------------------


def signer(clock: ManualClock, ttl: timedelta = timedelta(hours=1)) -> TokenSigner:
    return TokenSigner(KEY, ttl=ttl, clock=clock)


def test_a_token_names_its_session_until_it_expires() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    issued = signer(clock).issue("S" * 32)
    assert signer(clock).verify(issued.token) == "S" * 32
    assert issued.expires_at == datetime(2026, 1, 1, 1, tzinfo=UTC)
    clock.advance(3599)
    assert signer(clock).verify(issued.token) == "S" * 32
    clock.advance(1)
    with pytest.raises(TokenExpired):
        signer(clock).verify(issued.token)


@pytest.mark.parametrize("part", [1, 2, 3])
def test_changing_any_part_of_a_token_invalidates_it(part: int) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    token = signer(clock).issue("S" * 32).token
    pieces = token.split(".")
    original = pieces[part]
    pieces[part] = ("T" if original[0] != "T" else "U") + original[1:]
    if part == 2:
        pieces[part] = str(int(original) + 86_400)  # stretch the expiry by a day
    with pytest.raises(Unauthorized) as refused:
        signer(clock).verify(".".join(pieces))
    assert not isinstance(refused.value, TokenExpired)


def test_a_token_from_another_key_or_garbage_is_refused() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    other = TokenSigner(b"another-key-0123456789", ttl=timedelta(hours=1), clock=clock)
    for token in (other.issue("S" * 32).token, "", "v1...", "x" * 2000, "v2.a.b.c"):
        with pytest.raises(Unauthorized):
            signer(clock).verify(token)


def test_tokens_do_not_show_in_reprs() -> None:
    issued = signer(ManualClock()).issue("S" * 32)
    assert issued.token not in repr(issued)
    assert KEY.decode() not in repr(signer(ManualClock()))


# --- rate limits -----------------------------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = ManualClock()
    limiter = RateLimiter.per_minute(6, 2, clock.monotonic)  # one every 10 s, two at once
    assert limiter.try_acquire("a") == 0 and limiter.try_acquire("a") == 0
    wait = limiter.try_acquire("a")
    assert wait == pytest.approx(10.0)
    assert limiter.try_acquire("b") == 0, "keys are independent"
    clock.advance(5)
    assert limiter.try_acquire("a") == pytest.approx(5.0)
    clock.advance(5)
    assert limiter.try_acquire("a") == 0


def test_the_limiter_forgets_idle_keys_when_full() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=1.0, burst=1, now=clock.monotonic, max_keys=10)
    for n in range(10):
        limiter.try_acquire(f"k{n}")
    clock.advance(5)
    limiter.try_acquire("new")
    assert len(limiter._buckets) <= 10


# --- the Origin rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        (None, "chat.example.com", [], True),
        ("https://chat.example.com", "chat.example.com", [], True),
        ("http://chat.example.com", "chat.example.com", [], True),
        ("http://localhost:8000", "localhost:8000", [], True),
        ("http://LOCALHOST:8000", "localhost:8000", [], True),
        ("http://localhost:80", "localhost", [], True),
        ("http://localhost:8001", "localhost:8000", [], False),
        ("http://evil.example", "chat.example.com", [], False),
        ("http://chat.example.com.evil.example", "chat.example.com", [], False),
        ("null", "chat.example.com", [], False),
        ("", "chat.example.com", [], False),
        ("file://", "chat.example.com", [], False),
        ("https://app.example.com", "api.example.com", ["https://app.example.com"], True),
        ("https://app.example.com:443", "api.example.com", ["https://app.example.com"], True),
        ("http://app.example.com", "api.example.com", ["https://app.example.com"], False),
        ("http://[::1]:8000", "[::1]:8000", [], True),
        ("https://chat.example.com", None, [], False),
        ("https://chat.example.com", "chat.example.com:bad", [], False),
    ],
)
def test_websocket_origins_must_be_same_origin_or_listed(
    origin: str | None, host: str | None, allowed: list[str], expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is expected


# --- the live feed ---------------------------------------------------------------------------


class FlakySubscription(MemoryLiveSubscription):
    """The in-memory subscription, able to lose pushes: ``lose()`` drops what is published
    until the subscriber reconnects (which fails ``failures`` times first); ``skip`` drops
    the next N pushes quietly, as a missed message would."""

    def __init__(self, store: MemoryEventStore) -> None:
        super().__init__(store)
        self.follows: list[str] = []
        self.lost = False
        self.failures = 0
        self.skip = 0
        self.reconnects = 0

    def _push(self, appended: Appended) -> None:
        if self.lost:
            return
        if self.skip and appended.session_id in self._following:
            self.skip -= 1
            return
        super()._push(appended)

    def lose(self, failures: int = 0) -> None:
        self.lost = True
        self.failures = failures

    async def follow(self, session_id: str) -> None:
        self.follows.append(session_id)
        await super().follow(session_id)

    async def receive(self, timeout: float) -> list[Appended]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # in short waits, so that lose() interrupts a long one
            if self.lost:
                raise StoreUnavailable("redis live failed (ConnectionError)")
            got = await super().receive(min(0.02, max(0.0, deadline - loop.time())))
            if got or loop.time() >= deadline:
                return got

    async def reconnect(self) -> None:
        self.reconnects += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("redis follow failed (ConnectionError)")
        self.lost = False


class RecordingStore(MemoryEventStore):
    """The in-memory store with a :class:`FlakySubscription`."""

    def __init__(self, clock: SystemClock) -> None:
        super().__init__(clock)
        self.sub: FlakySubscription | None = None

    def subscribe(self) -> FlakySubscription:
        self.sub = FlakySubscription(self)
        self._subscriptions.add(self.sub)
        return self.sub


@dataclass
class World:
    clock: SystemClock
    store: RecordingStore
    sub: FlakySubscription
    service: ChatService
    feed: SessionFeed
    got: dict[str, list[str]]


@contextlib.asynccontextmanager
async def world(*, block: float = 30.0) -> AsyncIterator[World]:
    clock = SystemClock()
    store = RecordingStore(clock)
    service = ChatService(
        store=store,
        cache=MemorySessionCache(clock),
        queue=MemoryWorkQueue(clock),
        clock=clock,
        ids=RandomIds(),
    )
    feed = SessionFeed(store, block=block)
    assert store.sub is not None
    got: dict[str, list[str]] = {}
    feed.set_sink(lambda sid, records: got.setdefault(sid, []).extend(r.position for r in records))
    feed.start()
    try:
        yield World(clock, store, store.sub, service, feed, got)
    finally:
        await feed.stop()


async def eventually(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the condition belongs to the code under test
            await asyncio.sleep(0.01)


async def log_of(w: World, sid: str) -> list[str]:
    return [r.position for r in await MemoryEventStore.read(w.store, sid)]


async def test_one_subscription_follows_every_session_of_the_process() -> None:
    async with world() as w:
        sessions = [(await w.service.open_session()).session_id for _ in range(30)]
        watches = [await w.feed.watch(sid) for sid in sessions]
        assert sorted(w.sub.follows) == sorted(sessions)  # one follow each, no re-issued read
        for sid in sessions:
            await w.service.update_profile(sid, display_name="Ada", language=None)
        await eventually(lambda: all(len(w.got.get(sid, [])) == 1 for sid in sessions))
        assert w.feed.gap_reads == 0  # pushes carry the events: nothing is read back
        for watch in watches:
            watch.release()
        assert w.feed.sessions == 0
        await w.service.update_profile(sessions[0], display_name="Bo", language=None)
        await eventually(lambda: not w.sub._following)  # unfollowed by the loop
        assert all(len(w.got[sid]) == 1 for sid in sessions)


async def test_a_newly_followed_session_does_not_wait_for_a_blocked_read() -> None:
    async with world(block=30.0) as w:
        first = (await w.service.open_session()).session_id
        await w.feed.watch(first)
        await asyncio.sleep(0.05)  # the loop is now waiting for pushes
        second = (await w.service.open_session()).session_id
        await w.feed.watch(second)
        await w.service.update_profile(second, display_name="Grace", language=None)
        await eventually(lambda: len(w.got.get(second, [])) == 1, timeout=5.0)


async def test_watches_are_counted_and_the_cursor_starts_at_the_watch() -> None:
    async with world() as w:
        sid = (await w.service.open_session()).session_id
        one, two = await w.feed.watch(sid), await w.feed.watch(sid)
        one.release()
        one.release()  # releasing twice is harmless
        assert w.feed.sessions == 1
        await w.service.update_profile(sid, display_name="Ada", language=None)
        await eventually(lambda: len(w.got.get(sid, [])) == 1)
        two.release()
        assert w.feed.sessions == 0


async def test_a_missed_push_is_read_from_the_log_before_anything_newer() -> None:
    async with world() as w:
        sid = (await w.service.open_session()).session_id
        await w.feed.watch(sid)
        w.sub.skip = 2
        for name in ("A", "B", "C", "D"):
            await w.service.update_profile(sid, display_name=name, language=None)
        log = await log_of(w, sid)
        await eventually(lambda: w.got.get(sid) == log[-4:])
        assert w.feed.gap_reads == 1  # one read of the gap


async def test_a_lost_subscription_is_re_established_and_every_session_caught_up() -> None:
    async with world() as w:
        sessions = [(await w.service.open_session()).session_id for _ in range(3)]
        for sid in sessions:
            await w.feed.watch(sid)
        watched = {sid: len(await log_of(w, sid)) for sid in sessions}
        await w.service.update_profile(sessions[0], display_name="Ada", language=None)
        await eventually(lambda: len(w.got.get(sessions[0], [])) == 1)
        w.sub.lose(failures=2)  # and Redis stays away for two attempts
        for sid in sessions:
            await w.service.update_profile(sid, display_name="Bo", language=None)
        await eventually(lambda: w.feed.resyncs == 1, timeout=10)
        await w.service.update_profile(sessions[1], display_name="Cy", language=None)
        for sid in sessions:
            # everything since the watch was taken, once, in order
            since_watch = (await log_of(w, sid))[watched[sid] :]
            await eventually(lambda sid=sid, want=since_watch: w.got.get(sid) == want)
        assert w.sub.reconnects == 3


# --- a slow client ---------------------------------------------------------------------------


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
    async with world(block=1.0) as w:
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
                limiter=RateLimiter(rate=100, burst=100, now=w.clock.monotonic),
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
