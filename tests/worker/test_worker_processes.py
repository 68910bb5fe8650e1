"""``chatcore worker`` as real processes on a real redis-server, killed, frozen, cut off and
restarted for real. Every scenario ends with the invariant that matters (I6): each accepted
message has exactly one terminal reply event; and the ones that stop or break something check
that the workers come back by themselves within 10 s of the world coming back (I9).

The test process plays the API: it opens sessions and submits messages through a ChatService
on the same Redis, then reads the session logs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from chatcore.events import (
    MessageSubmitted,
    Recorded,
    ReplyCancelled,
    ReplyCancelRequested,
    ReplyCompleted,
    ReplyFailed,
    ReplyStarted,
)
from tests.support.redis_chat import (
    Asked,
    RedisChat,
    abandoned,
    deltas_of,
    started,
    terminal_events,
)
from tests.support.worker_processes import wait_until
from tests.worker.conftest import Deployment

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# The demo model's answer ends with this sentence.
ANSWER_END = "docs/llm.md has the details."
# How soon a worker must be consuming again once Redis / the process is back (I9).
RESUME_BOUND = 10.0


def the_only_terminal(records: list[Recorded], asked: Asked) -> object:
    terminal = terminal_events(records, asked.message_id)
    assert len(terminal) == 1, f"expected one terminal event, got {terminal}"
    return terminal[0]


async def wait_started(chat: RedisChat, asked: Asked, *, timeout: float) -> list[Recorded]:
    return await chat.wait_for(
        asked.session_id,
        lambda rs: bool(started(rs, asked.message_id)),
        timeout=timeout,
        what=f"a reply to {asked.message_id} to start",
    )


async def test_a_worker_killed_mid_reply_is_taken_over_and_the_message_answered_once(
    deployment: Deployment, chat: RedisChat
) -> None:
    a = deployment.pool.worker("a")
    asked = await chat.ask("What happens when a worker dies?")
    records = await chat.wait_streaming(asked, timeout=20)
    (first,) = started(records, asked.message_id)

    b = deployment.pool.worker("b")
    b.wait_for_log("worker started", timeout=20)
    a.signal(signal.SIGKILL)
    a.wait(10)

    records = await chat.wait_terminal(asked, timeout=30)
    done = the_only_terminal(records, asked)
    assert isinstance(done, ReplyCompleted)
    assert [e.reply_id for e in abandoned(records, asked.message_id)] == [first.reply_id]
    attempts = started(records, asked.message_id)
    assert [s.attempt for s in attempts] == [1, 2]
    assert done.reply_id == attempts[1].reply_id
    answer = "".join(d.text for d in deltas_of(records, done.reply_id))
    assert answer.endswith(ANSWER_END)
    view = await chat.service.load(asked.session_id)
    assert view.conversations[asked.conversation_id].messages[-1].text == answer
    b.wait_for_log("reply completed", timeout=10, session_id=asked.session_id)


async def test_a_frozen_worker_resumes_and_never_writes_into_a_reply_taken_over(
    deployment: Deployment, chat: RedisChat
) -> None:
    # Like a laptop's sleep: Redis drops the idle connections of the frozen process too.
    with deployment.server.client() as admin:
        admin.config_set("timeout", 3)
    a = deployment.pool.worker("a")
    asked = await chat.ask("Will you survive a nap?")
    records = await chat.wait_streaming(asked, timeout=20)
    (first,) = started(records, asked.message_id)

    a.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    b = deployment.pool.worker("b")
    records = await chat.wait_terminal(asked, timeout=30)
    done = the_only_terminal(records, asked)
    assert isinstance(done, ReplyCompleted)
    b.signal(signal.SIGTERM)
    assert b.wait(20) == 0

    # Frozen past every timeout: lease 2.5 s, reclaim 1.5 s, heartbeat ttl 2 s, socket
    # timeout (claim block + 5 s), Redis' idle timeout 3 s.
    await asyncio.sleep(max(0.0, 7.0 - (time.monotonic() - frozen_at)))
    a.signal(signal.SIGCONT)

    later = await chat.ask("Are you back?")
    await wait_started(chat, later, timeout=RESUME_BOUND)
    later_records = await chat.wait_terminal(later, timeout=30)
    assert isinstance(the_only_terminal(later_records, later), ReplyCompleted)
    a.wait_for_log("reply completed", timeout=10, session_id=later.session_id)  # a did it

    # a let its old reply go: either its next write found the takeover, or the write it had
    # in flight when it froze ran out of time (Redis ran it before the takeover, at a's
    # version, so it could not land after it). Either way it wrote nothing after the takeover.
    gave_up = (
        "reply taken over by another worker",
        "reply generation crashed; the delivery will be retried",
    )
    wait_until(
        lambda: any(a.lines(msg, session_id=asked.session_id) for msg in gave_up),
        10,
        "a to let its old reply go",
    )
    records = await chat.events(asked.session_id)
    takeover = next(
        n
        for n, r in enumerate(records)
        if isinstance(r.event, ReplyStarted) and r.event.reply_id == done.reply_id
    )
    late = [r for r in records[takeover:] if getattr(r.event, "reply_id", None) == first.reply_id]
    assert late == []
    assert len(terminal_events(records, asked.message_id)) == 1


async def test_workers_resume_after_redis_restarts_and_nothing_acknowledged_is_lost(
    deployment: Deployment, chat: RedisChat
) -> None:
    workers = [deployment.pool.worker("a"), deployment.pool.worker("b")]
    for worker in workers:
        worker.wait_for_log("worker started", timeout=20)
    before = [await chat.ask(f"Question {n} before the restart") for n in range(6)]
    await chat.wait_streaming(before[0], timeout=20)

    # Down long enough that the client's own retries give up and the workers see errors.
    deployment.server.stop()
    await asyncio.sleep(3.0)
    deployment.server.start()
    back = time.monotonic()
    after = await chat.ask_until_accepted("Question after the restart", timeout=RESUME_BOUND)
    await wait_started(chat, after, timeout=max(1.0, RESUME_BOUND - (time.monotonic() - back)))

    for asked in [*before, after]:
        records = await chat.wait_terminal(asked, timeout=40)
        submitted = [
            r.event
            for r in records
            if isinstance(r.event, MessageSubmitted) and r.event.message_id == asked.message_id
        ]
        assert len(submitted) == 1
        assert isinstance(the_only_terminal(records, asked), ReplyCompleted)
    assert all(w.running for w in workers)
    noticed = [w for w in workers if w.lines("work queue unavailable; retrying")]
    assert noticed, "no worker noticed the outage"
    # Each of them is consuming again: with the other one frozen, it answers a new message.
    for worker, other in (workers, workers[::-1]):
        other.signal(signal.SIGSTOP)
        try:
            probe = await chat.ask(f"Only {worker.name} is awake")
            records = await chat.wait_terminal(probe, timeout=30)
        finally:
            other.signal(signal.SIGCONT)
        assert isinstance(the_only_terminal(records, probe), ReplyCompleted)
        worker.wait_for_log("reply completed", timeout=10, session_id=probe.session_id)


async def test_a_worker_frozen_while_waiting_for_work_does_not_take_back_what_it_missed(
    deployment: Deployment, chat: RedisChat
) -> None:
    a = deployment.pool.worker("a", "--claim-block", "5")
    a.wait_for_log("worker started", timeout=20)
    # Freeze a just after it sent a 5 s blocking read: the next message is handed to that
    # read and sits unread in a's socket while a sleeps.
    with deployment.server.client() as admin:
        wait_until(lambda: _fresh_blocked_read(admin), 20, "a blocking read of the worker")
    a.signal(signal.SIGSTOP)
    try:
        asked = await chat.ask("Delivered to a sleeper")
        deployment.pool.worker("b")  # reclaims it after 1.5 s and answers it
        await chat.wait_streaming(asked, timeout=20)
    finally:
        a.signal(signal.SIGCONT)
    a.wait_for_log(
        "delivery already taken over by another worker; skipping",
        timeout=10,
        session_id=asked.session_id,
    )
    records = await chat.wait_terminal(asked, timeout=30)
    assert isinstance(the_only_terminal(records, asked), ReplyCompleted)
    assert len(started(records, asked.message_id)) == 1
    assert abandoned(records, asked.message_id) == []


def group_consumers(deployment: Deployment) -> dict[str, int]:
    """The consumers of the work queue's group and how many entries each holds."""
    with deployment.server.client() as admin:
        rows = admin.xinfo_consumers(f"{deployment.prefix}{{chatcore:work}}", "workers")
    return {row["name"].decode(): int(row["pending"]) for row in rows}


