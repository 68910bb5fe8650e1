"""The worker loop: claim reply work, run generations concurrently, acknowledge, repeat.

It knows only ports, so the same loop runs inside ``chatcore serve`` (in-memory queue) and in
``chatcore worker`` processes (a Redis consumer group). It never blocks without a bound: every
claim has a block time, every storage error is logged and retried with backoff and jitter, and
a delivery that keeps failing is dead-lettered with a reply-failed event the user can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatcore.backoff import Backoff
from chatcore.errors import PortError
from chatcore.generation import Outcome, ReplyGenerator
from chatcore.ports import Clock, Delivery, Heartbeats, WorkerStatus, WorkQueue
from chatcore.service import ChatService

log = logging.getLogger(__name__)

UNDELIVERABLE_REASON = (
    "Sorry, this message could not be answered after several attempts. Please try again later."
)


class WorkerSettings(BaseModel):
    """How a worker loop claims, retries and reports. Declared once: the bundled API's
    ``worker`` settings (``CHATCORE_WORKER__*``) are this model plus what only a process needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(default=16, ge=1, le=1024, description="Replies generated at once.")
    claim_block: float = Field(
        default=2.0, gt=0, le=60, description="Seconds one claim waits for new work."
    )
    max_attempts: int = Field(
        default=5, ge=1, le=100, description="Deliveries of a message before it is dead-lettered."
    )
    fresh_delivery: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="A first delivery whose claim took at most this many seconds from its "
        "start (so it did not wait for work) is worked on without asking the queue whether it "
        "is still this worker's: a busy worker saves a round trip per reply. One that waited "
        "(the process may have frozen in the wait), or was taken over before, asks. Keep it "
        "well below the queue's reclaim time.",
    )
    heartbeat_interval: float = Field(
        default=2.0, gt=0, le=60, description="Seconds between a worker's heartbeats."
    )
    heartbeat_ttl: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a heartbeat stays listed; a worker silent this long is gone.",
    )
    sweep_interval: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="Seconds between two looks for messages whose submitter stopped between "
        "recording and queueing them.",
    )
    intent_age: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="Seconds after which such a message counts as left behind and is queued.",
    )
    backoff_initial: float = Field(
        default=0.1, gt=0, le=10, description="First pause after a failed storage call."
    )
    backoff_max: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Longest pause between retries while storage is unreachable.",
    )

    @model_validator(mode="after")
    def _heartbeat_outlives_its_interval(self) -> WorkerSettings:
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise ValueError("heartbeat_ttl must be longer than heartbeat_interval")
        return self


@dataclass(slots=True)
class WorkerStats:
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    dead_lettered: int = 0
    errors: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


