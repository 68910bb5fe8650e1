"""Generating a reply: the worker's use case.

One call answers one work item: take the message's lease, fold the session, start the reply,
stream the model's deltas into the log (batched over a few milliseconds), and close the turn
with exactly one terminal event (I6). Every write is an append at a known version, so another
writer (a cancel request, a worker that took over) is noticed at the next write; when the model
is silent the log is polled, so a cancel takes effect within ``cancel_poll_interval`` (I7).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from chatcore import decisions
from chatcore.errors import AlreadyAnswered, LLMError, PortError, StaleReply
from chatcore.events import Event, Usage
from chatcore.ports import (
    LLM,
    Clock,
    IdGenerator,
    Leases,
    LLMChunk,
    ModelSwitch,
    TextDelta,
    UsageReport,
    WorkItem,
)
from chatcore.prompt import PromptSettings, build_prompt, estimate_tokens
from chatcore.service import ChatService
from chatcore.view import SessionView, project

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ALREADY_ANSWERED = "already_answered"  # nothing to do: acknowledge the work item
    BUSY = "busy"  # another delivery of the same message holds the lease: acknowledge
    LOST = "lost"  # another worker took this delivery over: do NOT acknowledge


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    flush_interval: float = 0.015
    flush_max_chars: int = 2048
    cancel_poll_interval: float = 0.25
    lease_ttl: float = 30.0
    keepalive_interval: float = 5.0


Keepalive = Callable[[], Awaitable[bool]]

_END = object()


@dataclass(slots=True)
class _Failure:
    error: BaseException


def lease_key(item: WorkItem) -> str:
    return f"reply:{item.session_id}:{item.message_id}"


class ReplyGenerator:
    def __init__(
        self,
        *,
        service: ChatService,
        llm: LLM,
        leases: Leases,
        clock: Clock,
        ids: IdGenerator,
        settings: GenerationSettings | None = None,
        prompt: PromptSettings | None = None,
    ) -> None:
        self.service = service
        self.llm = llm
        self.leases = leases
        self.clock = clock
        self.ids = ids
        self.settings = settings or GenerationSettings()
        self.prompt = prompt or service.settings.prompt

    async def generate(
        self,
        item: WorkItem,
        *,
        delivery_id: str,
        owner: str,
        keepalive: Keepalive | None = None,
    ) -> Outcome:
        """Answer ``item``. ``delivery_id`` names this delivery of the item: a later delivery
        of the *same* entry (the queue reclaimed it from a dead consumer) may take the lease
        over; a different entry for the same message (a duplicate) may not."""
        key = lease_key(item)
        token = f"{delivery_id}|{owner}"
        holder = await self.leases.acquire(key, token, self.settings.lease_ttl)
        if holder is not None:
            same_delivery = holder.split("|", 1)[0] == delivery_id
            if not same_delivery or not await self.leases.replace(
                key, holder, token, self.settings.lease_ttl
            ):
                view = await self.service.load(item.session_id)
                if view.find_turn(item.message_id) is None:
                    return Outcome.ALREADY_ANSWERED
                return Outcome.BUSY
        try:
            return await _Run(self, item, key, token, keepalive).run()
        finally:
            try:
                await self.leases.release(key, token)
            except PortError as exc:  # it expires by itself; the outcome stands
                log.warning(
                    "could not release a reply lease",
                    extra={"session_id": item.session_id, "error": exc.code},
                )


class _Run:
    """The state of one generation; split out of ReplyGenerator to keep each step small."""

    def __init__(
        self,
        gen: ReplyGenerator,
        item: WorkItem,
        key: str,
        token: str,
        keepalive: Keepalive | None,
    ) -> None:
        self.gen = gen
        self.item = item
        self.key = key
        self.token = token
        self.keepalive = keepalive
        self.view = SessionView()
        self.reply_id = gen.ids.new_id("rep")
        self.buffer: list[str] = []
        self.buffer_since = 0.0
        self.last_io = 0.0
        self.last_keepalive = 0.0
        self.usage: Usage | None = None
        self.said: list[str] = []

    @property
    def sid(self) -> str:
        return self.item.session_id

    @property
    def mid(self) -> str:
        return self.item.message_id

    def _now(self) -> float:
        return self.gen.clock.monotonic()

    async def _write(self, decide: Callable[[SessionView], list[Event]]) -> None:
        await self.gen.service.execute(self.sid, self.view, decide)
        self.last_io = self._now()

    def _cancel_requested(self) -> bool:
        found = self.view.find_turn(self.mid)
        return found is not None and found[1].cancel_requested

    async def run(self) -> Outcome:
        service = self.gen.service
        self.view = await service.load(self.sid)
        if self.view.find_turn(self.mid) is None:
            return Outcome.ALREADY_ANSWERED
        now = self.gen.clock.now()
        try:
            await self._write(
                lambda v: decisions.start_reply(
                    v, now, message_id=self.mid, reply_id=self.reply_id, model=self.gen.llm.name
                )
            )
        except AlreadyAnswered:
            return Outcome.ALREADY_ANSWERED
        if self.view.find_turn(self.mid) is None:
            return Outcome.CANCELLED  # a cancel arrived before the reply started
        log.info(
            "reply started",
            extra={"session_id": self.sid, "message_id": self.mid, "reply_id": self.reply_id},
        )
        conv = self.view.conversations[self.item.conversation_id]
        request = build_prompt(conv, self.mid, self.view.profile, self.gen.prompt)
        try:
            return await self._stream(self.gen.llm.stream(request))
        except StaleReply:
            log.warning(
                "reply taken over by another worker",
                extra={"session_id": self.sid, "reply_id": self.reply_id},
            )
            return Outcome.LOST

    async def _stream(self, chunks: AsyncIterator[LLMChunk]) -> Outcome:
        inbox: asyncio.Queue[object] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for chunk in chunks:
                    inbox.put_nowait(chunk)
                inbox.put_nowait(_END)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
                inbox.put_nowait(_Failure(exc))
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()

        producer = asyncio.create_task(pump(), name=f"llm:{self.reply_id}")
        self.last_io = self.last_keepalive = self._now()
        try:
            return await self._consume(inbox)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    def _next_deadline(self) -> float:
        s = self.gen.settings
        deadlines = [
            self.last_io + s.cancel_poll_interval,
            self.last_keepalive + s.keepalive_interval,
        ]
        if self.buffer:
            deadlines.append(self.buffer_since + s.flush_interval)
        return min(deadlines)

    async def _consume(self, inbox: asyncio.Queue[object]) -> Outcome:
        s = self.gen.settings
        while True:
            chunk: object = None
            try:
                chunk = inbox.get_nowait()
            except asyncio.QueueEmpty:
                wait = self._next_deadline() - self._now()
                if wait > 0:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that lands as the queue hands over a chunk, and a worker
                    # told to stop would then go on writing the reply.
                    try:
                        async with asyncio.timeout(wait):
                            chunk = await inbox.get()
                    except TimeoutError:
                        chunk = None
            if chunk is _END:
                await self._flush()
                if self._cancel_requested():
                    return await self._cancelled()
                return await self._complete()
            if isinstance(chunk, _Failure):
                await self._flush()
                return await self._failed(chunk.error)
            if isinstance(chunk, TextDelta) and chunk.text:
                if not self.buffer:
                    self.buffer_since = self._now()
                self.buffer.append(chunk.text)
                self.said.append(chunk.text)
                if sum(map(len, self.buffer)) >= s.flush_max_chars:
                    await self._flush()
            elif isinstance(chunk, ModelSwitch):
                await self._flush()
                await self._switch(chunk)
            elif isinstance(chunk, UsageReport):
                self.usage = chunk.usage
            t = self._now()
            if self.buffer and t - self.buffer_since >= s.flush_interval:
                await self._flush()
            if t - self.last_io >= s.cancel_poll_interval:
                await self._poll()
            if self._cancel_requested():
                return await self._cancelled()
            if t - self.last_keepalive >= s.keepalive_interval:
                await self._keep_alive()

    async def _switch(self, switch: ModelSwitch) -> None:
        now = self.gen.clock.now()
        await self._write(
            lambda v: decisions.switch_model(
                v,
                now,
                message_id=self.mid,
                reply_id=self.reply_id,
                to_model=switch.to_model,
                reason=switch.reason,
            )
        )

    async def _flush(self) -> None:
        if not self.buffer:
            return
        text = "".join(self.buffer)
        self.buffer.clear()
        now = self.gen.clock.now()
        await self._write(
            lambda v: decisions.append_text(
                v, now, message_id=self.mid, reply_id=self.reply_id, text=text
            )
        )

    async def _poll(self) -> None:
        newer = await self.gen.service.store.read(self.sid, after=self.view.version)
        project(self.view, newer)
        self.last_io = self._now()
        decisions.current_draft(self.view, self.mid, self.reply_id)  # StaleReply if taken over

    async def _keep_alive(self) -> None:
        self.last_keepalive = self._now()
        alive = await self.gen.leases.renew(self.key, self.token, self.gen.settings.lease_ttl)
        if alive and self.keepalive is not None:
            alive = await self.keepalive()
        if not alive:
            raise StaleReply(self.reply_id)

    async def _complete(self) -> Outcome:
        usage = self.usage or Usage(
            prompt_tokens=0,
            completion_tokens=estimate_tokens("".join(self.said)),
        )
        now = self.gen.clock.now()
        await self._write(
            lambda v: decisions.complete_reply(
                v, now, message_id=self.mid, reply_id=self.reply_id, usage=usage
            )
        )
        await self.gen.service._remember(self.sid, self.view)
        log.info(
            "reply completed",
            extra={
                "session_id": self.sid,
                "reply_id": self.reply_id,
                "completion_tokens": usage.completion_tokens,
            },
        )
        return Outcome.COMPLETED

    async def _cancelled(self) -> Outcome:
        await self._flush()
        now = self.gen.clock.now()
        await self._write(
            lambda v: (
                decisions.cancel_reply(v, now, message_id=self.mid, reply_id=self.reply_id)
                if v.find_turn(self.mid) is not None
                else []
            )
        )
        log.info("reply cancelled", extra={"session_id": self.sid, "reply_id": self.reply_id})
        return Outcome.CANCELLED

    async def _failed(self, error: BaseException) -> Outcome:
        if not isinstance(error, LLMError):
            raise error
        now = self.gen.clock.now()
        await self._write(
            lambda v: decisions.fail_reply(
                v,
                now,
                message_id=self.mid,
                reply_id=self.reply_id,
                code=f"llm_{error.kind}",
                reason=error.message,
            )
        )
        log.warning(
            "reply failed",
            extra={"session_id": self.sid, "reply_id": self.reply_id, "kind": error.kind},
        )
        return Outcome.FAILED
