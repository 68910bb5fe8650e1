"""Properties of the pure core, over random sessions driven through the decisions: messages,
replies, Stops, and the conversation lifecycle (regenerate, edit, branch switches, deletion
with its erasure of the log)."""

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
    ConversationDeleted,
    Event,
    MessageEdited,
    MessageSubmitted,
    Recorded,
    ReplyRequested,
    ReplyStarted,
    Usage,
)
from chatcore.ids import position_after
from chatcore.prompt import PromptMemo, PromptSettings, _as_prompt, build_prompt
from chatcore.view import ChatMessage, Conversation, SessionView, apply, fold, project
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
    st.tuples(st.just("regenerate"), st.integers(0, 2), st.integers(0, 9)),
    st.tuples(st.just("edit"), st.integers(0, 2), st.integers(0, 9), st.integers(0, 6)),
    st.tuples(st.just("select"), st.integers(0, 2), st.integers(0, 19)),
    st.tuples(st.just("delete"), st.integers(0, 2)),
)

# The same commands, weighted towards conversations that live long enough to branch: messages
# that are answered, then regenerated, edited and switched between. Conversation c1 comes and
# goes (started, deleted); c0 stays.
_said = st.text(alphabet="abc ", min_size=1, max_size=6)
_conv = st.sampled_from([0, 0, 0, 1])
_kinds = st.sampled_from(
    ["submit"] * 3
    + ["answer"] * 3
    + ["start", "delta", "complete", "cancel", "fail", "conversation", "delete"]
    + ["regenerate"] * 2
    + ["edit"] * 2
    + ["select"] * 3
)


@st.composite
def lifecycle(draw: st.DrawFn) -> tuple[object, ...]:
    kind = draw(_kinds)
    if kind == "delete":
        return ("delete", 1)
    if kind == "conversation":
        return ("conversation", 1)
    n = draw(_conv)
    if kind == "submit":
        return ("submit", n, draw(st.integers(0, 9)), draw(_said))
    if kind in ("delta", "answer"):
        return (kind, n, draw(_said))
    if kind == "edit":
        return ("edit", n, draw(st.integers(0, 9)), draw(st.integers(0, 9)))
    if kind in ("regenerate", "select"):
        return (kind, n, draw(st.integers(0, 19)))
    return (kind, n)


class Simulator:
    """Turns commands into a valid log, keeping the folded view alongside. A deletion erases
    the conversation's events from the log, as the store does, while the view kept alongside
    only folds the tombstone: the two must agree."""

    def __init__(self) -> None:
        self.view = SessionView()
        self.log: list[Recorded] = []
        self.ids = itertools.count(1)
        self.positions = itertools.count(1)
        self.record(decisions.open_session(SID, "c0", EPOCH))

    def record(self, events: list[Event]) -> None:
        for event in events:
            rec = Recorded(position=f"{next(self.positions)}-0", event=event)
            self.log.append(rec)
            apply(self.view, rec)

    def every_message(self, n: int) -> list[ChatMessage]:
        conv = self.view.conversations.get(self.conv(n))
        if conv is None:
            return []
        return sorted((*conv.messages, *conv.branches), key=lambda m: int(m.position[:-2]))

    def user_message(self, n: int, pick: int) -> str:
        users = [m for m in self.every_message(n) if m.role == "user"]
        return users[pick % len(users)].message_id if users else "m-none"

    def erase(self, n: int) -> list[Event]:
        cid = self.conv(n)
        doomed = {
            r.position
            for r in self.log
            if getattr(r.event, "conversation_id", None) == cid
            and not isinstance(r.event, ConversationDeleted)
        }
        tombstone = decisions.delete_conversation(
            self.view, EPOCH, conversation_id=cid, erased=len(doomed)
        )
        self.log = [r for r in self.log if r.position not in doomed]
        return tombstone

    def conv(self, n: int) -> str:
        return f"c{n}"

    def draft(self, n: int) -> tuple[str, str] | None:
        conv = self.view.conversations.get(self.conv(n))
        if conv is None or conv.pending is None or conv.pending.reply is None:
            return None
        return conv.pending.message_id, conv.pending.reply.reply_id

    def run(self, cmd: tuple[object, ...]) -> None:
        if cmd[0] == "answer":  # a worker's whole reply: start, some text, complete
            n = cmd[1]
            for step in (("start", n), ("delta", n, cmd[2]), ("complete", n)):
                self.run(step)
            return
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
        if kind == "delete":
            return self.erase(n)
        if kind == "regenerate":
            return decisions.regenerate_reply(
                v,
                EPOCH,
                conversation_id=self.conv(n),
                message_id=self.user_message(n, int(cmd[2])),  # type: ignore[call-overload]
            )
        if kind == "edit":
            out = decisions.edit_message(
                v,
                EPOCH,
                conversation_id=self.conv(n),
                edit_of=self.user_message(n, int(cmd[2])),  # type: ignore[call-overload]
                client_message_id=f"cm{cmd[3]}",
                message_id=f"m{next(self.ids)}",
                text=f"edit {next(self.ids)}",
            )
            return [] if isinstance(out, decisions.Duplicate) else out
        if kind == "select":
            every = self.every_message(n)
            if not every:
                return []
            chosen = every[int(cmd[2]) % len(every)]  # type: ignore[call-overload]
            return decisions.select_branch(
                v, EPOCH, conversation_id=self.conv(n), message_id=chosen.message_id
            )
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
@given(st.lists(st.one_of(command, lifecycle()), max_size=60), st.data())
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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(command, lifecycle()), max_size=60), st.data())
def test_a_copied_view_and_its_original_fold_on_independently(
    commands: list[tuple[object, ...]], data: st.DataObject
) -> None:
    """``copy_view`` shares what the fold never changes: folding the rest of the log into the
    copy leaves the original at the cut, and folding it into the original leaves the copy."""
    sim = simulate(commands)
    cut = data.draw(st.integers(0, len(sim.log)))
    at_cut = fold(sim.log[:cut])
    original = fold(sim.log[:cut])
    copy = original.copy_view()
    assert copy == original
    project(copy, sim.log[cut:])
    assert original == at_cut
    assert copy == fold(sim.log)
    other = original.copy_view()
    project(original, sim.log[cut:])
    assert other == at_cut
    assert original == fold(sim.log)