def _fresh_blocked_read(admin: redis.Redis) -> bool:
    return any(
        c.get("name") == "chatcore-worker" and "b" in c.get("flags", "") and c.get("idle") == "0"
        for c in admin.client_list()
    )


async def test_a_worker_whose_connections_are_killed_goes_on(
    deployment: Deployment, chat: RedisChat
) -> None:
    a = deployment.pool.worker("a")
    asked = await chat.ask("First question")
    await chat.wait_streaming(asked, timeout=20)
    with deployment.server.client() as admin:
        assert admin.client_kill_filter(_type="normal") >= 1  # mid-reply
    records = await chat.wait_terminal(asked, timeout=30)
    assert isinstance(the_only_terminal(records, asked), ReplyCompleted)

    await deployment.server.until_blocked(1, command="xreadgroup")  # waiting for work again
    with deployment.server.client() as admin:
        assert admin.client_kill_filter(_type="normal") >= 1
    killed = time.monotonic()
    later = await chat.ask("Second question")
    await wait_started(chat, later, timeout=max(1.0, RESUME_BOUND - (time.monotonic() - killed)))
    records = await chat.wait_terminal(later, timeout=30)
    assert isinstance(the_only_terminal(records, later), ReplyCompleted)
    assert a.running


async def test_two_workers_answer_200_messages_exactly_once_and_share_the_work(
    deployment: Deployment, chat: RedisChat
) -> None:
    fast = {"CHATCORE_LLM__DEMO_DELAY": "0"}
    workers = [deployment.pool.worker(n, env=fast) for n in ("a", "b")]
    for worker in workers:
        worker.wait_for_log("worker started", timeout=20)
    asked = [await chat.ask(f"Message number {n}") for n in range(200)]

    answered: dict[str, list[Recorded]] = {}
    deadline = time.monotonic() + 120
    while len(answered) < len(asked):
        for one in asked:
            if one.session_id not in answered:
                records = await chat.events(one.session_id)
                if terminal_events(records, one.message_id):
                    answered[one.session_id] = records
        assert time.monotonic() < deadline, f"only {len(answered)} of 200 answered"
        await asyncio.sleep(0.2)

    await asyncio.sleep(1.0)  # time for a stray second answer to show up, if there were one
    for one in asked:
        records = await chat.events(one.session_id)
        assert isinstance(the_only_terminal(records, one), ReplyCompleted)

    def completed() -> list[int]:
        return [len(w.lines("reply completed")) for w in workers]

    wait_until(lambda: sum(completed()) == 200, 10, "200 replies in the workers' logs")
    assert all(n > 0 for n in completed()), f"one worker did all the work: {completed()}"


