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
import math
from collections.abc import AsyncIterator, Awaitable, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatcore import decisions
from chatcore.errors import (
    AlreadyAnswered,
    LLMError,
    PortError,
    SessionFull,
    SessionNotFound,
    StaleReply,
)
from chatcore.events import Event, Usage
from chatcore.ports import (
    LLM,
    Clock,
    CompletionRequest,
    IdGenerator,
    Leases,
    LLMChunk,
    ModelSwitch,
    RateLimits,
    UsageReport,
    WorkItem,
)
from chatcore.prompt import (
    PromptMemo,
    PromptSettings,
    build_prompt,
    estimate_message_tokens,
    estimate_text_tokens,
)
from chatcore.reply_inbox import END, ModelFailure, ReplyInbox
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
    GONE = "gone"  # the session or the conversation was deleted: acknowledge


class GenerationSettings(BaseModel):
    """How a reply is written. Declared once: part of the bundled API's ``worker`` settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flush_interval: float = Field(
        default=0.015,
        ge=0,
        le=1,
        description="At most one append of a reply's streamed text per this many seconds: text "
        "arriving after a quiet interval is appended at once, text arriving sooner waits for the "
        "interval's end and shares one event (also flushed at flush_max_chars). Longer: fewer "
        "events and frames at high token rates; 0: append whenever no append is in flight.",
    )
    flush_max_chars: int = Field(
        default=2048, ge=1, le=1_000_000, description="Characters that are written at once."
    )
    cancel_poll_interval: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="Seconds a reply whose model is silent goes without reading the log (a "
        "Stop is noticed within this time).",
    )
    lease_ttl: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a reply's lease lasts unless its worker renews it.",
    )
    keepalive_interval: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Seconds between renewals of a reply's lease and delivery; at most half of "
        "lease_ttl and of the queue's reclaim timeout.",
    )
    # At most this many replies of one worker hold their session's whole view at once (while
    # they load it and build the prompt, a few milliseconds); the others wait their turn. A
    # burst of replies (a worker taking over a dead one's work) then costs a few views' worth
    # of memory, not one per reply, however long the sessions are.
    max_whole_views: int = Field(
        default=4, ge=1, le=1024, description="Replies that may hold a whole session at once."
    )

    @model_validator(mode="after")
    def _renewed_well_inside_the_lease(self) -> GenerationSettings:
        if self.keepalive_interval * 2 > self.lease_ttl:
            raise ValueError("keepalive_interval must be at most half of lease_ttl")
        return self


Keepalive = Callable[[], Awaitable[bool]]


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
        budgets: RateLimits | None = None,
    ) -> None:
        """``budgets`` is where a reply's tokens are charged to the budgets its work item
        names (:attr:`WorkItem.charges`); ``None`` charges nothing."""
        self.service = service
        self.budgets = budgets
        self.llm = llm
        self.leases = leases
        self.clock = clock
        self.ids = ids
        self.settings = settings or GenerationSettings()
        self.prompt = prompt or service.settings.prompt
        self.prompt_memo = PromptMemo()
        self.whole_views = asyncio.Semaphore(self.settings.max_whole_views)

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
        # The lease and the session are asked for together (one wait instead of two): a view
        # read before the lease was taken is no less current for it, as every write goes in
        # at the view's version and is decided again on a newer one.
        async with self.whole_views:
            taken, loaded = await asyncio.gather(
                self._take_lease(key, token, delivery_id),
                self._load(item.session_id),
                return_exceptions=True,
            )
            if isinstance(taken, BaseException):
                raise taken
            if taken is None:
                log.warning(
                    "the reply lease kept changing hands; leaving the delivery to its new owner",
                    extra={"session_id": item.session_id, "message_id": item.message_id},
                )
                return Outcome.LOST
            if not taken:
                return self._duplicate(item, loaded)
            reply = _ReplyInProgress(self, item, key, token, keepalive)
            try:
                request = reply.prepare(loaded)
                if request is None:
                    request = await reply.prepare_again()
            except SessionNotFound:
                await self._release(item, key, token)
                return _gone(item)
            except BaseException:
                await self._release(item, key, token)
                raise
            del loaded  # the reply keeps its turn only, not the session's history
        try:
            if request is None:
                return Outcome.ALREADY_ANSWERED
            return await reply.run(request)
        except SessionNotFound:
            return _gone(item)
        finally:
            await self._release(item, key, token)

    async def _load(self, session_id: str) -> SessionView | None:
        """The session's view; ``None`` when it does not exist (any more)."""
        try:
            return await self.service.load(session_id)
        except SessionNotFound:
            return None

    def _duplicate(self, item: WorkItem, loaded: SessionView | BaseException | None) -> Outcome:
        """Another delivery of the message holds its lease: this one has nothing to do."""
        if isinstance(loaded, BaseException):
            raise loaded
        if loaded is None:
            return Outcome.GONE
        if loaded.find_turn(item.message_id) is None:
            return Outcome.ALREADY_ANSWERED
        log.info(
            "another delivery of this message is being answered; this one is a duplicate",
            extra={"session_id": item.session_id, "message_id": item.message_id},
        )
        return Outcome.BUSY

    async def _release(self, item: WorkItem, key: str, token: str) -> None:
        try:
            await self.leases.release(key, token)
        except PortError as exc:  # it expires by itself; the outcome stands
            log.warning(
                "could not release a reply lease",
                extra={"session_id": item.session_id, "error": exc.code},
            )

    async def _take_lease(self, key: str, token: str, delivery_id: str) -> bool | None:
        """Take the message's lease for this delivery. ``True``: it was free, or held by an
        earlier owner of this same delivery (the queue handed it on after that owner went
        quiet). ``False``: another delivery of the message holds it; that one answers, and
        this duplicate may be acknowledged. ``None``: the lease changed hands at every look.

        Between reading the holder and replacing it, the holder may let go (it found the
        delivery taken over and stopped) or another owner may take it; either way the answer
        is to look again, never to call a free lease "another delivery's": the only delivery
        of the message would then be acknowledged unanswered."""
        ttl = self.settings.lease_ttl
        for _ in range(_LEASE_LOOKS):
            holder = await self.leases.acquire(key, token, ttl)
            if holder is None:
                return True
            if holder.split("|", 1)[0] != delivery_id:
                return False
            if await self.leases.replace(key, holder, token, ttl):
                return True
        return None


