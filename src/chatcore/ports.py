"""The ports: what the core needs from the world, and nothing about how it is provided.

Every port has an in-memory adapter (``chatcore_adapters.memory``) that is a real
implementation, and every adapter of a port passes the same contract suite
(``tests/contract``). Adapters raise only the errors of :mod:`chatcore.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from chatcore.events import Event, Recorded, Usage
from chatcore.gcra import Rate, Refused, Step
from chatcore.view import SessionView


@runtime_checkable
class CurrentViews(Protocol):
    """Views a process keeps up to date from the appends it is pushed (the API: the sessions it
    holds sockets for), so that reading one costs no round trip. A view handed out is folded
    from the session's log up to the view's version; that version may be behind the log (a
    push on its way), which an append at it finds out as a conflict, like any stale view."""

    def current(self, session_id: str) -> SessionView | None:
        """A copy of the session's view (the caller may change it), or ``None``."""
        ...

    def offer(self, session_id: str, view: SessionView) -> None:
        """A view just folded from the log: kept (as a copy) if this process follows the
        session and the view is exactly where its pushes are, else ignored."""
        ...


@runtime_checkable
class EventStore(Protocol):
    """The append-only log of every session (``chat:<session_id>`` in Redis).

    Append-only, with two exceptions that remove content for good (a deletion must not leave
    a user's text anywhere): :meth:`erase` (a conversation) and :meth:`delete_session`. An
    adapter may also be built with a retention time: a log that has had no append for that
    long disappears by itself, as if :meth:`delete_session` had been called (without a
    farewell), and every append (an erase's tombstone included) starts that time afresh.
    """

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        """Append ``events`` atomically if the log's last position is ``expected_version``
        (``None``: the log must be empty). Raise :class:`ConcurrencyConflict` otherwise."""
        ...

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        """Events strictly after ``after`` (all when ``None``), oldest first, at most ``limit``."""
        ...

    async def last_position(self, session_id: str) -> str | None:
        """Position of the newest event, ``None`` for an empty or unknown session."""
        ...

    async def erase(
        self,
        session_id: str,
        positions: Sequence[str],
        *,
        tombstone: Sequence[Event],
        expected_version: str,
    ) -> list[Recorded]:
        """Remove the events at ``positions`` from the log for good and append ``tombstone``
        (at least one event), in one atomic step, if the log's last position is
        ``expected_version``; else raise :class:`ConcurrencyConflict` and change nothing.

        "For good" means the stored bytes are gone, not flagged: a store whose deletion only
        marks records (a Redis stream's ``XDEL``) rewrites what it keeps. Every other event
        keeps its position, and the tombstone's positions come after ``expected_version``
        whatever was erased. Positions that are not in the log are ignored; erasing every
        event of the log is refused (``ValueError``): a session keeps at least its first.
        Subscribers receive the tombstone as an ordinary append, after ``expected_version``.
        """
        ...

    async def delete_session(self, session_id: str, *, farewell: Event | None = None) -> bool:
        """Delete the session's whole log for good (``False``: there was none). A
        ``farewell`` event is first handed to live subscribers as one more append (after the
        log's last position) and is not kept. Appends at a version the deleted log had are
        conflicts from then on, so nothing written later brings any of it back."""
        ...

    def subscribe(self, listener: AppendListener) -> LiveSubscription:
        """A new push subscription to appends, handing each to ``listener`` (not connected
        until its first ``follow``)."""
        ...


@dataclass(frozen=True, slots=True)
class Appended:
    """One append as a subscriber receives it: ``records`` were appended to the log of
    ``session_id`` right after position ``after`` (``None``: the log was empty). A subscriber
    that knows the session up to ``after`` is up to date once it takes ``records``; one that
    knows less has missed something and reads the gap from the log."""

    session_id: str
    after: str | None
    records: Sequence[Recorded]


AppendListener = Callable[[Appended], None]
"""Called with every append of a followed session the moment it arrives, in the task that
received it (one task switch fewer between an append and a socket). It must not block. An
exception it raises is logged and that append dropped; the next one names a position the
listener did not see, so a subscriber that checks ``after`` reads the gap from the log."""


