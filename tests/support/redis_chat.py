"""The test's side of a deployment on Redis: a ChatService that opens sessions and submits
messages exactly as an API process would, and bounded waits on what the workers write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from chatcore.errors import PortError
from chatcore.events import (
    TERMINAL_REPLY_EVENTS,
    Event,
    Recorded,
    ReplyAbandoned,
    ReplyDelta,
    ReplyStarted,
)
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.redis import (
    RedisConnection,
    RedisEventStore,
    RedisHeartbeats,
    RedisSettings,
    RedisWorkQueue,
    connect,
)
from chatcore_adapters.settings import ChatcoreSettings, RedisOptions


@dataclass(frozen=True, slots=True)
class Asked:
    session_id: str
    conversation_id: str
    message_id: str


def terminal_events(records: list[Recorded], message_id: str) -> list[Event]:
    return [
        r.event
        for r in records
        if isinstance(r.event, TERMINAL_REPLY_EVENTS)
        and getattr(r.event, "in_reply_to", None) == message_id
    ]


def started(records: list[Recorded], message_id: str) -> list[ReplyStarted]:
    return [
        r.event
        for r in records
        if isinstance(r.event, ReplyStarted) and r.event.in_reply_to == message_id
    ]


def abandoned(records: list[Recorded], message_id: str) -> list[ReplyAbandoned]:
    return [
        r.event
        for r in records
        if isinstance(r.event, ReplyAbandoned) and r.event.in_reply_to == message_id
    ]


def deltas_of(records: list[Recorded], reply_id: str) -> list[ReplyDelta]:
    return [
        r.event for r in records if isinstance(r.event, ReplyDelta) and r.event.reply_id == reply_id
    ]


class RedisChat:
    """``async with RedisChat(url, prefix) as chat: ...``"""

    def __init__(self, url: str, prefix: str, *, reclaim_after: float = 30.0) -> None:
        self.settings = RedisSettings(
            url=url,
            prefix=prefix,
            client_name="chatcore-test-client",
            max_block=2.0,
            read_margin=2.0,
            connect_timeout=0.5,
            operation_timeout=3.0,
            retries=2,
            backoff_base=0.02,
            backoff_cap=0.2,
            health_check_interval=1,
        )
        self.reclaim_after = reclaim_after
        self.conn: RedisConnection | None = None

    async def __aenter__(self) -> RedisChat:
        conn = self.conn = connect(self.settings)
        # The deployment's workers take over after reclaim_after (often shorter than a worker
        # of this process could keep up with; this process runs none).
        queue = RedisWorkQueue(conn, reclaim_after=self.reclaim_after)
        core = bootstrap(
            ChatcoreSettings(redis=RedisOptions(cache_ttl=600)), redis=conn, queue=queue
        )
        assert isinstance(core.queue, RedisWorkQueue)
        assert isinstance(core.heartbeats, RedisHeartbeats)
        assert isinstance(core.store, RedisEventStore)
        self.queue, self.heartbeats, self.store = core.queue, core.heartbeats, core.store
        self.service = core.service
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.conn is not None:
            await self.conn.aclose()

    async def ask(self, text: str = "Hello there", *, client_id: str = "c1") -> Asked:
        opened = await self.service.open_session(display_name="Tess")
        result = await self.service.submit_message(
            opened.session_id,
            conversation_id=opened.conversation_id,
            client_message_id=client_id,
            text=text,
        )
        return Asked(opened.session_id, opened.conversation_id, result.message_id)

    async def ask_until_accepted(self, text: str, *, timeout: float) -> Asked:
        """Retry while Redis is unreachable (e.g. just restarted); bounded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self.ask(text)
            except PortError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def events(self, session_id: str) -> list[Recorded]:
        return await self.store.read(session_id)

    async def wait_for(
        self,
        session_id: str,
        condition: Callable[[list[Recorded]], bool],
        *,
        timeout: float,
        what: str,
    ) -> list[Recorded]:
        """Poll the session's log until ``condition`` holds; fail after ``timeout`` seconds.
        Read errors (Redis restarting) count as "not yet"."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        records: list[Recorded] = []
        while True:
            try:
                records = await self.events(session_id)
            except PortError:
                records = []
            if records and condition(records):
                return records
            if loop.time() > deadline:
                kinds = [type(r.event).__name__ for r in records]
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {kinds}")
            await asyncio.sleep(0.05)

    async def wait_terminal(self, asked: Asked, *, timeout: float) -> list[Recorded]:
        return await self.wait_for(
            asked.session_id,
            lambda rs: bool(terminal_events(rs, asked.message_id)),
            timeout=timeout,
            what=f"a terminal reply to {asked.message_id}",
        )

    async def wait_streaming(self, asked: Asked, *, timeout: float) -> list[Recorded]:
        """Until the reply has started and said something."""

        def streaming(rs: list[Recorded]) -> bool:
            attempts = started(rs, asked.message_id)
            return bool(attempts) and bool(deltas_of(rs, attempts[-1].reply_id))

        return await self.wait_for(
            asked.session_id, streaming, timeout=timeout, what="a reply being streamed"
        )
