"""Protocol v1 over a real server and a real WebSocket client: the conversation itself."""

from __future__ import annotations

import asyncio

from tests.api.support import (
    Start,
    cursor_key,
    delta_text,
    event_types,
    events,
    is_event,
    is_terminal,
    send_frame,
)
from tests.support.scripted_llm import ScriptedLLM


async def test_a_conversation_goes_hello_snapshot_send_ack_then_the_streamed_reply(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM(words=["Hel", "lo", " world", "!"], delay=0.01))
    session = await api.new_session(display_name="Ada", language="English")
    async with api.ws() as client:
        welcome, frames = await client.hello(session["token"])
        assert welcome["session_id"] == session["session_id"]
        assert welcome["protocol"] == 1
        assert welcome["resume"] == "snapshot"
        assert welcome["model"] == "scripted"
        assert welcome["limits"]["max_frame_bytes"] == 65536
        assert welcome["token"].startswith("v2.")
        snapshot, caught_up = frames
        assert snapshot["type"] == "snapshot"
        assert snapshot["profile"] == {"display_name": "Ada", "language": "English"}
        assert [c["conversation_id"] for c in snapshot["conversations"]] == [
            session["conversation_id"]
        ]
        assert caught_up == {"type": "caught_up", "cursor": snapshot["cursor"]}

        ack = await client.request(send_frame(session, "Hello?"))
        assert ack["type"] == "ack" and ack["for_type"] == "send"
        assert ack["duplicate"] is False
        assert ack["client_message_id"] == "m1"
        assert ack["conversation_id"] == session["conversation_id"]

        frames = await client.until(is_terminal)
        streamed = events(frames)
        submitted = next(f for f in streamed if f["event"]["type"] == "message_submitted")
        assert submitted["cursor"] == ack["cursor"]
        assert submitted["event"]["message_id"] == ack["message_id"]
        kinds = event_types(frames)
        assert kinds.index("message_submitted") < kinds.index("reply_started")
        assert kinds.index("reply_started") < kinds.index("reply_delta")
        assert kinds[-1] == "reply_completed"
        text = delta_text(streamed)
        assert text == "Hello world!"
        cursors = [cursor_key(f["cursor"]) for f in streamed]
        assert cursors == sorted(set(cursors)), "cursors must strictly increase"
        assert all(
            cursor_key(c) > cursor_key(snapshot["cursor"]) for c in [f["cursor"] for f in streamed]
        )


async def test_every_tab_of_a_session_receives_the_same_events(start: Start) -> None:
    api = await start(llm=ScriptedLLM(words=[f"w{n} " for n in range(8)], delay=0.01))
    session = await api.new_session()
    async with api.ws() as tab1, api.ws() as tab2:
        await tab1.hello(session["token"])
        _, frames = await tab2.hello(session["token"])
        since = cursor_key(frames[-1]["cursor"])  # tab1 also sees tab2 arrive; skip that
        await tab1.request(send_frame(session))
        seen1 = [
            f for f in events(await tab1.until(is_terminal)) if cursor_key(f["cursor"]) > since
        ]
        seen2 = events(await tab2.until(is_terminal))
        assert seen1 == seen2
        assert seen1[0]["event"]["type"] == "message_submitted"


async def test_a_retried_message_is_recorded_once_and_acknowledged_as_a_duplicate(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        first = await client.request(send_frame(session, cmid="same"))
        again = await client.request(send_frame(session, cmid="same"))
        assert again["duplicate"] is True
        assert (again["message_id"], again["cursor"]) == (first["message_id"], first["cursor"])
        await client.until(is_terminal)
    async with api.client() as http:
        page = await http.get(
            f"/api/sessions/{session['session_id']}/messages",
            params={"conversation_id": session["conversation_id"]},
            headers={"authorization": f"Bearer {session['token']}"},
        )
    users = [m for m in page.json()["messages"] if m["role"] == "user"]
    assert len(users) == 1


async def test_cancel_ends_the_reply_as_cancelled_keeping_the_partial_text(start: Start) -> None:
    llm = ScriptedLLM(words=[f"word{n} " for n in range(200)], delay=0.05)
    api = await start(llm=llm)
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.request(send_frame(session))
        await client.recv_until(is_event("reply_delta"))
        ack = await client.request(
            {"type": "cancel", "conversation_id": session["conversation_id"]}
        )
        assert ack["type"] == "ack" and ack["for_type"] == "cancel"
        assert ack["cursor"] is not None
        frames = await client.until(is_terminal)
    streamed = events(frames)
    end = streamed[-1]["event"]
    assert end["type"] == "reply_cancelled"
    said = delta_text(streamed)
    assert said and end["partial_text"] == said
    assert len(said.split()) < 200
    assert "reply_cancel_requested" in event_types(frames)


async def test_disconnecting_never_cancels_the_reply(start: Start) -> None:
    llm = ScriptedLLM(words=[f"w{n} " for n in range(10)], delay=0.05)
    api = await start(llm=llm)
    session = await api.new_session()
    async with api.ws() as client:
        _, frames = await client.hello(session["token"])
        cursor = frames[-1]["cursor"]
        await client.request(send_frame(session))
    await asyncio.sleep(0.2)  # the reply goes on with nobody connected
    async with api.ws() as client:
        await client.hello(session["token"], last_event_id=cursor)
        frames = await client.until(is_terminal)
    assert event_types(frames)[-1] == "reply_completed"
    text = "".join(
        f["event"]["text"] for f in events(frames) if f["event"]["type"] == "reply_delta"
    )
    assert text == "".join(f"w{n} " for n in range(10))
    assert llm.closed_early == 0


async def test_conversation_and_profile_commands_are_acknowledged_with_their_cursor(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        started = await client.request(
            {"type": "start_conversation", "conversation_id": "c2", "title": "Plans"}
        )
        assert started["type"] == "ack" and started["conversation_id"] == "c2"
        generated = await client.request({"type": "start_conversation"})
        assert generated["conversation_id"] and generated["conversation_id"] != "c2"
        renamed = await client.request(
            {"type": "rename_conversation", "conversation_id": "c2", "title": "Trips"}
        )
        assert renamed["for_type"] == "rename_conversation" and renamed["cursor"]
        profile = await client.request({"type": "set_profile", "display_name": "Grace"})
        assert profile["for_type"] == "set_profile" and profile["cursor"]
        cursors = [cursor_key(a["cursor"]) for a in (started, generated, renamed, profile)]
        assert cursors == sorted(cursors)
        duplicate = await client.request({"type": "start_conversation", "conversation_id": "c2"})
        assert duplicate["type"] == "error" and duplicate["code"] == "conversation_exists"
        nothing = await client.request({"type": "cancel", "conversation_id": "c2"})
        assert nothing["type"] == "error" and nothing["code"] == "nothing_to_cancel"
    async with api.ws() as client:
        _, frames = await client.hello(session["token"])
        snapshot = frames[0]
        titles = {c["conversation_id"]: c["title"] for c in snapshot["conversations"]}
        assert titles["c2"] == "Trips"
        assert snapshot["profile"]["display_name"] == "Grace"


async def test_ping_is_answered_with_pong_echoing_the_nonce(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        pong = await client.ping()
        assert pong["type"] == "pong"
