"""The application layer: the use cases of a chat session, over the ports.

Every command follows the same path: read the session (cache + events after its version),
decide on the view, append the decided events at the view's version, and on a conflict fold the
newer events and decide again. Nothing here knows what stores the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chatcore import decisions
from chatcore.decisions import KEEP, CommandLimits, Duplicate, ProfileChange
from chatcore.errors import (
    ConcurrencyConflict,
    DomainError,
    PortError,
    SessionNotFound,
    UnknownConversation,
)
from chatcore.events import ConversationDeleted, Event, Recorded, SessionDeleted
from chatcore.ids import parse_position, position_after, validate_plain_id, validate_session_id
from chatcore.ports import (
    Charge,
    Clock,
    CurrentViews,
    EventStore,
    IdGenerator,
    Intake,
    IntentJournal,
    SessionCache,
    WorkItem,
    WorkQueue,
)
from chatcore.prompt import PromptSettings
from chatcore.view import SessionView, fold, project

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    limits: CommandLimits = field(default_factory=CommandLimits)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    max_append_attempts: int = 64
    # A message accepted this long ago with no reply started is queued again when its session
    # is restored (repairs a crash between "append" and "enqueue"; duplicates are harmless).
    requeue_after: float = 10.0
    # A session records at most one "client came back" event per this many seconds.
    restore_record_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class OpenedSession:
    session_id: str
    conversation_id: str
    view: SessionView
    recorded: list[Recorded]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What a client is told when its message is accepted (delivery confirmation)."""

    conversation_id: str
    message_id: str
    client_message_id: str
    position: str
    duplicate: bool