class LiveSubscription(Protocol):
    """Appends pushed to a server as they happen, for the sessions it follows, to the listener
    given to :meth:`EventStore.subscribe`: the live feed's source. One subscription per
    process, whatever the number of sessions or sockets."""

    async def follow(self, session_id: str) -> None:
        """Receive the session's appends: once this returns, every later append reaches the
        listener. Raises :class:`~chatcore.errors.PortError` when that cannot be promised; the
        subscription is then lost (:meth:`wait_lost` returns) until :meth:`reconnect`."""
        ...

    async def unfollow(self, session_id: str) -> None:
        """Stop receiving the session's appends (some may still arrive for a while)."""
        ...

    async def wait_lost(self) -> str:
        """Wait until the subscription is lost (its connection dropped: appends may have been
        missed for every followed session) and say why. The caller then :meth:`reconnect`s
        and reads from the log what it may have missed."""
        ...

    async def reconnect(self) -> None:
        """Re-establish a lost subscription, following the same sessions: once it returns,
        every later append reaches the listener. Raises
        :class:`~chatcore.errors.PortError` while that fails."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CachedView:
    view: SessionView

    @property
    def version(self) -> str | None:
        return self.view.version


@runtime_checkable
class SessionCache(Protocol):
    """The disposable projection cache (``session:<session_id>``): a view and its version."""

    async def get(self, session_id: str) -> CachedView | None:
        """The cached view, or ``None`` when missing, expired, forgotten or unreadable."""
        ...

    async def put(self, session_id: str, view: SessionView) -> None:
        """Store ``view``, unless the entry holds a newer version (positions compared as
        positions; an unreadable entry counts as none) or the session was forgotten. So a
        reader that folded the log before a deletion can never write the deleted content
        back over the view written after it."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove the entry (a later ``put`` stores again)."""
        ...

    async def forget(self, session_id: str) -> None:
        """Remove the entry, and refuse every ``put`` for the session for the cache's idle
        time (a deleted session: a reader racing the deletion must not cache its content)."""
        ...


class Charge(BaseModel):
    """A model-spend budget to charge a reply's tokens to: the limit's key and its rate, as
    the API that accepted the message knew them (a worker needs no budget settings)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    tokens_per_minute: float = Field(gt=0)
    burst: float = Field(ge=1)

    @property
    def rate(self) -> Rate:
        return Rate(limit=self.tokens_per_minute, period=60.0, burst=self.burst)


class WorkItem(BaseModel):
    """ "Answer message ``message_id`` of ``session_id``".

    Work items are stored (a Redis stream), so an API and a worker of different versions may
    meet over one: fields this code does not know are ignored (``extra="ignore"``), and a new
    field must be optional. ``charges`` came in that way: the budgets the reply's tokens go
    to; a queue writes it only when there is one (``model_dump_json(exclude_defaults=True)``),
    so workers older than it still read the items that carry none."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str
    conversation_id: str
    message_id: str
    enqueued_at: datetime
    charges: tuple[Charge, ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a work item to a consumer. ``attempt`` counts deliveries from 1.
    ``delivery_id`` names the queue entry delivered: every delivery of one entry has the same,
    and no two entries of a queue share one (a worker tells its own delivery come back by it)."""

    item: WorkItem
    delivery_id: str
    attempt: int
    consumer: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    item: WorkItem
    reason: str
    attempts: int
    at: datetime


@runtime_checkable
class WorkQueue(Protocol):
    """Reply work shared by any number of workers (a Redis consumer group).

    Items may be delivered more than once; the worker's use case makes that harmless.
    """

    async def enqueue(self, item: WorkItem) -> None: ...

    async def recover(self, consumer: str) -> list[Delivery]:
        """Deliver again what ``consumer`` received and never acknowledged (call it once when
        a consumer with a stable name starts again)."""
        ...

    async def claim(self, consumer: str, *, count: int, block: float) -> list[Delivery]:
        """Up to ``count`` deliveries for ``consumer``: first items left unacknowledged longer
        than the reclaim timeout by another consumer (presumed dead), then new items, waiting
        at most ``block`` seconds when there are none."""
        ...

    async def touch(self, delivery: Delivery) -> bool:
        """Tell the queue the delivery is still being worked on (resets its idle time).
        ``False`` when another consumer has taken it over."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Acknowledge ``delivery`` and keep it, with ``reason``, in the dead-letter list."""
        ...


@runtime_checkable
class DeadLetterLog(Protocol):
    """The messages given up on (:meth:`WorkQueue.dead_letter`), newest last, for an operator
    (``chatcore worker --dead-letters``). The work queue's adapters keep it."""

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]: ...


@runtime_checkable
class IntentJournal(Protocol):
    """Messages on their way in: an intent is written before a message is appended and cleared
    once its work is queued, so a submitter that dies between the two steps leaves a trace a
    sweeper finds (:meth:`chatcore.service.ChatService.sweep_intents`)."""

    async def record(self, session_id: str, client_message_id: str) -> None: ...

    async def clear(self, session_id: str, client_message_id: str) -> None: ...

    async def stale(self, older_than: float) -> list[tuple[str, str]]:
        """Intents older than ``older_than`` seconds: ``(session_id, client_message_id)``."""
        ...


