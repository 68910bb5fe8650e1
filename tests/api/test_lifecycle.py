"""Conversations people can shape, over the protocol: regenerate, edit, select a branch, delete
a conversation or the session, export; on the in-memory backend and on Redis, over real
sockets, with several tabs (and two server processes sharing one backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatcore.protocol import CloseCode
from tests.api.support import (
    Frame,
    Start,
    WsClient,
    event_types,
    events,
    is_event,
    is_terminal,
    send_frame,
)
from tests.support.scripted_llm import ScriptedLLM

SNAPSHOT_SCHEMA = Path(__file__).resolve().parents[2] / "docs/protocol/server/snapshot.json"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def answers(message_id: str, after: str | None = None) -> Any:
    """The terminal event answering ``message_id`` (after the cursor ``after``, if given)."""

    def done(frame: Frame) -> bool:
        return (
            is_terminal(frame)
            and frame["event"]["in_reply_to"] == message_id
            and (after is None or _key(frame["cursor"]) > _key(after))
        )

    return done


def _key(cursor: str) -> tuple[int, int]:
    ms, seq = cursor.split("-")
    return int(ms), int(seq)


async def snapshot_conv(client: WsClient, token: str, conversation_id: str) -> Frame:
    _, frames = await client.hello(token)
    found: list[Frame] = [
        c for c in frames[0]["conversations"] if c["conversation_id"] == conversation_id
    ]
    (conv,) = found
    return conv


async def test_regenerate_answers_again_keeping_the_first_answer_on_every_tab(
    start: Start,
) -> None:
    llm = ScriptedLLM(words=["first"])
    api = await start(llm=llm)
    session = await api.new_session()
    cid, token = session["conversation_id"], session["token"]
    async with api.ws() as tab, api.ws() as other:
        await tab.hello(token)
        await other.hello(token)
        sent = await tab.request(send_frame(session, "a question"))
        await tab.until(answers(sent["message_id"]))
        llm.words = ["second"]
        ack = await tab.request(
            {"type": "regenerate", "conversation_id": cid, "message_id": sent["message_id"]}
        )
        assert ack["type"] == "ack" and ack["for_type"] == "regenerate"
        assert ack["message_id"] == sent["message_id"] and ack["cursor"]
        frames = await other.until(answers(sent["message_id"], after=ack["cursor"]))
        requested = [f for f in events(frames) if is_event("reply_requested")(f)]
        assert [f["cursor"] for f in requested] == [ack["cursor"]]
        assert requested[0]["event"]["in_reply_to"] == sent["message_id"]
    async with api.ws() as late:
        conv = await snapshot_conv(late, token, cid)
    assert [m["text"] for m in conv["messages"]] == ["a question", "second"]
    assert [m["text"] for m in conv["branches"]] == ["first"]
    assert {m["parent_id"] for m in [conv["messages"][1], *conv["branches"]]} == {
        sent["message_id"]
    }


async def test_edit_starts_a_branch_and_select_branch_switches_every_tab(start: Start) -> None:
    api = await start(llm=ScriptedLLM(words=["ok"]))
    session = await api.new_session()
    cid, token = session["conversation_id"], session["token"]
    async with api.ws() as tab, api.ws() as other:
        await tab.hello(token)
        await other.hello(token)
        first = await tab.request(send_frame(session, "cats?", "m1"))
        await tab.until(answers(first["message_id"]))
        edit = {
            "type": "edit",
            "conversation_id": cid,
            "message_id": first["message_id"],
            "client_message_id": "m2",
            "text": "dogs?",
        }
        edited = await tab.request(dict(edit))
        assert (edited["for_type"], edited["duplicate"]) == ("edit", False)
        assert edited["message_id"] != first["message_id"]
        await other.until(answers(edited["message_id"]))
        again = await tab.request(dict(edit, text="fish?"))  # the same client message id
        assert again["duplicate"] is True and again["message_id"] == edited["message_id"]
        (made,) = [f for f in events(other.received) if is_event("message_edited")(f)]
        assert made["event"]["edit_of"] == first["message_id"]
        assert made["event"]["parent_id"] is None

        chosen = await tab.request(
            {"type": "select_branch", "conversation_id": cid, "message_id": first["message_id"]}
        )
        assert chosen["for_type"] == "select_branch" and chosen["cursor"]
        seen = await other.until(is_event("branch_selected"))
        (switch,) = [f for f in events(seen) if is_event("branch_selected")(f)]
        assert switch["cursor"] == chosen["cursor"]
        assert switch["event"]["message_id"] == first["message_id"]
        same = await tab.request(
            {"type": "select_branch", "conversation_id": cid, "message_id": first["message_id"]}
        )
        assert same["type"] == "ack" and same["cursor"] is None
    async with api.ws() as late:
        conv = await snapshot_conv(late, token, cid)
    assert [m["text"] for m in conv["messages"]] == ["cats?", "ok"]
    assert switch["event"]["leaf_id"] == conv["messages"][-1]["message_id"]
    assert [m["text"] for m in conv["branches"]] == ["dogs?", "ok"]


async def test_the_new_commands_are_refused_with_their_documented_codes(start: Start) -> None:
    api = await start(
        llm=ScriptedLLM(words=["w "] * 100, delay=0.02),  # a delta each, past the cap
        retention={"max_events": 60, "reply_reserve": 50},
    )
    session = await api.new_session()
    cid, token = session["conversation_id"], session["token"]
    async with api.ws() as tab:
        await tab.hello(token)
        sent = await tab.request(send_frame(session, "long answer please"))
        await tab.until(is_event("reply_delta"))
        mid = sent["message_id"]
        refusals = {
            "unknown_message": {"type": "regenerate", "conversation_id": cid, "message_id": "x"},
            "reply_in_progress": {"type": "select_branch", "conversation_id": cid,
                                  "message_id": mid},
            "unknown_conversation": {"type": "delete_conversation", "conversation_id": "nope"},
        }  # fmt: skip
        for code, frame in refusals.items():
            refused = await tab.request(frame)
            assert (refused["type"], refused["code"]) == ("error", code), frame
        edit = {"type": "edit", "conversation_id": cid, "message_id": mid, "client_message_id": "e"}
        assert (await tab.request({**edit, "text": "again"}))["code"] == "reply_in_progress"
        assert (await tab.request({**edit, "text": " "}))["code"] == "empty_message"
        end = await tab.until(is_terminal, timeout=30)
        assert end[-1]["event"]["type"] == "reply_failed"
        assert end[-1]["event"]["code"] == "session_full"  # the reply hit the cap
        full = await tab.request(send_frame(session, "more", "m2"))
        assert (full["type"], full["code"]) == ("error", "session_full")
        # Deleting makes room.
        gone = await tab.request({"type": "delete_conversation", "conversation_id": cid})
        assert gone["for_type"] == "delete_conversation" and gone["cursor"]
        assert (await tab.request({"type": "start_conversation"}))["type"] == "ack"


async def test_a_deleted_conversation_leaves_every_tab_and_its_cursors_are_refused(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM(words=["a secret answer"]))
    other_api = await start(llm=ScriptedLLM())  # another server process on the same storage
    session = await api.new_session()
    cid, token, sid = session["conversation_id"], session["token"], session["session_id"]
    async with api.ws() as tab, other_api.ws() as elsewhere:
        await tab.hello(token)
        await elsewhere.hello(token)
        sent = await tab.request(send_frame(session, "a secret question"))
        await tab.until(answers(sent["message_id"]))
        inside = sent["cursor"]
        kept = await tab.request({"type": "start_conversation", "conversation_id": "kept"})
        ack = await tab.request({"type": "delete_conversation", "conversation_id": cid})
        assert ack["type"] == "ack" and ack["conversation_id"] == cid
        frames = await elsewhere.until(is_event("conversation_deleted"))
        (dead,) = [f for f in events(frames) if is_event("conversation_deleted")(f)]
        assert dead["cursor"] == ack["cursor"] and dead["event"]["conversation_id"] == cid
    # A client resuming from inside the deleted history: bad_cursor, then a snapshot.
    async with api.ws() as back:
        await back.send({"type": "hello", "token": token, "last_event_id": inside})
        assert (await back.recv())["code"] == "bad_cursor"
        assert await back.close_code() == CloseCode.BAD_CURSOR
    async with api.ws() as back:
        _, frames = await back.hello(token)
        assert [c["conversation_id"] for c in frames[0]["conversations"]] == ["kept"]
        assert "secret" not in json.dumps(frames)
    async with api.ws() as back:  # resuming from before the deletion: the tombstone comes
        _, frames = await back.hello(token, last_event_id=kept["cursor"])
        assert event_types(frames) == ["conversation_deleted"]
    async with api.client() as http:
        page = await http.get(
            f"/api/sessions/{sid}/messages",
            params={"conversation_id": cid},
            headers=bearer(token),
        )
    assert (page.status_code, page.json()["error"]["code"]) == (404, "unknown_conversation")


async def test_deleting_the_session_closes_every_connection_and_its_token_is_refused(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM())
    other_api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    token, sid = session["token"], session["session_id"]
    async with api.ws() as tab, other_api.ws() as elsewhere:
        await tab.hello(token)
        await elsewhere.hello(token)
        sent = await tab.request(send_frame(session))
        await tab.until(answers(sent["message_id"]))
        ack = await tab.request({"type": "delete_session"})
        assert (ack["type"], ack["for_type"], ack["cursor"]) == ("ack", "delete_session", None)
        assert await tab.close_code() == CloseCode.UNAUTHORIZED
        assert await elsewhere.close_code() == CloseCode.UNAUTHORIZED
        assert event_types(elsewhere.received)[-1] == "session_deleted"
    async with api.ws() as back:
        await back.send({"type": "hello", "token": token, "last_event_id": None})
        assert (await back.recv())["code"] == "session_not_found"
        assert await back.close_code() == CloseCode.UNAUTHORIZED
    async with api.client() as http:
        gone = await http.get(f"/api/sessions/{sid}", headers=bearer(token))
        again = await http.delete(f"/api/sessions/{sid}", headers=bearer(token))
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "session_not_found")
    assert (again.status_code, again.json()["error"]["code"]) == (404, "session_not_found")


# --- REST ---------------------------------------------------------------------------------


async def test_a_conversation_exports_as_markdown_and_json(start: Start) -> None:
    api = await start(llm=ScriptedLLM(words=["**Lisbon**", " in May."]))
    session = await api.new_session()
    cid, token, sid = session["conversation_id"], session["token"], session["session_id"]
    async with api.ws() as tab:
        await tab.hello(token)
        first = await tab.request(send_frame(session, "Where to?", "m1"))
        await tab.until(answers(first["message_id"]))
        edited = await tab.request(
            {"type": "edit", "conversation_id": cid, "message_id": first["message_id"],
             "client_message_id": "m2", "text": "Where to, in spring?"}
        )  # fmt: skip
        await tab.until(answers(edited["message_id"]))
    url = f"/api/sessions/{sid}/conversations/{cid}/export"
    async with api.client() as http:
        markdown = await http.get(url, params={"format": "markdown"}, headers=bearer(token))
        path = await http.get(url, headers=bearer(token))
        tree = await http.get(url, params={"format": "json", "tree": "true"}, headers=bearer(token))
    assert markdown.status_code == 200
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.headers["content-disposition"] == f'attachment; filename="{cid}.md"'
    assert "Where to, in spring?\n\n## Assistant" in markdown.text
    title, body_text = markdown.text.split("\n", 1)
    assert title == "# Where to?"  # (the first message titled the chat)
    assert "**Lisbon** in May." in body_text and "Where to?" not in body_text
    assert path.headers["content-type"] == "application/json"
    body = path.json()
    assert [m["text"] for m in body["messages"]] == ["Where to, in spring?", "**Lisbon** in May."]
    assert body["tree"] is False and body["active_path"] == [
        m["message_id"] for m in body["messages"]
    ]
    every = tree.json()["messages"]
    assert [m["text"] for m in every] == [
        "Where to?",
        "**Lisbon** in May.",
        "Where to, in spring?",
        "**Lisbon** in May.",
    ]
    assert every[2]["parent_id"] is None and every[3]["parent_id"] == every[2]["message_id"]


async def test_export_and_delete_refuse_what_does_not_fit(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    other = await api.new_session()
    cid, token, sid = session["conversation_id"], session["token"], session["session_id"]
    base = f"/api/sessions/{sid}/conversations"
    async with api.client() as http:
        cases = [
            (await http.get(f"{base}/nope/export", headers=bearer(token)), 404,
             "unknown_conversation"),
            (await http.get(f"{base}/{cid}/export", params={"format": "pdf"},
                            headers=bearer(token)), 422, "bad_request"),
            (await http.get(f"{base}/{cid}/export", params={"format": "markdown", "tree": "1"},
                            headers=bearer(token)), 422, "bad_request"),
            (await http.get(f"{base}/bad%20id/export", headers=bearer(token)), 422,
             "bad_request"),
            (await http.get(f"{base}/{cid}/export"), 401, "unauthorized"),
            (await http.get(f"{base}/{cid}/export", headers=bearer(other["token"])), 403,
             "forbidden"),
            (await http.delete(f"{base}/nope", headers=bearer(token)), 404,
             "unknown_conversation"),
            (await http.delete(f"/api/sessions/{sid}", headers=bearer(other["token"])), 403,
             "forbidden"),
        ]  # fmt: skip
        for response, status, code in cases:
            assert (response.status_code, response.json()["error"]["code"]) == (status, code)
        deleted = await http.delete(f"{base}/{cid}", headers=bearer(token))
        assert deleted.status_code == 200
        assert deleted.json()["conversation_id"] == cid and deleted.json()["cursor"]
        listed = await http.get(f"{base}", headers=bearer(token))
        assert listed.json()["conversations"] == []
        assert (await http.delete(f"/api/sessions/{sid}", headers=bearer(token))).status_code == 204
        assert (await http.get(f"/api/sessions/{other['session_id']}",
                               headers=bearer(other["token"]))).status_code == 200  # fmt: skip


async def test_a_snapshot_of_a_conversation_without_branches_keeps_its_old_shape(
    start: Start,
) -> None:
    """What an older client reads is unchanged: ``messages`` in order with the same fields;
    ``branches`` is empty and ``parent_id`` only chains them (both optional in the schema)."""
    api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    async with api.ws() as tab:
        await tab.hello(session["token"])
        sent = await tab.request(send_frame(session))
        await tab.until(answers(sent["message_id"]))
    async with api.ws() as late:
        conv = await snapshot_conv(late, session["token"], session["conversation_id"])
    assert conv["branches"] == []
    assert [m["parent_id"] for m in conv["messages"]] == [None, sent["message_id"]]
    schema = json.loads(SNAPSHOT_SCHEMA.read_text())
    assert "branches" not in schema["$defs"]["ConversationState"]["required"]
    assert "parent_id" not in schema["$defs"]["MessageState"]["required"]