class ChatService:
    def __init__(
        self,
        *,
        store: EventStore,
        cache: SessionCache,
        queue: WorkQueue,
        intents: IntentJournal,
        clock: Clock,
        ids: IdGenerator,
        settings: ServiceSettings | None = None,
        intake: Intake | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.queue = queue
        self.intents = intents
        # Appending a message and queueing its answer in one step, where store and queue live
        # together: then no intent brackets the two (see _accept).
        self.intake = intake
        # Views kept current by this process's live feed (the API sets it): load() then
        # costs no round trip for a session it follows.
        self.views: CurrentViews | None = None
        self.clock = clock
        self.ids = ids
        self.settings = settings or ServiceSettings()

    # --- reading ------------------------------------------------------------------------------

    async def load(self, session_id: str) -> SessionView:
        """The session's current view: the cached projection plus the events after it.

        The cache is only a shortcut (I2): a missing, unreadable, foreign or "future" entry is
        ignored and the view is rebuilt from the log, then written back.
        """
        validate_session_id(session_id)
        if self.views is not None:
            current = self.views.current(session_id)
            if current is not None and current.opened:
                return current
        cached = None
        try:
            cached = await self.cache.get(session_id)
        except PortError as exc:
            log.warning(
                "session cache unreadable, replaying the log",
                extra={"session_id": session_id, "error": exc.code},
            )
        view = SessionView()
        if cached is not None and cached.view.session_id == session_id:
            view = cached.view
        elif cached is not None:
            await self._drop_cached(session_id)  # another session's view: never ours to keep
        tail = await self.store.read(session_id, after=view.version)
        if not tail and view.version is not None:
            # Trust a cache only if its version really is a position of this log (the log
            # may also be gone: the session was deleted, or expired).
            last = await self.store.last_position(session_id)
            if last is None or position_after(view.version, last):
                await self._drop_cached(session_id)
                view = SessionView()
                tail = await self.store.read(session_id)
        project(view, tail)
        if not view.opened:
            raise SessionNotFound(session_id)
        if tail:
            await self._remember(session_id, view)
        if self.views is not None:
            self.views.offer(session_id, view)
        return view

    async def _drop_cached(self, session_id: str) -> None:
        """Remove a cache entry that must not be used (the cache refuses to replace a view
        with an older one, so an entry "ahead of the log" would otherwise stay)."""
        try:
            await self.cache.delete(session_id)
        except PortError as exc:
            log.warning(
                "could not delete an unusable cache entry",
                extra={"session_id": session_id, "error": exc.code},
            )

    async def _remember(self, session_id: str, view: SessionView) -> None:
        if view.partial:
            # A programming error, not a storage one: it would cache a session without its
            # history, and every later reader would trust it.
            raise ValueError("a partial view (SessionView.for_turns) is never cached")
        try:
            await self.cache.put(session_id, view)
        except PortError as exc:
            log.warning(
                "could not write the session cache",
                extra={"session_id": session_id, "error": exc.code},
            )

    async def events_after(
        self, session_id: str, after: str | None, *, limit: int | None = None
    ) -> list[Recorded]:
        validate_session_id(session_id)
        if after is not None:
            parse_position(after)
        return await self.store.read(session_id, after=after, limit=limit)

    # --- writing ------------------------------------------------------------------------------

    async def execute(
        self,
        session_id: str,
        view: SessionView,
        decide: Callable[[SessionView], Sequence[Event]],
        *,
        work: WorkItem | None = None,
    ) -> list[Recorded]:
        """Decide on ``view`` and append at its version, re-deciding after each conflict.
        With ``work`` (and an intake), the item is queued in the same step as the append, and
        not at all when nothing was decided.

        ``view`` is brought up to date in place, including the appended events.
        """
        if work is not None and self.intake is None:
            raise ValueError("queueing with an append needs an intake")
        attempts = self.settings.max_append_attempts
        for _ in range(attempts):
            events = list(decide(view))
            if not events:
                return []
            try:
                if work is not None and self.intake is not None:
                    recorded = await self.intake.append_and_enqueue(
                        session_id, events, expected_version=view.version, item=work
                    )
                else:
                    recorded = await self.store.append(
                        session_id, events, expected_version=view.version
                    )
            except ConcurrencyConflict as conflict:
                newer = await self.store.read(session_id, after=view.version)
                if not newer:
                    # Nothing after the view's version, yet not at it: the log is gone (the
                    # session was deleted or expired), or the view is not of this log.
                    if await self.store.last_position(session_id) is None:
                        raise SessionNotFound(session_id) from conflict
                    raise
                project(view, newer)
                continue
            project(view, recorded)
            return recorded
        raise ConcurrencyConflict(session_id, view.version, None)

    async def open_session(
        self, *, display_name: str | None = None, language: str | None = None
    ) -> OpenedSession:
        session_id = self.ids.session_id()
        conversation_id = self.ids.new_id("conv")
        now = self.clock.now()
        view = SessionView()
        events: list[Event] = decisions.open_session(session_id, conversation_id, now)
        if display_name is not None or language is not None:
            # Validate the profile against an opened view before anything is written.
            probe = SessionView(session_id=session_id)
            events += decisions.update_profile(
                probe,
                now,
                display_name=KEEP if display_name is None else display_name,
                language=KEEP if language is None else language,
                limits=self.settings.limits,
            )
        recorded = await self.store.append(session_id, events, expected_version=None)
        project(view, recorded)
        await self._remember(session_id, view)
        log.info("session opened", extra={"session_id": session_id})
        return OpenedSession(session_id, conversation_id, view, recorded)

    async def restore_session(self, session_id: str, *, last_seen: str | None) -> SessionView:
        """A client is back: record it, and re-queue answers that should have started by now."""
        if last_seen is not None:
            parse_position(last_seen)
        view = await self.load(session_id)
        now = self.clock.now()
        interval = timedelta(seconds=self.settings.restore_record_interval)
        limits = self.settings.limits
        await self.execute(
            session_id,
            view,
            lambda v: decisions.restore_session(
                v, now, last_seen, min_interval=interval, limits=limits
            ),
        )
        await self.requeue_stalled(session_id, view)
        return view

    async def revoke_tokens(self, session_id: str) -> tuple[int, list[Recorded]]:
        """Log the session out everywhere: records a new token generation (tokens of an older
        one are refused by whoever checks them) and returns it."""
        view = await self.load(session_id)
        now = self.clock.now()
        recorded = await self.execute(session_id, view, lambda v: decisions.revoke_tokens(v, now))
        log.info("session tokens revoked", extra={"session_id": session_id})
        return view.token_generation, recorded

    async def requeue_stalled(self, session_id: str, view: SessionView) -> int:
        now = self.clock.now()
        count = 0
        for conv, turn in view.pending_turns():
            if turn.reply is not None:
                continue  # a worker holds it; if that worker died, the queue reclaims its item
            submitted = turn.since or next(
                (m.at for m in reversed(conv.messages) if m.message_id == turn.message_id), None
            )
            if submitted is None:
                continue
            if (now - submitted).total_seconds() < self.settings.requeue_after:
                continue
            await self._enqueue(session_id, conv.conversation_id, turn.message_id)
            count += 1
            log.info(
                "re-queued a stalled message",
                extra={"session_id": session_id, "message_id": turn.message_id},
            )
        return count

    def _work_item(
        self,
        session_id: str,
        conversation_id: str,
        message_id: str,
        charges: Sequence[Charge] = (),
    ) -> WorkItem:
        return WorkItem(
            session_id=session_id,
            conversation_id=conversation_id,
            message_id=message_id,
            enqueued_at=self.clock.now(),
            charges=tuple(charges),
        )

    async def _enqueue(
        self,
        session_id: str,
        conversation_id: str,
        message_id: str,
        charges: Sequence[Charge] = (),
    ) -> None:
        await self.queue.enqueue(self._work_item(session_id, conversation_id, message_id, charges))

    async def update_profile(
        self,
        session_id: str,
        *,
        display_name: ProfileChange = KEEP,
        language: ProfileChange = KEEP,
    ) -> list[Recorded]:
        """Change the fields given (``None`` clears one; one left out keeps its value)."""
        view = await self.load(session_id)
        now = self.clock.now()
        return await self.execute(
            session_id,
            view,
            lambda v: decisions.update_profile(
                v, now, display_name=display_name, language=language, limits=self.settings.limits
            ),
        )

    async def start_conversation(
        self, session_id: str, *, conversation_id: str | None = None, title: str | None = None
    ) -> tuple[str, list[Recorded]]:
        conversation_id = conversation_id or self.ids.new_id("conv")
        view = await self.load(session_id)
        now = self.clock.now()
        recorded = await self.execute(
            session_id,
            view,
            lambda v: decisions.start_conversation(
                v, now, conversation_id, title, self.settings.limits
            ),
        )
        return conversation_id, recorded

    async def rename_conversation(
        self, session_id: str, *, conversation_id: str, title: str
    ) -> list[Recorded]:
        view = await self.load(session_id)
        now = self.clock.now()
        return await self.execute(
            session_id,
            view,
            lambda v: decisions.rename_conversation(
                v, now, conversation_id, title, self.settings.limits
            ),
        )

    async def submit_message(
        self,
        session_id: str,
        *,
        conversation_id: str,
        client_message_id: str,
        text: str,
        charges: Sequence[Charge] = (),
    ) -> SubmitResult:
        """Record a user message once per client message id (I4) and queue its answer (see
        :meth:`_accept`). ``charges`` are the budgets the answer's tokens go to (a message
        queued again by the sweeper, or after a restore, goes without them)."""

        def decide(v: SessionView, message_id: str, now: datetime) -> list[Event] | Duplicate:
            return decisions.submit_message(
                v,
                now,
                conversation_id=conversation_id,
                client_message_id=client_message_id,
                message_id=message_id,
                text=text,
                limits=self.settings.limits,
            )

        result = await self._new_message(
            session_id, conversation_id, client_message_id, decide, charges
        )
        log.info(
            "message accepted",
            extra={
                "session_id": session_id,
                "message_id": result.message_id,
                "duplicate": result.duplicate,
            },
        )
        return result

    async def _new_message(
        self,
        session_id: str,
        conversation_id: str,
        client_message_id: str,
        decide: Callable[[SessionView, str, datetime], list[Event] | Duplicate],
        charges: Sequence[Charge],
    ) -> SubmitResult:
        """A new user message (a send or an edit), decided by ``decide(view, its id, now)``,
        recorded once per client message id and answered. A duplicate (the client sent it
        again) records nothing; its answer is queued again if none has started (its work may
        never have been queued: duplicates of work are harmless)."""
        validate_session_id(session_id)
        validate_plain_id("client message id", client_message_id)
        view = await self.load(session_id)
        if conversation_id not in view.conversations:
            raise UnknownConversation(conversation_id)
        now = self.clock.now()
        message_id = self.ids.new_id("msg")
        duplicate: list[Duplicate] = []

        def decided(v: SessionView) -> list[Event]:
            events = decide(v, message_id, now)
            if isinstance(events, Duplicate):
                duplicate.append(events)
                return []
            return events

        recorded = await self._accept(
            session_id,
            view,
            decided,
            client_message_id=client_message_id,
            conversation_id=conversation_id,
            message_id=message_id,
            charges=charges,
        )
        if not duplicate:
            return SubmitResult(
                conversation_id, message_id, client_message_id, recorded[0].position, False
            )
        ref = duplicate[-1].ref
        turn = view.find_turn(ref.message_id)
        if turn is not None and turn[1].reply is None:
            await self._enqueue(session_id, ref.conversation_id, ref.message_id, charges)
        return SubmitResult(
            ref.conversation_id, ref.message_id, client_message_id, ref.position, True
        )

    async def _accept(
        self,
        session_id: str,
        view: SessionView,
        decide: Callable[[SessionView], Sequence[Event]],
        *,
        client_message_id: str,
        conversation_id: str,
        message_id: str,
        charges: Sequence[Charge],
    ) -> list[Recorded]:
        """Record what ``decide`` decides and queue the answer to ``message_id``, so that a
        process dying between the two never leaves a message nobody answers: in one step
        through the intake when there is one, else bracketed by an intent (written before the
        append, cleared once the work is queued; :meth:`sweep_intents` queues the work of an
        intent left behind). When nothing is decided, nothing is queued."""
        if self.intake is not None:
            item = self._work_item(session_id, conversation_id, message_id, charges)
            return await self.execute(session_id, view, decide, work=item)
        await self.intents.record(session_id, client_message_id)
        try:
            recorded = await self.execute(session_id, view, decide)
        except DomainError:
            await self.intents.clear(session_id, client_message_id)
            raise
        if recorded:
            await self._enqueue(session_id, conversation_id, message_id, charges)
        await self.intents.clear(session_id, client_message_id)
        return recorded

    async def cancel_reply(self, session_id: str, *, conversation_id: str) -> list[Recorded]:
        """The user's Stop: recorded at once; the generating worker closes the reply (I7)."""
        view = await self.load(session_id)
        now = self.clock.now()
        recorded = await self.execute(
            session_id,
            view,
            lambda v: decisions.request_cancel(v, now, conversation_id=conversation_id),
        )
        log.info(
            "cancel requested",
            extra={"session_id": session_id, "conversation_id": conversation_id},
        )
        return recorded

    async def edit_message(
        self,
        session_id: str,
        *,
        conversation_id: str,
        message_id: str,
        client_message_id: str,
        text: str,
        charges: Sequence[Charge] = (),
    ) -> SubmitResult:
        """A new version of the user message ``message_id`` (a new branch from there, which
        becomes the active path), answered like any message; once per ``client_message_id``
        (I4), recorded and queued as :meth:`submit_message` does."""

        def decide(v: SessionView, new_id: str, now: datetime) -> list[Event] | Duplicate:
            return decisions.edit_message(
                v,
                now,
                conversation_id=conversation_id,
                edit_of=message_id,
                client_message_id=client_message_id,
                message_id=new_id,
                text=text,
                limits=self.settings.limits,
            )

        result = await self._new_message(
            session_id, conversation_id, client_message_id, decide, charges
        )
        log.info(
            "message edited",
            extra={
                "session_id": session_id,
                "message_id": result.message_id,
                "duplicate": result.duplicate,
            },
        )
        return result

    async def regenerate_reply(
        self,
        session_id: str,
        *,
        conversation_id: str,
        message_id: str,
        charges: Sequence[Charge] = (),
    ) -> list[Recorded]:
        """Answer the user message ``message_id`` again (its earlier answers are kept as
        other versions), recorded and queued like a message (:meth:`_accept`); ``charges`` as
        for :meth:`submit_message`."""
        view = await self.load(session_id)
        conv = view.conversations.get(conversation_id)
        if conv is None:
            raise UnknownConversation(conversation_id)
        question = conv.find(message_id)
        client_message_id = question.client_message_id if question is not None else None
        now = self.clock.now()

        def decide(v: SessionView) -> list[Event]:
            return decisions.regenerate_reply(
                v,
                now,
                conversation_id=conversation_id,
                message_id=message_id,
                limits=self.settings.limits,
            )

        if client_message_id is None:  # not a user message: refused with its own error
            return await self.execute(session_id, view, decide)
        recorded = await self._accept(
            session_id,
            view,
            decide,
            client_message_id=client_message_id,
            conversation_id=conversation_id,
            message_id=message_id,
            charges=charges,
        )
        log.info(
            "reply regenerating",
            extra={"session_id": session_id, "message_id": message_id},
        )
        return recorded

    async def select_branch(
        self, session_id: str, *, conversation_id: str, message_id: str
    ) -> list[Recorded]:
        """Make the version ``message_id`` part of the active path (every tab and device of
        the session follows: it is an event). Nothing is recorded when it already is."""
        view = await self.load(session_id)
        now = self.clock.now()
        return await self.execute(
            session_id,
            view,
            lambda v: decisions.select_branch(
                v,
                now,
                conversation_id=conversation_id,
                message_id=message_id,
                limits=self.settings.limits,
            ),
        )

    async def delete_conversation(self, session_id: str, *, conversation_id: str) -> Recorded:
        """Delete a conversation for good: its events are erased from the log and a
        content-free tombstone (``conversation_deleted``) is appended in the same atomic step,
        at the version the positions were read at; then the cache gets the view without it.

        A reply in progress there stops at its next write (its turn is gone); the log's
        other events keep their positions."""
        validate_session_id(session_id)
        validate_plain_id("conversation id", conversation_id)
        for _ in range(self.settings.max_append_attempts):
            log_now = await self.store.read(session_id)
            view = fold(log_now)
            if not view.opened:
                raise SessionNotFound(session_id)
            positions = [
                r.position
                for r in log_now
                if getattr(r.event, "conversation_id", None) == conversation_id
                and not isinstance(r.event, ConversationDeleted)
            ]
            tombstone = decisions.delete_conversation(
                view, self.clock.now(), conversation_id=conversation_id, erased=len(positions)
            )
            assert view.version is not None  # (an opened session has events)
            try:
                (recorded,) = await self.store.erase(
                    session_id, positions, tombstone=tombstone, expected_version=view.version
                )
            except ConcurrencyConflict:
                continue
            kept = set(positions)
            after = fold([r for r in log_now if r.position not in kept] + [recorded])
            await self._replace_cached(session_id, after)
            log.info(
                "conversation deleted",
                extra={"session_id": session_id, "erased": len(positions)},
            )
            return recorded
        raise ConcurrencyConflict(session_id, None, None)

    async def _replace_cached(self, session_id: str, view: SessionView) -> None:
        """Cache the view as it is after a deletion. The cache never replaces a newer view by
        an older one, so a reader that folded the log before the deletion cannot put the
        deleted text back; if the write fails, the entry is dropped instead."""
        try:
            await self.cache.put(session_id, view)
        except PortError as exc:
            log.warning(
                "could not cache the view after a deletion; dropping the entry",
                extra={"session_id": session_id, "error": exc.code},
            )
            await self.cache.delete(session_id)

    async def delete_session(self, session_id: str) -> None:
        """Delete a whole session for good: its log (live clients receive a last, content-free
        ``session_deleted`` event) and its cache entry. Its tokens then meet
        ``session_not_found``; leases and queued work of its replies find nothing to do."""
        validate_session_id(session_id)
        existed = await self.store.delete_session(
            session_id, farewell=SessionDeleted(at=self.clock.now())
        )
        await self.cache.forget(session_id)
        if not existed:
            raise SessionNotFound(session_id)
        log.info("session deleted", extra={"session_id": session_id})

    async def fail_undeliverable(self, item: WorkItem, *, reason: str) -> list[Recorded]:
        """Give up on a message (e.g. it failed too many deliveries): tell the user."""
        try:
            view = await self.load(item.session_id)
        except SessionNotFound:
            return []  # deleted meanwhile: nobody left to tell
        if view.find_turn(item.message_id) is None:
            return []
        now = self.clock.now()
        return await self.execute(
            item.session_id,
            view,
            lambda v: (
                decisions.fail_reply(
                    v,
                    now,
                    message_id=item.message_id,
                    reply_id=None,
                    code="undeliverable",
                    reason=reason,
                )
                if v.find_turn(item.message_id) is not None
                else []
            ),
        )

    async def sweep_intents(self, *, older_than: float) -> int:
        """Queue the work of messages whose submitter died between append and enqueue."""
        repaired = 0
        for session_id, client_message_id in await self.intents.stale(older_than):
            try:
                view = await self.load(session_id)
            except SessionNotFound:
                await self.intents.clear(session_id, client_message_id)
                continue
            ref = view.client_messages.get(client_message_id)
            if ref is not None:
                found = view.find_turn(ref.message_id)
                if found is not None and found[1].reply is None:
                    await self._enqueue(session_id, ref.conversation_id, ref.message_id)
                    repaired += 1
                    log.warning(
                        "queued a message whose submitter stopped before queueing it",
                        extra={"session_id": session_id, "message_id": ref.message_id},
                    )
            await self.intents.clear(session_id, client_message_id)
        return repaired