def test_a_copy_taken_mid_reply_keeps_its_own_draft() -> None:
    """The same, at every cut of a reply being streamed (chunks appended in place, a model
    switched), which random command lists reach only now and then."""
    script: list[tuple[object, ...]] = [
        ("submit", 0, 0, "hi"),
        ("start", 0),
        ("delta", 0, "a"),
        ("delta", 0, "b"),
        ("switch", 0),
        ("delta", 0, "c"),
        ("complete", 0),
    ]
    sim = simulate(script)
    for cut in range(len(sim.log) + 1):
        original = fold(sim.log[:cut])
        copy = original.copy_view()
        project(copy, sim.log[cut:])
        assert original == fold(sim.log[:cut]), cut
        assert copy == fold(sim.log), cut
        slim = fold(sim.log[:cut]).for_turns()
        project(slim, sim.log[cut:])
        assert original == fold(sim.log[:cut]), cut


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
        self.snapshots: list[bytes] = []

    @rule(cmd=st.one_of(command, lifecycle()))
    def act(self, cmd: tuple[object, ...]) -> None:
        self.sim.run(cmd)
        self.snapshots.append(encode_view(self.sim.view))

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
    def every_turn_has_at_most_one_terminal_reply(self) -> None:
        """A message is asked for an answer once per turn (sent, edited into being, or
        regenerated); each turn ends at most once."""
        for turn, ends in turns(self.sim.log).items():
            assert len(ends["terminal"]) <= 1, turn

    @invariant()
    def each_conversation_has_exactly_one_active_path(self) -> None:
        for conv in self.sim.view.conversations.values():
            check_one_active_path(conv)

    @invariant()
    def a_pending_reply_is_prompted_with_its_own_path_only(self) -> None:
        for conv in self.sim.view.conversations.values():
            if conv.pending is not None:
                check_prompt_follows_the_tree(conv, conv.pending.message_id, self.sim.view)

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
        """Within a turn, the attempts are numbered from 1 (a regeneration is a new turn)."""
        for ends in turns(self.sim.log).values():
            assert ends["attempts"] == list(range(1, len(ends["attempts"]) + 1))

    @rule(data=st.data())
    def a_view_cached_at_any_earlier_point_catches_up_with_the_log(
        self, data: st.DataObject
    ) -> None:
        """I2 across deletions: a view cached at any moment of the session's life (also before
        a conversation's events were erased), plus the events after its version in the log as
        it is now, is the fold of that log."""
        if not self.snapshots:
            return
        cached = decode_view(data.draw(st.sampled_from(self.snapshots)))
        assert cached is not None
        tail = [r for r in self.sim.log if position_after(r.position, cached.version)]
        assert project(cached, tail) == fold(self.sim.log) == self.sim.view


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
    for cid, conv in slim.conversations.items():
        # Only messages recorded after the cut, the end of the active path: a branch switch
        # or a regeneration empties a turns-only view's path (it has no history to rebuild
        # it from), and what follows is appended again.
        after_cut = [m for m in sim.view.conversations[cid].messages if m.position in later]
        assert conv.messages == after_cut[len(after_cut) - len(conv.messages) :]
    for n in range(3):
        assert _reply_steps(slim, n) == _reply_steps(sim.view, n)


def test_the_fold_has_a_handler_for_every_event_type() -> None:
    """Exhaustive dispatch: a new event type without a handler fails here, not at the first
    session that records it (the web client's fold has the same check in TypeScript)."""
    from chatcore.events import EVENT_TYPES
    from chatcore.view import _HANDLERS

    assert set(_HANDLERS) == set(EVENT_TYPES.values())


# --- the conversation's tree ------------------------------------------------------------------