class WorkerLoop:
    def __init__(
        self,
        *,
        queue: WorkQueue,
        generator: ReplyGenerator,
        service: ChatService,
        clock: Clock,
        worker_id: str,
        settings: WorkerSettings | None = None,
        heartbeats: Heartbeats | None = None,
        host: str = "",
        pid: int = 0,
    ) -> None:
        self.queue = queue
        self.generator = generator
        self.service = service
        self.clock = clock
        self.worker_id = worker_id
        self.settings = settings or WorkerSettings()
        self.heartbeats = heartbeats
        self.host = host
        self.pid = pid
        self.stats = WorkerStats()
        self.started_at: datetime = clock.now()
        self._inflight: dict[asyncio.Task[None], Delivery] = {}
        self._delivery_ids: set[str] = set()  # of the deliveries in _inflight
        self._stopping = False
        self._slot_freed = asyncio.Event()

    @property
    def in_flight(self) -> list[Delivery]:
        return list(self._inflight.values())

    async def run(self, stop: asyncio.Event, *, grace: float = 30.0) -> None:
        """Work until ``stop`` is set, then finish what is in flight within ``grace`` seconds;
        whatever is still running after that is cancelled and left unacknowledged, so another
        worker reclaims it."""
        side = asyncio.create_task(self._housekeeping(stop), name=f"housekeeping:{self.worker_id}")
        try:
            await self._recover()
            await self._claim_loop(stop)
        finally:
            self._stopping = True
            await self._drain(grace)
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await side
            await self._final_beat()

    async def _recover(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while True:
            try:
                deliveries = await self.queue.recover(self.worker_id)
            except PortError as exc:
                await self._pause("recover", exc, backoff)
                continue
            for delivery in deliveries:
                self._spawn(delivery)
            if deliveries:
                log.info(
                    "recovered unacknowledged work",
                    extra={"worker_id": self.worker_id, "count": len(deliveries)},
                )
            return

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        stop_wait = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                free = self.settings.concurrency - len(self._inflight)
                if free <= 0:
                    self._slot_freed.clear()
                    slot = asyncio.create_task(self._slot_freed.wait())
                    await asyncio.wait({slot, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    slot.cancel()
                    continue
                started = self.clock.monotonic()
                claim = asyncio.create_task(
                    self.queue.claim(self.worker_id, count=free, block=self.settings.claim_block)
                )
                await asyncio.wait({claim, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not claim.done():
                    claim.cancel()
                    with contextlib.suppress(asyncio.CancelledError, PortError):
                        # A claim cut short may still have delivered: take what it got.
                        for delivery in await claim:
                            self._spawn(delivery, started)
                    break
                try:
                    deliveries = claim.result()
                except PortError as exc:
                    await self._pause("claim", exc, backoff)
                    continue
                backoff.reset()
                for delivery in deliveries:
                    self._spawn(delivery, started)
        finally:
            stop_wait.cancel()

    async def _pause(self, what: str, exc: PortError, backoff: Backoff) -> None:
        delay = backoff.next_delay()
        self.stats.errors += 1
        log.warning(
            "work queue unavailable; retrying",
            extra={
                "worker_id": self.worker_id,
                "during": what,
                "error": str(exc),
                "retry_in": delay,
            },
        )
        await asyncio.sleep(delay)

    def _spawn(self, delivery: Delivery, claimed: float | None = None) -> None:
        """Work on ``delivery``, whose claim started at ``claimed`` (monotonic; ``None``: not
        a fresh claim, e.g. recovered at start-up)."""
        if delivery.delivery_id in self._delivery_ids:
            # Our own delivery came back (we were frozen past the reclaim timeout and then
            # reclaimed it ourselves): the task already working on it carries on.
            log.info(
                "delivery already in progress here",
                extra={"worker_id": self.worker_id, "message_id": delivery.item.message_id},
            )
            return
        task = asyncio.create_task(
            self._handle(delivery, claimed), name=f"reply:{delivery.item.message_id}"
        )
        self._inflight[task] = delivery
        self._delivery_ids.add(delivery.delivery_id)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery = self._inflight.pop(task, None)
        if delivery is not None:
            self._delivery_ids.discard(delivery.delivery_id)
        self._slot_freed.set()

    async def _handle(self, delivery: Delivery, claimed: float | None) -> None:
        item = delivery.item
        ctx = {
            "worker_id": self.worker_id,
            "session_id": item.session_id,
            "message_id": item.message_id,
            "attempt": delivery.attempt,
        }
        try:
            # A first delivery from a claim that returned at once is ours (the queue hands it
            # to one worker and reclaims it only after reclaim_after). One from a claim that
            # waited (a process frozen in the wait cannot tell), or taken over from another
            # worker, is checked with the queue first.
            fresh = (
                claimed is not None
                and self.clock.monotonic() - claimed <= self.settings.fresh_delivery
            )
            if not (fresh and delivery.attempt == 1) and not await self.queue.touch(delivery):
                # A delivery that reached us late (it was read just before this process froze,
                # and another worker has reclaimed it since): it is not ours to work on.
                log.warning("delivery already taken over by another worker; skipping", extra=ctx)
                return
            if delivery.attempt > self.settings.max_attempts:
                await self._give_up(delivery, ctx)
                return
            outcome = await self.generator.generate(
                item,
                delivery_id=delivery.delivery_id,
                owner=self.worker_id,
                keepalive=lambda: self.queue.touch(delivery),
            )
            self.stats.outcomes[outcome.value] = self.stats.outcomes.get(outcome.value, 0) + 1
            if outcome is Outcome.COMPLETED:
                self.stats.completed += 1
            elif outcome is Outcome.FAILED:
                self.stats.failed += 1
            elif outcome is Outcome.CANCELLED:
                self.stats.cancelled += 1
            if outcome is Outcome.LOST:
                log.warning("delivery taken over by another worker; not acknowledging", extra=ctx)
                return
            await self.queue.ack(delivery)
        except asyncio.CancelledError:
            log.warning("reply interrupted by shutdown; it will be reclaimed", extra=ctx)
            raise
        except Exception:
            # Left unacknowledged on purpose: the queue delivers it again after the reclaim
            # timeout, and after max_attempts deliveries it is dead-lettered.
            self.stats.errors += 1
            log.exception("reply generation crashed; the delivery will be retried", extra=ctx)

    async def _give_up(self, delivery: Delivery, ctx: dict[str, object]) -> None:
        reason = f"delivered {delivery.attempt} times without an answer"
        await self.service.fail_undeliverable(delivery.item, reason=UNDELIVERABLE_REASON)
        await self.queue.dead_letter(delivery, reason)
        self.stats.dead_lettered += 1
        log.error("message dead-lettered", extra={**ctx, "reason": reason})

    async def _drain(self, grace: float) -> None:
        if not self._inflight:
            return
        log.info(
            "stopping: finishing replies in flight",
            extra={"worker_id": self.worker_id, "count": len(self._inflight), "grace": grace},
        )
        await self._beat()
        tasks = set(self._inflight)  # some may have finished during the beat
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        # Past the grace period: cancel what is left (it stays unacknowledged, so another
        # worker takes it over). A cancellation can be lost in a library's wait, so ask again
        # until each task has ended.
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.2)

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            worker_id=self.worker_id,
            started_at=self.started_at,
            beat_at=self.clock.now(),
            state="stopping" if self._stopping else "running",
            in_flight=tuple(
                f"{d.item.session_id}/{d.item.message_id}" for d in self._inflight.values()
            ),
            completed=self.stats.completed,
            failed=self.stats.failed,
            host=self.host,
            pid=self.pid,
        )

    async def _beat(self) -> None:
        if self.heartbeats is None:
            return
        try:
            await self.heartbeats.beat(self.status(), ttl=self.settings.heartbeat_ttl)
        except PortError as exc:
            log.warning(
                "could not write the heartbeat",
                extra={"worker_id": self.worker_id, "error": str(exc)},
            )

    async def _final_beat(self) -> None:
        if self.heartbeats is None:
            return
        try:
            await self.heartbeats.remove(self.worker_id)
        except PortError as exc:
            log.warning(
                "could not remove the heartbeat",
                extra={"worker_id": self.worker_id, "error": str(exc)},
            )

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        s = self.settings
        last_sweep = self.clock.monotonic()
        while not stop.is_set():
            await self._beat()
            if self.clock.monotonic() - last_sweep >= s.sweep_interval:
                last_sweep = self.clock.monotonic()
                try:
                    repaired = await self.service.sweep_intents(older_than=s.intent_age)
                except PortError as exc:
                    log.warning(
                        "intent sweep failed",
                        extra={"worker_id": self.worker_id, "error": str(exc)},
                    )
                else:
                    if repaired:
                        log.warning(
                            "sweep queued messages left behind",
                            extra={"worker_id": self.worker_id, "count": repaired},
                        )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=s.heartbeat_interval)