async def test_a_poison_message_is_dead_lettered_and_the_user_told(
    deployment: Deployment, chat: RedisChat
) -> None:
    a = deployment.pool.worker(
        "a",
        env={
            "CHATCORE_WORKER__LLM_FACTORY": "tests.worker.models:crash_on_poison",
            "CHATCORE_WORKER__MAX_ATTEMPTS": "3",
        },
    )
    poison = await chat.ask("This message is poison to the model")
    fine = await chat.ask("This one is fine")

    records = await chat.wait_terminal(fine, timeout=30)
    assert isinstance(the_only_terminal(records, fine), ReplyCompleted)

    records = await chat.wait_terminal(poison, timeout=40)
    failed = the_only_terminal(records, poison)
    assert isinstance(failed, ReplyFailed)
    assert failed.code == "undeliverable"
    assert "could not be answered" in failed.reason
    assert [s.attempt for s in started(records, poison.message_id)] == [1, 2, 3]
    assert len(abandoned(records, poison.message_id)) == 2

    a.wait_for_log("message dead-lettered", timeout=10, session_id=poison.session_id)
    (dead,) = await chat.queue.dead_letters()
    assert dead.item.message_id == poison.message_id
    assert dead.attempts == 4
    assert len(a.lines("reply generation crashed; the delivery will be retried")) == 3
    assert len(a.lines("message dead-lettered", session_id=poison.session_id)) == 1


async def test_a_cancel_from_another_process_stops_the_reply_within_a_second(
    deployment: Deployment, chat: RedisChat
) -> None:
    deployment.pool.worker("a", env={"CHATCORE_LLM__DEMO_DELAY": "0.05"})
    asked = await chat.ask("Tell me everything, slowly")
    await chat.wait_streaming(asked, timeout=20)

    await chat.service.cancel_reply(asked.session_id, conversation_id=asked.conversation_id)
    records = await chat.wait_terminal(asked, timeout=10)
    cancelled = the_only_terminal(records, asked)
    assert isinstance(cancelled, ReplyCancelled)
    (requested,) = [r.event for r in records if isinstance(r.event, ReplyCancelRequested)]
    assert (cancelled.at - requested.at).total_seconds() <= 1.0
    assert cancelled.reply_id is not None
    said = "".join(d.text for d in deltas_of(records, cancelled.reply_id))
    assert said
    assert cancelled.partial_text == said
    assert not said.endswith(ANSWER_END)


