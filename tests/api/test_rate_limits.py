"""The limits on real servers, in the embedded mode and on Redis: messages per client address
and per session, shared by every API process of a deployment; model-spend budgets charged by
the worker; every frame of a connection; new conversations per session.

Each test names the limits it is about; the others stay out of the way (``support.GENEROUS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.api.support import (
    Frame,
    RunningApi,
    Start,
    WsClient,
    is_terminal,
    send_frame,
)
from tests.support.scripted_llm import ScriptedLLM

# The address's default burst, refilling slowly enough (one every 10 s) that the time a test
# takes does not bring a message back.
ADDRESS = {"ip_messages_per_minute": 6, "ip_messages_burst": 15}
SESSION = {"messages_per_minute": 20, "messages_burst": 5}


def answers_in(frames: list[Frame]) -> list[Frame]:
    return [
        f
        for f in frames
        if f["type"] in {"ack", "error"} and str(f.get("request_id")).startswith("send-")
    ]


def all_answered(received: list[Frame], count: int) -> Callable[[Frame], bool]:
    return lambda _: len(answers_in(received)) == count


async def connected(api: RunningApi, session: dict[str, Any]) -> WsClient:
    client = await WsClient.open(api.ws_url)
    await client.hello(session["token"])
    return client


async def test_new_sessions_and_new_conversations_bring_no_fresh_allowance(
    start: Start,
) -> None:
    # The review's finding: 8 sessions x 5 conversations from one address had 40 messages
    # accepted in 0.71 s. The address has one allowance, whatever it opens.
    api = await start(llm=ScriptedLLM(delay=0.5), **ADDRESS, **SESSION)
    clients = []
    plans = []
    answers: list[Frame] = []
    try:
        for s in range(8):
            session = await api.new_session()
            client = await connected(api, session)
            clients.append(client)
            conversations = [session["conversation_id"]]
            for c in range(4):
                ack = await client.request(
                    {"type": "start_conversation", "conversation_id": f"conv-{s}-{c}"}
                )
                assert ack["type"] == "ack", ack
                conversations.append(ack["conversation_id"])
            plans.append((client, session, conversations))
        for s, (client, session, conversations) in enumerate(plans):
            for c, conversation in enumerate(conversations):
                frame = {**send_frame(session, cmid=f"m{s}-{c}"), "conversation_id": conversation}
                await client.send({**frame, "request_id": f"send-{s}-{c}"})
        for client in clients:
            await client.until(all_answered(client.received, 5))
            answers += answers_in(client.received)
    finally:
        for client in clients:
            await client.close()
    accepted = [a for a in answers if a["type"] == "ack"]
    refused = [a for a in answers if a["type"] == "error"]
    assert len(accepted) == 15, "one address: its burst, not 8 sessions' bursts"
    assert {r["code"] for r in refused} <= {"rate_limited"}
    assert all(r["retry_after"] > 0 for r in refused)
    assert any("address" in r["message"] for r in refused)


async def test_two_api_processes_enforce_one_session_limit_and_one_address_limit(
    start: Start,
) -> None:
    limits = {"messages_per_minute": 1, "messages_burst": 3, "ip_messages_per_minute": 1}
    a = await start(llm=ScriptedLLM(), ip_messages_burst=5, **limits)
    b = await start(llm=ScriptedLLM(), ip_messages_burst=5, **limits)
    session = await a.new_session()
    on_a, on_b = await connected(a, session), await connected(b, session)
    try:
        answers = []
        for n in range(6):  # alternately on each process, one conversation each
            client = on_a if n % 2 == 0 else on_b
            ack = await client.request({"type": "start_conversation", "conversation_id": f"c{n}"})
            assert ack["type"] == "ack", ack
            frame = {**send_frame(session, cmid=f"m{n}"), "conversation_id": f"c{n}"}
            answers.append(await client.request(frame))
        assert [x["type"] for x in answers] == ["ack"] * 3 + ["error"] * 3
        assert {x["code"] for x in answers[3:]} == {"rate_limited"}
        assert 50 < answers[-1]["retry_after"] <= 60, "one message a minute comes back"

        # The address (shared too) has two left of its five, whichever process is asked.
        answers = []
        for api in (b, a, b):
            other = await api.new_session()
            async with api.ws() as client:
                await client.hello(other["token"])
                answers.append(await client.request(send_frame(other, cmid="x")))
        assert [x["type"] for x in answers] == ["ack", "ack", "error"]
        assert "address" in answers[-1]["message"]
    finally:
        await on_a.close()
        await on_b.close()


async def test_a_spent_token_budget_refuses_new_messages_until_it_runs_off(start: Start) -> None:
    # 100 words: the model reports 7 prompt + 100 completion tokens; a budget of 60 a minute
    # is then 47 tokens, 47 seconds, in debt (plus the token the next message needs).
    api = await start(llm=ScriptedLLM(words=["w "] * 100), ip_tokens_per_minute=60)
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        assert (await client.request(send_frame(session, cmid="m1")))["type"] == "ack"
        await client.until(is_terminal)
        refused = await client.request(send_frame(session, cmid="m2"))
        assert refused["code"] == "budget_exceeded", refused
        assert 45 < refused["retry_after"] <= 49
        # Another session of the same address shares the address's budget.
        other = await api.new_session()
        async with api.ws() as second:
            await second.hello(other["token"])
            again = await second.request(send_frame(other, cmid="m1"))
        assert again["code"] == "budget_exceeded"


async def test_the_total_budget_refuses_every_client_once_spent(start: Start) -> None:
    api = await start(llm=ScriptedLLM(words=["w "] * 100), total_tokens_per_minute=60)
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        assert (await client.request(send_frame(session, cmid="m1")))["type"] == "ack"
        await client.until(is_terminal)
        refused = await client.request(send_frame(session, cmid="m2"))
    assert refused["code"] == "budget_exceeded"
    assert "server" in refused["message"]


async def test_every_frame_counts_against_its_connection_and_only_its_connection(
    start: Start,
) -> None:
    # The review's finding: 300 rename_conversation acked in 0.62 s.
    api = await start(llm=ScriptedLLM(), frames_per_minute=60, frames_burst=10)
    session = await api.new_session()
    conversation = session["conversation_id"]
    async with api.ws() as client, api.ws() as other:
        await client.hello(session["token"])
        await other.hello(session["token"])
        answers = [
            await client.request(
                {"type": "rename_conversation", "conversation_id": conversation, "title": f"t{n}"}
            )
            for n in range(30)
        ]
        assert [a["type"] for a in answers] == ["ack"] * 10 + ["error"] * 20
        assert {a["code"] for a in answers[10:]} == {"rate_limited"}
        assert all(0 < a["retry_after"] <= 1.0 for a in answers[10:])
        ping = await client.request({"type": "ping"})
        assert ping["type"] == "error" and ping["code"] == "rate_limited", "pings count too"
        # The other connection of the same session has its own allowance.
        assert (await other.ping())["type"] == "pong"
        # A refused frame was not carried out: the title is the tenth's.
        view = await api.app.state.runtime.service.load(session["session_id"])
        assert view.conversations[conversation].title == "t9"


async def test_starting_conversations_has_its_own_cap_per_session(start: Start) -> None:
    a = await start(llm=ScriptedLLM(), conversations_per_minute=1, conversations_burst=2)
    b = await start(llm=ScriptedLLM(), conversations_per_minute=1, conversations_burst=2)
    session = await a.new_session()
    on_a, on_b = await connected(a, session), await connected(b, session)
    try:
        first = await on_a.request({"type": "start_conversation"})
        second = await on_b.request({"type": "start_conversation"})
        third = await on_a.request({"type": "start_conversation"})
        fourth = await on_b.request({"type": "start_conversation"})
        assert [first["type"], second["type"]] == ["ack", "ack"]
        assert third["code"] == fourth["code"] == "rate_limited"
        assert 50 < third["retry_after"] <= 60
        # Another session is not affected.
        others = await a.new_session()
        async with a.ws() as client:
            await client.hello(others["token"])
            assert (await client.request({"type": "start_conversation"}))["type"] == "ack"
    finally:
        await on_a.close()
        await on_b.close()


async def test_new_sessions_per_address_are_shared_by_every_process(start: Start) -> None:
    a = await start(sessions_per_minute=4)  # a burst of one
    b = await start(sessions_per_minute=4)
    async with a.client() as on_a, b.client() as on_b:
        assert (await on_a.post("/api/sessions")).status_code == 201
        refused = await on_b.post("/api/sessions")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 10 <= int(refused.headers["retry-after"]) <= 15