def turns(log: list[Recorded]) -> dict[tuple[str, int], dict[str, list[int]]]:
    """Each turn of the log ((message, n): the n-th time the message was asked to be answered)
    with its attempt numbers and its terminal events."""
    asked: dict[str, int] = {}
    out: dict[tuple[str, int], dict[str, list[int]]] = {}
    for rec in log:
        e = rec.event
        if isinstance(e, MessageSubmitted | MessageEdited):
            asked[e.message_id] = asked.get(e.message_id, 0) + 1
            out[e.message_id, asked[e.message_id]] = {"attempts": [], "terminal": []}
        elif isinstance(e, ReplyRequested):
            asked[e.in_reply_to] = asked.get(e.in_reply_to, 0) + 1
            out[e.in_reply_to, asked[e.in_reply_to]] = {"attempts": [], "terminal": []}
        elif isinstance(e, ReplyStarted):
            out[e.in_reply_to, asked[e.in_reply_to]]["attempts"].append(e.attempt)
        elif isinstance(e, TERMINAL_REPLY_EVENTS):
            mid = e.in_reply_to  # type: ignore[attr-defined]
            out[mid, asked[mid]]["terminal"].append(int(rec.position[:-2]))
    return out


def check_one_active_path(conv: Conversation) -> None:
    """``messages`` is one chain from the start, ending at ``leaf_id``; every other message of
    the tree is in ``branches``, each message once, each parent known; the chain ends at a
    leaf of the tree, or at the message a pending turn answers."""
    path = conv.messages
    for i, msg in enumerate(path):
        assert msg.parent_id == (path[i - 1].message_id if i else None)
    assert conv.leaf_id == (path[-1].message_id if path else None)
    every = [*path, *conv.branches]
    ids = [m.message_id for m in every]
    assert len(ids) == len(set(ids))
    assert all(m.parent_id is None or m.parent_id in ids for m in every)
    for msg in every:
        if msg.role == "assistant":
            assert msg.parent_id == msg.in_reply_to
    if conv.pending is not None:
        assert path and path[-1].message_id == conv.pending.message_id
    elif path:
        assert not any(m.parent_id == path[-1].message_id for m in every)


def check_prompt_follows_the_tree(
    conv: Conversation, message_id: str, view: SessionView, memo: PromptMemo | None = None
) -> None:
    """The prompt answering ``message_id`` is built from the chain of its ancestors (followed
    by parent ids, not by the active path): its messages are the last ones of that chain.
    Built with a ``memo`` kept across the history, it is the same prompt."""
    by_id = {m.message_id: m for m in (*conv.messages, *conv.branches)}
    chain: list[ChatMessage] = []
    at: str | None = message_id
    while at is not None:
        chain.append(by_id[at])
        at = by_id[at].parent_id
    chain.reverse()
    request = build_prompt(conv, message_id, view.profile, PromptSettings(max_prompt_tokens=200))
    if memo is not None:
        again = build_prompt(
            conv, message_id, view.profile, PromptSettings(max_prompt_tokens=200), memo
        )
        assert again == request
    said = [(m.role, m.content) for m in request.messages[1:]]
    own = [(p.role, p.content) for m in chain[:-1] if (p := _as_prompt(m)) is not None]
    question = (chain[-1].role, chain[-1].text)
    assert said[-1][0] == "user" and question[1].endswith(said[-1][1])
    assert said[:-1] == own[len(own) - len(said) + 1 :] if len(said) > 1 else True


@settings(max_examples=300, deadline=None)
@given(st.lists(lifecycle(), min_size=20, max_size=80))
def test_every_turn_answered_is_prompted_with_its_own_path_only(
    commands: list[tuple[object, ...]],
) -> None:
    """Whenever a turn is waiting for its answer (a message, an edit, a regeneration), the
    prompt a worker would build holds that message's own path and nothing of a sibling."""
    sim = Simulator()
    memo = PromptMemo(conversations=2)  # (fewer than the conversations: some are evicted)
    for cmd in commands:
        sim.run(cmd)
        for conv in sim.view.conversations.values():
            check_one_active_path(conv)
            if conv.pending is not None:
                check_prompt_follows_the_tree(conv, conv.pending.message_id, sim.view, memo)
    assert fold(sim.log) == sim.view
    assert sim.view.anomalies == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(lifecycle(), min_size=20, max_size=80))
def test_a_deleted_conversation_leaves_nothing_but_its_tombstone(
    commands: list[tuple[object, ...]],
) -> None:
    """After any history, deleting a conversation leaves no event of it in the log but the
    tombstones, none of its client message ids in the view, and the view counts the log."""
    sim = simulate(commands)
    for n in range(3):
        sim.run(("delete", n))
        cid = sim.conv(n)
        assert cid not in sim.view.conversations
        left = [r.event for r in sim.log if getattr(r.event, "conversation_id", None) == cid]
        assert all(isinstance(e, ConversationDeleted) for e in left)
        assert all(ref.conversation_id != cid for ref in sim.view.client_messages.values())
    assert sim.view.event_count == len(sim.log)
    assert fold(sim.log) == sim.view