def text_due(inbox: ReplyInbox, now: float, last_flush: float, s: GenerationSettings) -> bool:
    """Whether the text waiting in ``inbox`` is appended now (see ``_consume``).

    A slow model's single delta (``inbox.spaced``) goes out at once only when it is handled
    promptly, within half an interval of its arrival. Found later, the event loop is what kept
    it waiting (many replies on a busy process), not the model: it waits for the interval like
    any other text. Otherwise an overloaded process would measure its own lag as the model's
    pace, write one append per token, and so lag more (seen as a collapse of the embedded
    mode's throughput from about 90,000 to under 10,000 tokens/s)."""
    return (
        inbox.chars >= s.flush_max_chars
        or now >= last_flush + s.flush_interval
        or (inbox.spaced and now - inbox.last_text_at < s.flush_interval / 2)
    )


def _gone(item: WorkItem) -> Outcome:
    log.info(
        "the session was deleted; nothing left to answer",
        extra={"session_id": item.session_id, "message_id": item.message_id},
    )
    return Outcome.GONE


# How many times a worker looks at a lease that changes hands under it before it leaves the
# delivery to whoever holds it now (it is not acknowledged, so nothing is lost).
_LEASE_LOOKS = 8


class _ReplyInProgress:
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
        self.inbox = ReplyInbox()
        self.last_flush = -math.inf
        self.last_io = 0.0
        self.last_keepalive = 0.0
        self.usage: Usage | None = None
        self.said: list[str] = []
        self.prompt_tokens = 0  # estimated, for a reply that ends without a usage report

    @property
    def sid(self) -> str:
        return self.item.session_id

    @property
    def mid(self) -> str:
        return self.item.message_id

    def _now(self) -> float:
        return self.gen.clock.monotonic()

    @property
    def limits(self) -> decisions.CommandLimits:
        return self.gen.service.settings.limits

    async def _write(self, decide: Callable[[SessionView], list[Event]]) -> None:
        await self.gen.service.execute(self.sid, self.view, decide)
        self.last_io = self._now()

    def _cancel_requested(self) -> bool:
        found = self.view.find_turn(self.mid)
        return found is not None and found[1].cancel_requested

    def prepare(self, view: SessionView | BaseException | None) -> CompletionRequest | None:
        """Take the session's view as loaded (its whole history, while the generator's
        ``whole_views`` turn is held: the load's error is raised here, ``None`` is a session
        that does not exist) and build the request; ``None`` when the message needs no
        answer."""
        if isinstance(view, BaseException):
            raise view
        if view is None:
            raise SessionNotFound(self.sid)
        self.view = view
        if view.find_turn(self.mid) is None:
            return None
        return self._prompt()  # from here on, the turn only

    async def run(self, request: CompletionRequest) -> Outcome:
        # The model is asked at once, while the reply's start is being written: its first
        # words wait in the inbox until the start is in the log, and the time to first token
        # loses one round trip to storage. A start that cannot be written stops the model.
        producer = self._produce(self.gen.llm.stream(request))
        try:
            started = await self._start()
            if started is not None:
                return started
            return await self._consume(self.inbox)
        except SessionFull:
            return await self._full(self.reply_id)
        except StaleReply:
            if self.item.conversation_id not in self.view.conversations:
                log.info(
                    "the conversation was deleted mid-reply; stopping",
                    extra={"session_id": self.sid, "reply_id": self.reply_id},
                )
                return Outcome.GONE
            log.warning(
                "reply taken over by another worker",
                extra={"session_id": self.sid, "reply_id": self.reply_id},
            )
            return Outcome.LOST
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def _start(self) -> Outcome | None:
        """Record the reply's start; an outcome when the reply must not go on."""
        now = self.gen.clock.now()
        try:
            await self._write(
                lambda v: decisions.start_reply(
                    v,
                    now,
                    message_id=self.mid,
                    reply_id=self.reply_id,
                    model=self.gen.llm.name,
                    limits=self.limits,
                )
            )
        except AlreadyAnswered:
            if self.item.conversation_id not in self.view.conversations:
                return Outcome.GONE
            return Outcome.ALREADY_ANSWERED
        except SessionFull:
            return await self._full(None)
        if self.view.find_turn(self.mid) is None:
            return Outcome.CANCELLED  # a cancel arrived before the reply started
        log.info(
            "reply started",
            extra={"session_id": self.sid, "message_id": self.mid, "reply_id": self.reply_id},
        )
        self.last_io = self.last_keepalive = self._now()
        return None

    async def prepare_again(self) -> CompletionRequest | None:
        """No turn waits for the message in the view as loaded. A view may be behind the log
        (a live feed's, which follows pushes still on their way): before the message is
        called answered (and its delivery acknowledged, for good), the log's tail is read
        once. ``None`` when the message really needs no answer."""
        newer = await self.gen.service.store.read(self.sid, after=self.view.version)
        if not newer:
            return None
        project(self.view, newer)
        if self.view.find_turn(self.mid) is None:
            return None
        return self._prompt()

    def _prompt(self) -> CompletionRequest:
        """The request, built from the whole view. From here on the reply needs its turn, not
        the session's history (starting it included), and keeps only that (nothing else here
        may hold on to the whole view), so what a reply holds does not grow with the session
        it answers."""
        conv = self.view.conversations[self.item.conversation_id]
        request = build_prompt(
            conv, self.mid, self.view.profile, self.gen.prompt, self.gen.prompt_memo
        )
        self.prompt_tokens = sum(
            estimate_message_tokens(m.content, self.gen.prompt.chars_per_token)
            for m in request.messages
        )
        self.view = self.view.for_turns()
        return request

    def _produce(self, chunks: AsyncIterator[LLMChunk]) -> asyncio.Task[None]:
        """A task that puts what the model says into the inbox, as it comes."""
        inbox = self.inbox
        max_chars = self.gen.settings.flush_max_chars
        spacing = self.gen.settings.flush_interval / 2
        clock = self.gen.clock

        async def pump() -> None:
            try:
                async for chunk in chunks:
                    inbox.put(chunk, max_chars, now=clock.monotonic(), spacing=spacing)
                inbox.put(END)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
                inbox.put(ModelFailure(exc))
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()

        return asyncio.create_task(pump(), name=f"llm:{self.reply_id}")

    def _next_deadline(self, inbox: ReplyInbox) -> float:
        s = self.gen.settings
        deadline = min(
            self.last_io + s.cancel_poll_interval,
            self.last_keepalive + s.keepalive_interval,
        )
        if inbox.chars:
            deadline = min(deadline, self.last_flush + s.flush_interval)
        return deadline

    async def _consume(self, inbox: ReplyInbox) -> Outcome:
        """Write what the model says. Text goes out at once when the last append ended at least
        ``flush_interval`` ago (the first token of a burst), or when it is a single token from a
        model whose tokens come on average at least half an interval apart (a slow model's every
        token, even when jitter brings one early). Otherwise it waits until the interval is
        over, so a fast model's tokens are batched into one append per interval, and tokens
        arriving while an append is in flight ride on the next one. The consumer wakes once per
        batch, not per token."""
        s = self.gen.settings
        while True:
            inbox.wake.clear()
            if inbox.ordered:
                item = inbox.ordered.popleft()
                if isinstance(item, str) and self._ends_after(inbox):
                    return await self._complete(item)  # the last text and the end together
                if isinstance(item, str):
                    await self._flush(item)
                elif item is END:
                    if self._cancel_requested():
                        return await self._cancelled()
                    return await self._complete()
                elif isinstance(item, ModelFailure):
                    return await self._failed(item.error)
                elif isinstance(item, ModelSwitch):
                    await self._switch(item)
                elif isinstance(item, UsageReport):
                    self.usage = item.usage
            else:
                now = self._now()
                if inbox.chars and text_due(inbox, now, self.last_flush, s):
                    await self._flush(inbox.take_text())
                elif now - self.last_io >= s.cancel_poll_interval:
                    await self._poll()
                elif now - self.last_keepalive >= s.keepalive_interval:
                    await self._keep_alive()
                else:
                    wait = self._next_deadline(inbox) - now
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that lands as the event is set, and a worker told to stop
                    # would then go on writing the reply.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await inbox.wake.wait()
                    continue
            if self._cancel_requested():
                return await self._cancelled()

    def _ends_after(self, inbox: ReplyInbox) -> bool:
        """Whether the model ended right after the text just taken (with at most its usage
        report between): take the report and the end, so that the text and the completion
        go in one append. Not when a cancel is known: the text is written, then the cancel."""
        ahead = inbox.ordered
        n = 0
        while n < len(ahead) and isinstance(ahead[n], UsageReport):
            n += 1
        if n == len(ahead) or ahead[n] is not END or self._cancel_requested():
            return False
        for _ in range(n):
            report = ahead.popleft()
            assert isinstance(report, UsageReport)
            self.usage = report.usage
        ahead.popleft()  # END
        return True

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
                limits=self.limits,
            )
        )

    async def _flush(self, text: str) -> None:
        if not text:
            return
        self.said.append(text)
        now = self.gen.clock.now()
        await self._write(
            lambda v: decisions.append_text(
                v, now, message_id=self.mid, reply_id=self.reply_id, text=text, limits=self.limits
            )
        )
        # The interval counts from the end of the append: under load, when appends take
        # longer, batches grow instead of the appends queueing up.
        self.last_flush = self.last_io

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

    async def _complete(self, text: str = "") -> Outcome:
        """Complete the reply, after ``text`` (the model's last words) in the same append. A
        cancel found while appending (the append met a newer log) still wins: the text is
        written, then the reply is cancelled."""
        if text:
            self.said.append(text)
        usage = self.usage or Usage(
            prompt_tokens=0,
            completion_tokens=estimate_text_tokens("".join(self.said)),
        )
        now = self.gen.clock.now()
        completing = True

        def decide(v: SessionView) -> list[Event]:
            nonlocal completing
            events = decisions.append_text(
                v, now, message_id=self.mid, reply_id=self.reply_id, text=text, limits=self.limits
            )
            found = v.find_turn(self.mid)
            completing = not text or found is None or not found[1].cancel_requested
            if completing:
                events += decisions.complete_reply(
                    v, now, message_id=self.mid, reply_id=self.reply_id, usage=usage
                )
            return events

        await self._write(decide)
        if text:
            self.last_flush = self.last_io
        if not completing:
            return await self._cancelled()
        # The view held here is partial and is not cached: the next load folds the reply's
        # events into the cached view and caches that.
        await self._charge(self.usage or self._estimated_usage())
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
        # What the model said before the cancel was noticed is part of the partial answer
        # (unless the session is full: the Stop is recorded all the same).
        with contextlib.suppress(SessionFull):
            await self._flush(self.inbox.take_all_text())
        now = self.gen.clock.now()
        await self._write(
            lambda v: (
                decisions.cancel_reply(v, now, message_id=self.mid, reply_id=self.reply_id)
                if v.find_turn(self.mid) is not None
                else []
            )
        )
        log.info("reply cancelled", extra={"session_id": self.sid, "reply_id": self.reply_id})
        await self._charge(self.usage or self._estimated_usage())
        return Outcome.CANCELLED

    async def _full(self, reply_id: str | None) -> Outcome:
        """The session's log reached its cap mid-reply: end the reply (a terminal event is
        always recorded), keeping what was said."""
        now = self.gen.clock.now()
        try:
            await self._write(
                lambda v: (
                    decisions.fail_reply(
                        v,
                        now,
                        message_id=self.mid,
                        reply_id=reply_id,
                        code="session_full",
                        reason="This session is full, so the answer stops here. Delete a "
                        "conversation to make room, or start a new session.",
                    )
                    if v.find_turn(self.mid) is not None
                    else []
                )
            )
        except StaleReply:
            return Outcome.LOST  # taken over meanwhile: the new owner ends it
        log.warning("reply stopped: the session is full", extra={"session_id": self.sid})
        return Outcome.FAILED

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
        if self.said:  # the model read the prompt and answered part of it
            await self._charge(self.usage or self._estimated_usage())
        return Outcome.FAILED

    def _estimated_usage(self) -> Usage:
        """What a reply that ended without a usage report cost, as far as can be told: the
        prompt sent and the text said."""
        said = estimate_text_tokens("".join(self.said), self.gen.prompt.chars_per_token)
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=said)

    async def _charge(self, usage: Usage) -> None:
        """Charge the reply's tokens (prompt and completion) to the budgets its message named.
        The API refuses new messages while one of them is spent. A budget that cannot be
        reached is left uncharged: the reply stands."""
        budgets, tokens = self.gen.budgets, usage.prompt_tokens + usage.completion_tokens
        if budgets is None or tokens <= 0:
            return
        for charge in self.item.charges:
            try:
                await budgets.charge(charge.key, charge.rate, tokens)
            except PortError as exc:
                log.warning(
                    "could not charge a reply's tokens to its budget",
                    extra={"session_id": self.sid, "reply_id": self.reply_id, "error": exc.code},
                )
