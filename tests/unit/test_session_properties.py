"""Properties of the pure core, over random sessions driven through the decisions."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from chatcore import decisions
from chatcore.errors import DomainError
from chatcore.events import (
    TERMINAL_REPLY_EVENTS,
    Event,
    MessageSubmitted,
    Recorded,
    ReplyStarted,
    Usage,
)
from chatcore.view import SessionView, apply, fold, project
from chatcore_adapters.codec import decode_view, encode_view
from tests.support.factories import EPOCH

SID = "S" * 22

# A command is a tuple the simulator interprets; invalid ones are refused by the decisions
# (DomainError) and leave no trace, exactly as in the service.
command = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 2), st.integers(0, 6), st.text(max_size=12)),
    st.tuples(st.just("start"), st.integers(0, 2)),
    st.tuples(st.just("delta"), st.integers(0, 2), st.text(min_size=1, max_size=5)),
    st.tuples(st.just("switch"), st.integers(0, 2)),
    st.tuples(st.just("complete"), st.integers(0, 2)),
    st.tuples(st.just("fail"), st.integers(0, 2)),
    st.tuples(st.just("cancel"), st.integers(0, 2)),
    st.tuples(st.just("worker_cancel"), st.integers(0, 2)),
    st.tuples(st.just("conversation"), st.integers(0, 2)),
    st.tuples(st.just("restore")),
    st.tuples(st.just("profile"), st.sampled_from([None, "Ada", "  Grace  Hopper "])),
)


class Simulator:
    """Turns commands into a valid log, keeping the folded view alongside."""

    def __init__(self) -> None:
        self.view = SessionView()
        self.log: list[Recorded] = []
        self.ids = itertools.count(1)
        self.record(decisions.open_session(SID, "c0", EPOCH))

    def record(self, events: list[Event]) -> None:
        for event in events:
            rec = Recorded(position=f"{len(self.log) + 1}-0", event=event)
            self.log.append(rec)
            apply(self.view, rec)

    def conv(self, n: int) -> str:
        return f"c{n}"

    def draft(self, n: int) -> tuple[str, str] | None:
        conv = self.view.conversations.get(self.conv(n))
        if conv is None or conv.pending is None or conv.pending.reply is None:
            return None
        return conv.pending.message_id, conv.pending.reply.reply_id

    def run(self, cmd: tuple[object, ...]) -> None:
        with contextlib.suppress(DomainError):
            self.record(self._decide(cmd))

    def _decide(self, cmd: tuple[object, ...]) -> list[Event]:
        v, kind = self.view, cmd[0]
        if kind == "submit":
            _, c, client, text = cmd
            out = decisions.submit_message(
                v,
                EPOCH,
                conversation_id=self.conv(int(c)),  # type: ignore[call-overload]
                client_message_id=f"cm{client}",
                message_id=f"m{next(self.ids)}",
                text=str(text),
            )
            return [] if isinstance(out, decisions.Duplicate) else out
        if kind == "conversation":
            return decisions.start_conversation(v, EPOCH, self.conv(int(cmd[1])))  # type: ignore[call-overload]
        if kind == "restore":
            return decisions.restore_session(v, EPOCH, v.version)
        if kind == "profile":
            return decisions.update_profile(
                v,
                EPOCH,
                display_name=cmd[1],  # type: ignore[arg-type]
                language=None,
            )
        n = int(cmd[1])  # type: ignore[call-overload]
        conv = v.conversations.get(self.conv(n))
        if kind == "cancel":
            return decisions.request_cancel(v, EPOCH, conversation_id=self.conv(n))
        if kind == "start":
            if conv is None or conv.pending is None:
                return []
            return decisions.start_reply(
                v,
                EPOCH,
                message_id=conv.pending.message_id,
                reply_id=f"r{next(self.ids)}",
                model="m",
            )
        if kind == "fail" and conv is not None and conv.pending is not None:
            return decisions.fail_reply(
                v, EPOCH, message_id=conv.pending.message_id, reply_id=None, code="x", reason="y"
            )
        draft = self.draft(n)
        if draft is None:
            return []
        mid, rid = draft
        if kind == "delta":
            return decisions.append_text(v, EPOCH, message_id=mid, reply_id=rid, text=str(cmd[2]))
        if kind == "switch":
            return decisions.switch_model(
                v, EPOCH, message_id=mid, reply_id=rid, to_model="fallback", reason="dropped"
            )
        if kind == "complete":
            return decisions.complete_reply(
                v,
                EPOCH,
                message_id=mid,
                reply_id=rid,
                usage=Usage(prompt_tokens=1, completion_tokens=2),
            )
        if kind == "worker_cancel":
            return decisions.cancel_reply(v, EPOCH, message_id=mid, reply_id=rid)
        return []


def simulate(commands: list[tuple[object, ...]]) -> Simulator:
    sim = Simulator()
    for cmd in commands:
        sim.run(cmd)
    return sim


@settings(max_examples=200, deadline=None)
@given(st.lists(command, max_size=60))
def test_folding_all_at_once_equals_folding_one_by_one(commands: list[tuple[object, ...]]) -> None:
    sim = simulate(commands)
    at_once = fold(sim.log)
    one_by_one = SessionView()
    for rec in sim.log:
        one_by_one = fold([rec], one_by_one)
    assert at_once == one_by_one == sim.view
    assert at_once.anomalies == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(command, max_size=60), st.data())
def test_a_cached_view_plus_the_tail_equals_a_full_replay_at_every_cache_point(
    commands: list[tuple[object, ...]], data: st.DataObject
) -> None:
    """I2 on the pure fold: a snapshot taken at any point, serialised as the cache stores it,
    then brought forward with the events after its version, is the full replay."""
    sim = simulate(commands)
    cut = data.draw(st.integers(0, len(sim.log)))
    cached = decode_view(encode_view(fold(sim.log[:cut])))
    assert cached is not None
    assert project(cached, sim.log[cut:]) == fold(sim.log)


@settings(max_examples=100, deadline=None)
@given(st.lists(command, max_size=40), st.integers(0, 6))
def test_a_client_message_id_is_recorded_at_most_once(
    commands: list[tuple[object, ...]], client: int
) -> None:
    """I4 at the decision level: resubmitting any client message id never adds a message."""
    sim = simulate(commands)
    for conv in range(3):
        sim.run(("submit", conv, client, "again"))
        sim.run(("submit", conv, client, "and again"))
    submitted = [
        r.event.client_message_id for r in sim.log if isinstance(r.event, MessageSubmitted)
    ]
    assert len(submitted) == len(set(submitted))


def test_a_duplicate_submission_returns_where_the_first_was_recorded() -> None:
    sim = simulate([("submit", 0, 1, "hi")])
    again = decisions.submit_message(
        sim.view, EPOCH, conversation_id="c0", client_message_id="cm1", message_id="other", text="x"
    )
    assert isinstance(again, decisions.Duplicate)
    assert again.ref.message_id == "m1"
    assert again.ref.position == sim.log[2].position


class SessionMachine(RuleBasedStateMachine):
    """A session driven by random commands never reaches an invalid state."""

    @initialize()
    def open(self) -> None:
        self.sim = Simulator()

    @rule(cmd=command)
    def act(self, cmd: tuple[object, ...]) -> None:
        self.sim.run(cmd)

    @precondition(lambda self: len(self.sim.log) > 2)
    @rule(data=st.data())
    def restore_from_a_random_cache_point(self, data: st.DataObject) -> None:
        cut = data.draw(st.integers(0, len(self.sim.log)))
        cached = decode_view(encode_view(fold(self.sim.log[:cut])))
        assert cached is not None
        assert project(cached, self.sim.log[cut:]) == self.sim.view

    @invariant()
    def no_event_was_inconsistent(self) -> None:
        assert self.sim.view.anomalies == 0

    @invariant()
    def every_message_has_at_most_one_terminal_reply(self) -> None:
        terminals = [
            r.event.in_reply_to  # type: ignore[attr-defined]
            for r in self.sim.log
            if isinstance(r.event, TERMINAL_REPLY_EVENTS)
        ]
        assert len(terminals) == len(set(terminals))

    @invariant()
    def a_conversation_waits_on_at_most_its_last_user_message(self) -> None:
        for conv in self.sim.view.conversations.values():
            if conv.pending is not None:
                users = [m for m in conv.messages if m.role == "user"]
                assert users[-1].message_id == conv.pending.message_id
                assert not self.sim.view.is_answered(conv.pending.message_id)
            answered = [m.in_reply_to for m in conv.messages if m.role == "assistant"]
            assert len(answered) == len(set(answered))

    @invariant()
    def replies_start_only_for_pending_messages(self) -> None:
        starts = [r.event for r in self.sim.log if isinstance(r.event, ReplyStarted)]
        attempts: dict[str, list[int]] = {}
        for s in starts:
            attempts.setdefault(s.in_reply_to, []).append(s.attempt)
        for seq in attempts.values():
            assert seq == list(range(1, len(seq) + 1))


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


def _reply_steps(view: SessionView, n: int) -> dict[str, object]:
    """Every decision a worker (or a Stop) takes on conversation ``n``'s turn, on ``view``:
    the events decided, or the kind of refusal."""
    conv = view.conversations.get(f"c{n}")
    turn = conv.pending if conv is not None else None
    mid = turn.message_id if turn is not None else "m-none"
    rid = turn.reply.reply_id if turn is not None and turn.reply is not None else "r-none"
    steps: dict[str, Callable[[], list[Event]]] = {
        "start": lambda: decisions.start_reply(
            view, EPOCH, message_id=mid, reply_id="r-new", model="m"
        ),
        "delta": lambda: decisions.append_text(view, EPOCH, message_id=mid, reply_id=rid, text="x"),
        "switch": lambda: decisions.switch_model(
            view, EPOCH, message_id=mid, reply_id=rid, to_model="fallback", reason="dropped"
        ),
        "complete": lambda: decisions.complete_reply(
            view,
            EPOCH,
            message_id=mid,
            reply_id=rid,
            usage=Usage(prompt_tokens=1, completion_tokens=2),
        ),
        "fail": lambda: decisions.fail_reply(
            view, EPOCH, message_id=mid, reply_id=rid, code="x", reason="y"
        ),
        "fail_any": lambda: decisions.fail_reply(
            view, EPOCH, message_id=mid, reply_id=None, code="x", reason="y"
        ),
        "worker_cancel": lambda: decisions.cancel_reply(view, EPOCH, message_id=mid, reply_id=rid),
        "stop": lambda: decisions.request_cancel(view, EPOCH, conversation_id=f"c{n}"),
    }
    out: dict[str, object] = {}
    for name, step in steps.items():
        try:
            out[name] = step()
        except DomainError as exc:
            out[name] = type(exc).__name__
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(command, max_size=60), st.data())
def test_a_turns_only_view_decides_every_reply_step_like_the_whole_view(
    commands: list[tuple[object, ...]], data: st.DataObject
) -> None:
    """What a worker keeps while it streams (``for_turns``, taken at any point and brought
    forward with the later events) decides exactly as the whole session would."""
    sim = simulate(commands)
    cut = data.draw(st.integers(1, len(sim.log)))
    slim = project(fold(sim.log[:cut]).for_turns(), sim.log[cut:])
    assert slim.partial and not sim.view.partial
    assert slim.version == sim.view.version
    assert slim.anomalies == 0
    assert [(c.conversation_id, c.pending) for c in slim.conversations.values()] == [
        (c.conversation_id, c.pending) for c in sim.view.conversations.values()
    ]
    later = {r.position for r in sim.log[cut:]}
    for cid, conv in slim.conversations.items():  # only messages recorded after the cut
        assert conv.messages == [
            m for m in sim.view.conversations[cid].messages if m.position in later
        ]
    for n in range(3):
        assert _reply_steps(slim, n) == _reply_steps(sim.view, n)


def test_the_fold_has_a_handler_for_every_event_type() -> None:
    """Exhaustive dispatch: a new event type without a handler fails here, not at the first
    session that records it (the web client's fold has the same check in TypeScript)."""
    from chatcore.events import EVENT_TYPES
    from chatcore.view import _HANDLERS

    assert set(_HANDLERS) == set(EVENT_TYPES.values())