@runtime_checkable
class Intake(Protocol):
    """Recording a message and queueing its answer in one step. Offered where the log and the
    queue live in one place (one process, one SQLite file, one Redis server): accepting a
    message then needs no intent (:class:`IntentJournal`) and costs one round trip. Where they
    live apart (a Redis Cluster, whose log and queue keys are in different slots) there is
    none, and the service brackets the two steps with an intent instead."""

    async def append_and_enqueue(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_version: str | None,
        item: WorkItem,
    ) -> list[Recorded]:
        """:meth:`EventStore.append` ``events`` and :meth:`WorkQueue.enqueue` ``item``: both
        happen or neither does. At a stale version, :class:`ConcurrencyConflict` and nothing
        is queued. A retried call (a connection lost after the store applied it) is applied
        once, as an append is."""
        ...


@runtime_checkable
class Leases(Protocol):
    """Short exclusive leases: who is generating the reply to a message right now."""

    async def acquire(self, key: str, owner: str, ttl: float) -> str | None:
        """Take the lease if it is free. Returns ``None`` on success, else the current owner."""
        ...

    async def replace(self, key: str, expected_owner: str, owner: str, ttl: float) -> bool:
        """Hand the lease from ``expected_owner`` to ``owner`` (compare-and-set)."""
        ...

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        """Extend a lease ``owner`` holds; ``False`` if it lost it."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Give the lease up if ``owner`` still holds it."""
        ...


@runtime_checkable
class RateLimits(Protocol):
    """Limits kept per key with the generic cell rate algorithm (:mod:`chatcore.gcra`), in a
    store every process shares (Redis), so N processes enforce the limit one would.

    A key is 1 to 200 of ``A-Za-z0-9_.:-`` (:class:`~chatcore.errors.InvalidIdentifier`
    otherwise). A key's state lasts only as long as it matters: one left alone until its
    allowance is full again is forgotten, and behaves as a new one."""

    async def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        """Take ``cost`` units if they fit: 0.0 when allowed (and counted), else the seconds
        until they would fit (nothing counted). ``ValueError`` if ``cost`` exceeds the burst."""
        ...

    async def check(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        """What :meth:`acquire` would answer, counting nothing."""
        ...

    async def charge(self, key: str, rate: Rate, cost: float) -> None:
        """Count ``cost`` units whether they fit or not (post-paid usage: the key may go into
        debt, and :meth:`acquire`/:meth:`check` refuse until it has run off)."""
        ...

    async def admit(self, steps: Sequence[Step]) -> Refused | None:
        """Take one request through several limits at once: ``None`` when every step fits
        (the counting ones are then counted), else the first step, in order, that does not.

        A refusal counts nothing where the adapter keeps every key in one place (in memory,
        one Redis server: one atomic step, one round trip). On a Redis Cluster the keys live
        in different slots: the steps are taken one by one, and a refusal leaves counted the
        steps before it (the limits err on the strict side)."""
        ...


# --- the LLM port -----------------------------------------------------------------------------


class PromptMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class CompletionRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: tuple[PromptMessage, ...]
    # Text already said by an earlier attempt (mid-stream failover): continue after it.
    continue_from: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    model: str


@dataclass(frozen=True, slots=True)
class ModelSwitch:
    """The stream continues on another model (the one before failed mid-answer)."""

    from_model: str
    to_model: str
    reason: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    usage: Usage
    model: str


LLMChunk = TextDelta | ModelSwitch | UsageReport


@runtime_checkable
class LLM(Protocol):
    """A chat model: streams text deltas, then exactly one usage report, then ends.

    Failure raises :class:`chatcore.errors.LLMError`. Closing the iterator (``aclose()``) or
    cancelling the task consuming it stops the upstream call promptly.
    """

    @property
    def name(self) -> str:
        """The model name shown to users (e.g. ``"demo (offline)"``)."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]: ...


# --- small ports ------------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float: ...


class IdGenerator(Protocol):
    def session_id(self) -> str:
        """An unguessable session id (at least 128 random bits, URL-safe)."""
        ...

    def new_id(self, prefix: str) -> str:
        """A unique id for messages, replies and conversations, e.g. ``msg_...``."""
        ...


class WorkerStatus(BaseModel):
    """A worker's liveness record, refreshed every heartbeat interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_id: str
    started_at: datetime
    beat_at: datetime
    state: Literal["running", "stopping"] = "running"
    in_flight: tuple[str, ...] = ()
    completed: int = 0
    failed: int = 0
    host: str = ""
    pid: int = 0


@runtime_checkable
class Heartbeats(Protocol):
    async def beat(self, status: WorkerStatus, *, ttl: float) -> None:
        """Record ``status``; it disappears ``ttl`` seconds after the last beat."""
        ...

    async def workers(self) -> list[WorkerStatus]:
        """Every worker that beat within its ttl."""
        ...

    async def remove(self, worker_id: str) -> None: ...