async def test_sigterm_lets_the_reply_in_flight_finish_then_exits_cleanly(
    deployment: Deployment, chat: RedisChat
) -> None:
    a = deployment.pool.worker("a", env={"CHATCORE_WORKER__SHUTDOWN_GRACE": "15"})
    asked = await chat.ask("Finish this before you go")
    await chat.wait_streaming(asked, timeout=20)
    a.wait_for_log("worker started", timeout=5)
    (worker_id,) = {line["worker_id"] for line in a.lines("worker started")}

    a.signal(signal.SIGTERM)
    assert a.wait(25) == 0
    records = await chat.events(asked.session_id)
    assert isinstance(the_only_terminal(records, asked), ReplyCompleted)
    assert worker_id not in {w.worker_id for w in await chat.heartbeats.workers()}
    assert a.lines("worker stopped", completed=1)
    assert worker_id not in group_consumers(deployment)  # it left the consumer group


async def test_sigterm_hands_back_a_reply_longer_than_the_grace_period(
    deployment: Deployment, chat: RedisChat
) -> None:
    slow = {"CHATCORE_LLM__DEMO_DELAY": "0.05", "CHATCORE_WORKER__SHUTDOWN_GRACE": "0.5"}
    a = deployment.pool.worker("a", env=slow)
    asked = await chat.ask("A long answer, please")
    records = await chat.wait_streaming(asked, timeout=20)
    (first,) = started(records, asked.message_id)

    a.signal(signal.SIGTERM)
    assert a.wait(15) == 0
    assert terminal_events(await chat.events(asked.session_id), asked.message_id) == []
    assert a.lines("reply interrupted by shutdown; it will be reclaimed")
    (worker_id,) = {line["worker_id"] for line in a.lines("worker started")}
    assert group_consumers(deployment)[worker_id] == 1  # still holds the entry, for b

    deployment.pool.worker("b", env={"CHATCORE_LLM__DEMO_DELAY": "0"})
    records = await chat.wait_terminal(asked, timeout=30)
    assert isinstance(the_only_terminal(records, asked), ReplyCompleted)
    assert [e.reply_id for e in abandoned(records, asked.message_id)] == [first.reply_id]


async def test_the_supervisor_restarts_a_worker_process_that_was_killed(
    deployment: Deployment, chat: RedisChat
) -> None:
    sup = deployment.pool.worker("supervisor", "--processes", "2")
    sup.wait_for_log("child process started", timeout=20, count=2)

    async def worker_pids() -> set[int]:
        return {w.pid for w in await chat.heartbeats.workers()}

    children = {line["pid"] for line in sup.lines("child process started")}
    deadline = time.monotonic() + 30
    while await worker_pids() != children:
        assert time.monotonic() < deadline, "the two workers never beat"
        await asyncio.sleep(0.1)

    victim = min(children)
    os.kill(victim, signal.SIGKILL)
    sup.wait_for_log("child process exited; restarting it", timeout=10, pid=victim)
    sup.wait_for_log("child process started", timeout=20, count=3)
    (replacement,) = {line["pid"] for line in sup.lines("child process started")} - children
    deadline = time.monotonic() + 30
    while await worker_pids() != (children - {victim}) | {replacement}:
        assert time.monotonic() < deadline, "the replacement never beat"
        await asyncio.sleep(0.1)

    asked = await chat.ask("Anyone there?")
    records = await chat.wait_terminal(asked, timeout=30)
    assert isinstance(the_only_terminal(records, asked), ReplyCompleted)

    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    for pid in (children - {victim}) | {replacement}:
        wait_until(lambda pid=pid: not _alive(pid), 5, f"child {pid} to be gone")  # type: ignore[misc]


async def test_workers_stop_by_themselves_when_their_supervisor_is_killed(
    deployment: Deployment, chat: RedisChat
) -> None:
    sup = deployment.pool.worker("supervisor", "--processes", "1")
    sup.wait_for_log("worker started", timeout=20)
    (child,) = {line["pid"] for line in sup.lines("child process started")}

    os.kill(sup.pid, signal.SIGKILL)
    sup.wait(10)
    sup.wait_for_log("the supervisor is gone; stopping", timeout=10)
    wait_until(lambda: not _alive(child), 15, "the orphaned worker to exit")
    assert sup.lines("worker stopped")


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # gone in between, or no /proc at all
        return not os.path.isdir("/proc")
