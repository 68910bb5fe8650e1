"""Conformance: what a client written from ``docs/protocol.md`` alone relies on.

Each test takes one promise of the document and checks it against a real server, over a real
WebSocket (and REST), on the in-memory backend and on Redis. The first tests read the document
itself and compare its lists (error codes, close codes, frames, events, settings, REST errors)
with what the server really has, so the two cannot drift apart again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

import chatcore_api.commands
import chatcore_api.handler
import chatcore_api.ratelimit
from chatcore.errors import DomainError
from chatcore.events import EVENT_TYPES
from chatcore.protocol import ClientFrame, CloseCode, ErrorCode, ServerFrame
from chatcore_api.errors import TokenExpired, Unauthorized
from chatcore_api.settings import ApiSettings
from chatcore_api.tokens import TokenSigner
from tests.api.support import (
    SECRET,
    WAIT,
    Frame,
    RunningApi,
    Start,
    WsClient,
    cursor_key,
    event_types,
    events,
    is_event,
    is_terminal,
    send_frame,
    serve,
    settings_for,
)
from tests.support.factories import ManualClock
from tests.support.redis_server import RedisServer, unique_prefix
from tests.support.scripted_llm import ScriptedLLM

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
CANONICAL = re.compile(r"^(0|[1-9][0-9]*)-(0|[1-9][0-9]*)$")


# --- reading the document ---------------------------------------------------------------------


def doc_section(number: int) -> str:
    text = DOC.read_text()
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, flags=re.M | re.S)
    assert match is not None, f"docs/protocol.md has no section {number}"
    return match.group(0)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in ``text``, as lists of cells."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if all(cell and set(cell) <= set("-: ") for cell in cells):
            rows.pop()  # the header above this separator
            continue
        rows.append(cells)
    return rows


def backticked(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def frame_types(frames: Any) -> set[str]:
    """The ``type`` tags of an ``Annotated[A | B | ..., Field(discriminator=...)]`` union."""
    union = get_args(frames)[0]
    return {model.model_fields["type"].default for model in get_args(union)}


def all_subclasses(cls: type[DomainError]) -> set[type[DomainError]]:
    found: set[type[DomainError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


# Domain errors that never reach a client under their own code, and why.
NOT_SENT_OVER_WS = {
    "domain_error": "the base class; only subclasses are raised",
    "invalid_id": "ids are checked by the frame's schema first: a bad id is a bad_frame",
    "stale_reply": "raised to a worker whose reply was taken over",
    "already_answered": "raised to a worker whose message already has its reply",
}


def test_the_documented_error_codes_are_exactly_the_ones_the_server_sends() -> None:
    documented = set()
    for row in table_rows(doc_section(9)):
        documented |= backticked(row[0])
    assert documented == {code.value for code in ErrorCode}
    assert "invalid_id" not in doc_section(9)


def test_every_refusal_of_a_command_has_a_documented_code() -> None:
    for cls in all_subclasses(DomainError) | {DomainError}:
        code = cls.code
        assert code in {c.value for c in ErrorCode} or code in NOT_SENT_OVER_WS, (
            f"{cls.__name__} ({code}) can reach a client but is not in ErrorCode and the document"
        )


def test_every_documented_error_code_has_a_place_in_the_server_that_sends_it() -> None:
    # The connection's modules: the handler, the commands it dispatches to, their limits.
    handler = "".join(
        Path(module.__file__).read_text()
        for module in (chatcore_api.handler, chatcore_api.commands, chatcore_api.ratelimit)
        if module.__file__ is not None
    )
    raised = {cls.code for cls in all_subclasses(DomainError)} | {
        Unauthorized.code,
        TokenExpired.code,
    }
    for code in ErrorCode:
        assert f"ErrorCode.{code.name}" in handler or code.value in raised, code


def test_the_documented_close_codes_are_the_ones_the_server_closes_with() -> None:
    documented = set()
    for row in table_rows(doc_section(8)):
        if row[0].isdigit():
            documented.add(int(row[0]))
    ours = {code.value for code in CloseCode}
    assert ours <= documented
    # 1012 is the one the ASGI server itself may close with when it restarts.
    assert documented - ours <= {1012}


def test_the_documented_frames_and_events_are_the_ones_on_the_wire() -> None:
    text = DOC.read_text()
    shown = set(re.findall(r'"type": "([a-z_]+)"', text))
    client, server = frame_types(ClientFrame), frame_types(ServerFrame)
    assert client <= shown, "every client frame has an example"
    assert server <= shown, "every server frame has an example"
    assert shown <= client | server | set(EVENT_TYPES)
    table = {cell for row in table_rows(doc_section(4)) for cell in backticked(row[0])}
    assert table == set(EVENT_TYPES)


def test_every_setting_the_document_names_is_a_real_setting() -> None:
    named = set(re.findall(r"CHATCORE_([A-Z_]+)", DOC.read_text()))
    assert {"TOKEN_TTL", "IDLE_TIMEOUT", "MAX_REPLAY_EVENTS", "RESTORE_RECORD_INTERVAL"} <= named
    assert {"RETENTION__IDLE_TTL", "RETENTION__MAX_EVENTS"} <= named
    for name in named:
        model: Any = ApiSettings
        for part in name.lower().split("__"):  # nested settings: CHATCORE_GROUP__FIELD
            assert part in model.model_fields, f"CHATCORE_{name} is not a setting"
            model = model.model_fields[part].annotation


# --- 1. caught_up carries the cursor the client is at ------------------------------------------


async def test_caught_up_always_carries_the_cursor_the_client_is_at(start: Start) -> None:
    api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    async with api.ws() as client:
        welcome, frames = await client.hello(session["token"])
        assert welcome["resume"] == "snapshot"
        snapshot, caught_up = frames[0], frames[-1]
        assert caught_up == {"type": "caught_up", "cursor": snapshot["cursor"]}
        latest = caught_up["cursor"]
        await client.request(send_frame(session))
        live = await client.until(is_terminal)
        newest = events(live)[-1]["cursor"]
    # Resuming from the latest cursor: no event to send, and caught_up names that cursor.
    async with api.ws() as client:
        welcome, frames = await client.hello(session["token"], last_event_id=newest)
        assert welcome["resume"] == "events"
        assert frames == [{"type": "caught_up", "cursor": newest}]
    # Resuming from an older one: the events after it, and caught_up at the last of them.
    async with api.ws() as client:
        _, frames = await client.hello(session["token"], last_event_id=latest)
        assert events(frames) and frames[-1] == {"type": "caught_up", "cursor": newest}
        assert events(frames)[-1]["cursor"] == newest


# --- 2. session_restored ----------------------------------------------------------------------


async def test_a_recorded_session_restored_is_the_first_event_of_the_resume_and_reaches_other_tabs(
    start: Start,
) -> None:
    api = await start(restore_record_interval=0)
    session = await api.new_session()
    async with api.ws() as other:
        _, frames = await other.hello(session["token"])
        cursor = frames[-1]["cursor"]
        async with api.ws() as client:
            welcome, frames = await client.hello(session["token"], last_event_id=cursor)
            assert welcome["resume"] == "events"
            (restored,) = events(frames)
            assert restored["event"]["type"] == "session_restored"
            assert restored["event"]["last_seen"] == cursor
            assert frames[-1] == {"type": "caught_up", "cursor": restored["cursor"]}
        (seen,) = await other.recv_until(is_event("session_restored"))
        assert seen == restored


async def test_a_first_load_folds_its_session_restored_into_the_snapshot(start: Start) -> None:
    api = await start(restore_record_interval=0)
    session = await api.new_session()
    async with api.ws() as other:
        await other.hello(session["token"])
        async with api.ws() as client:
            _, frames = await client.hello(session["token"])
            snapshot = frames[0]
            assert events(frames) == []
        (seen,) = await other.recv_until(is_event("session_restored"))
        assert seen["event"]["last_seen"] is None
        assert seen["cursor"] == snapshot["cursor"]


async def test_within_the_interval_a_reconnect_records_no_session_restored(start: Start) -> None:
    api = await start()  # the default interval, 60 s
    session = await api.new_session()
    async with api.ws() as client:
        _, frames = await client.hello(session["token"])
        cursor = frames[-1]["cursor"]
    for _ in range(3):
        async with api.ws() as client:
            _, frames = await client.hello(session["token"], last_event_id=cursor)
            assert frames == [{"type": "caught_up", "cursor": cursor}]


# --- 3. ping carries a request_id ------------------------------------------------------------


async def test_ping_echoes_its_request_id_and_nonce(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.send({"type": "ping", "nonce": "n", "request_id": "p1"})
        assert await client.recv() == {"type": "pong", "request_id": "p1", "nonce": "n"}
        await client.send({"type": "ping"})
        assert await client.recv() == {"type": "pong", "request_id": None, "nonce": None}


# --- 4. idle timeout --------------------------------------------------------------------------


async def test_pinging_every_third_of_idle_timeout_keeps_a_watcher_while_a_silent_one_is_closed(
    start: Start,
) -> None:
    # A reply streams for about 6 s; the server closes a client silent for 1.5 s.
    words = [f"w{n} " for n in range(60)]
    api = await start(llm=ScriptedLLM(words=words, delay=0.1), idle_timeout=1.5)
    session = await api.new_session()
    pinger, silent = await WsClient.open(api.ws_url), await WsClient.open(api.ws_url)
    done = asyncio.Event()

    async def ping_every_third_of_idle_timeout(idle: float) -> None:
        n = 0
        while not done.is_set():
            await pinger.send({"type": "ping", "nonce": str(n)})
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), idle / 3)

    try:
        welcome, _ = await pinger.hello(session["token"])
        idle = welcome["limits"]["idle_timeout"]
        assert idle == 1.5
        pinging = asyncio.create_task(ping_every_third_of_idle_timeout(idle))
        opened = time.monotonic()
        await silent.hello(session["token"])
        async with api.ws() as sender:
            await sender.hello(session["token"])
            assert (await sender.request(send_frame(session)))["type"] == "ack"
        # The watcher that sends nothing is closed while it is still receiving the reply.
        assert await silent.close_code(timeout=WAIT) == CloseCode.IDLE_TIMEOUT
        assert events(silent.received)
        assert not any(is_terminal(f) for f in silent.received)
        # The one that only pings lives through the whole reply (several idle timeouts).
        await pinger.until(is_terminal, timeout=30)
        assert time.monotonic() - opened > 2 * idle
        assert (await pinger.ping())["type"] == "pong"
        assert pinger.closed is None
    finally:
        done.set()
        await asyncio.gather(pinger.close(), silent.close())
    await pinging


# --- 5. set_profile is a partial update ------------------------------------------------------


async def test_set_profile_changes_only_the_fields_it_names(start: Start) -> None:
    api = await start()
    session = await api.new_session()

    async def profile() -> dict[str, Any]:
        async with api.client() as http:
            response = await http.get(
                f"/api/sessions/{session['session_id']}",
                headers={"authorization": f"Bearer {session['token']}"},
            )
        body: dict[str, Any] = response.json()["profile"]
        return body

    async with api.ws() as client:
        await client.hello(session["token"])
        assert (await client.request({"type": "set_profile", "display_name": "Ada"}))["cursor"]
        ack = await client.request({"type": "set_profile", "language": "German"})

        def recorded(frame: Frame) -> bool:
            return frame["type"] == "event" and bool(frame["cursor"] == ack["cursor"])

        updated = next(f for f in await client.until(recorded) if recorded(f))
        assert updated["event"]["display_name"] == "Ada"  # the whole profile, name kept
        assert updated["event"]["language"] == "German"
        assert await profile() == {"display_name": "Ada", "language": "German"}

        nothing = await client.request({"type": "set_profile"})
        assert nothing["type"] == "ack" and nothing["cursor"] is None
        same = await client.request({"type": "set_profile", "display_name": " Ada "})
        assert same["type"] == "ack" and same["cursor"] is None
        assert await profile() == {"display_name": "Ada", "language": "German"}

        cleared = await client.request({"type": "set_profile", "display_name": None})
        assert cleared["type"] == "ack" and cleared["cursor"]
        assert await profile() == {"display_name": None, "language": "German"}

        for fields in ({"display_name": ""}, {"display_name": "   "}, {"language": "\t"}):
            refused = await client.request({"type": "set_profile", **fields})
            assert refused["type"] == "error" and refused["code"] == "invalid_profile", fields
        too_long = await client.request({"type": "set_profile", "display_name": "x" * 65})
        assert too_long["code"] == "invalid_profile"
        assert await profile() == {"display_name": None, "language": "German"}


# --- 6. the first frame must be a valid hello -------------------------------------------------

NOT_A_HELLO = [
    pytest.param('{"type": "hello", "token": ""}', "bad_frame", id="empty-token"),
    pytest.param('{"type": "hello", "token": "' + "t" * 1025 + '"}', "bad_frame", id="long-token"),
    pytest.param('{"type": "hello", "token": 5}', "bad_frame", id="mistyped-token"),
    pytest.param('{"type": "hello"}', "bad_frame", id="no-token"),
    pytest.param('{"type": "hello", "token": "t", "colour": "red"}', "bad_frame", id="extra"),
    pytest.param("{not json", "bad_frame", id="not-json"),
    pytest.param(b"\x00binary", "bad_frame", id="binary"),
    pytest.param('{"type": "ping", "nonce": "x"}', "hello_required", id="ping-first"),
    pytest.param(
        '{"type": "hello", "protocol": 2, "token": "t", "new": 1}',
        "unsupported_protocol",
        id="newer-protocol",
    ),
]


@pytest.mark.parametrize(("first", "code"), NOT_A_HELLO)
async def test_a_first_frame_that_is_not_a_valid_hello_is_refused_and_closed_at_once(
    start: Start, first: str | bytes, code: str
) -> None:
    api = await start(hello_timeout=60)  # the close cannot be the hello timeout's
    async with api.ws() as client:
        await client.send(first)
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == code
        expected = 4003 if code == "unsupported_protocol" else 1008
        assert await client.close_code(timeout=WAIT) == expected


# --- 7. ids that break the pattern are bad frames ------------------------------------------


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "send", "conversation_id": "bad id!", "client_message_id": "m", "text": "x"},
         "conversation_id"),
        ({"type": "send", "conversation_id": "{conv}", "client_message_id": "bad id!",
          "text": "x"}, "client_message_id"),
        ({"type": "start_conversation", "conversation_id": "bad id!"}, "conversation_id"),
        ({"type": "cancel", "conversation_id": "x" * 81}, "conversation_id"),
        ({"type": "ping", "request_id": "bad id!"}, "request_id"),
    ],
)  # fmt: skip
async def test_an_id_breaking_the_pattern_is_a_bad_frame_naming_the_field(
    start: Start, frame: Frame, field: str
) -> None:
    api = await start()
    session = await api.new_session()
    frame = {k: v.format(conv=session["conversation_id"]) for k, v in frame.items()}
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.send(frame)
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "bad_frame"
        assert field in error["message"]
        assert (await client.ping())["type"] == "pong"


# --- 8. the first send of a client message id decides ---------------------------------------


async def test_the_first_send_of_a_client_message_id_decides_its_text(start: Start) -> None:
    api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        first = await client.request(send_frame(session, "the first text", "cm-1"))
        again = await client.request(send_frame(session, "another text", "cm-1"))
        assert first["duplicate"] is False and again["duplicate"] is True
        for key in ("cursor", "message_id", "conversation_id", "client_message_id"):
            assert again[key] == first[key]
        await client.until(is_terminal)
        submitted = [f for f in events(client.received) if is_event("message_submitted")(f)]
    assert [f["event"]["text"] for f in submitted] == ["the first text"]
    async with api.ws() as late:
        _, frames = await late.hello(session["token"])
    (conv,) = frames[0]["conversations"]
    users = [m for m in conv["messages"] if m["role"] == "user"]
    assert [m["text"] for m in users] == ["the first text"]


# --- 9. REST errors ---------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def signed(session_id: str, *, key: bytes = SECRET.encode(), age_days: int = 0) -> str:
    clock = ManualClock(datetime.now(UTC) - timedelta(days=age_days))
    return TokenSigner(key, ttl=timedelta(days=1), clock=clock).issue(session_id).token


@dataclass(frozen=True)
class RestCase:
    status: int
    code: str
    call: Callable[[httpx.AsyncClient, dict[str, Any]], Any]


def _messages(**params: Any) -> Callable[[httpx.AsyncClient, dict[str, Any]], Any]:
    def call(http: httpx.AsyncClient, s: dict[str, Any]) -> Any:
        query = {"conversation_id": s["conversation_id"], **params}
        query = {k: v for k, v in query.items() if v is not None}
        return http.get(
            f"/api/sessions/{s['session_id']}/messages", params=query, headers=bearer(s["token"])
        )

    return call


def _export(
    conversation_id: str | None = None, params: dict[str, str] | None = None
) -> Callable[[httpx.AsyncClient, dict[str, Any]], Any]:
    def call(http: httpx.AsyncClient, s: dict[str, Any]) -> Any:
        cid = conversation_id or s["conversation_id"]
        return http.get(
            f"/api/sessions/{s['session_id']}/conversations/{cid}/export",
            params=params,
            headers=bearer(s["token"]),
        )

    return call


def _session_with(
    headers: Callable[[dict[str, Any]], dict[str, str]],
) -> Callable[[httpx.AsyncClient, dict[str, Any]], Any]:
    return lambda http, s: http.get(f"/api/sessions/{s['session_id']}", headers=headers(s))


REST_ERRORS = {
    "after-garbage": RestCase(400, "bad_cursor", _messages(after="garbage")),
    "after-leading-zero": RestCase(400, "bad_cursor", _messages(after="01-0")),
    "no-token": RestCase(401, "unauthorized", _session_with(lambda s: {})),
    "garbled-token": RestCase(401, "unauthorized", _session_with(lambda s: bearer("garbled"))),
    "forged-token": RestCase(
        401,
        "unauthorized",
        _session_with(lambda s: bearer(signed(s["session_id"], key=b"another-key" * 4))),
    ),
    "expired-token": RestCase(
        401, "token_expired", _session_with(lambda s: bearer(signed(s["session_id"], age_days=3)))
    ),
    "other-session": RestCase(
        403, "forbidden", _session_with(lambda s: bearer(s["other"]["token"]))
    ),
    "session-gone": RestCase(
        404,
        "session_not_found",
        lambda http, s: http.get(f"/api/sessions/{'G' * 32}", headers=bearer(signed("G" * 32))),
    ),
    "unknown-conversation": RestCase(
        404, "unknown_conversation", _messages(conversation_id="nope")
    ),
    "no-such-path": RestCase(404, "not_found", lambda http, s: http.get("/api/nothing")),
    "wrong-method": RestCase(
        405, "method_not_allowed", lambda http, s: http.delete("/api/sessions")
    ),
    "too-large": RestCase(
        413,
        "too_large",
        lambda http, s: http.post(
            "/api/sessions",
            content=b'{"display_name": "' + b"x" * 70_000 + b'"}',
            headers={"content-type": "application/json"},
        ),
    ),
    "limit-501": RestCase(422, "bad_request", _messages(limit=501)),
    "foreign-host": RestCase(
        400,
        "bad_host",
        lambda http, s: http.post("/api/sessions", headers={"Host": "rebind.attacker.example"}),
    ),
    "no-conversation-id": RestCase(422, "bad_request", _messages(conversation_id=None)),
    "blank-name": RestCase(
        422,
        "invalid_profile",
        lambda http, s: http.post("/api/sessions", json={"display_name": ""}),
    ),
    "export-unknown-conversation": RestCase(404, "unknown_conversation", _export("nope")),
    "export-format": RestCase(422, "bad_request", _export(params={"format": "pdf"})),
    "export-tree-as-markdown": RestCase(
        422, "bad_request", _export(params={"format": "markdown", "tree": "true"})
    ),
    "delete-unknown-conversation": RestCase(
        404,
        "unknown_conversation",
        lambda http, s: http.delete(
            f"/api/sessions/{s['session_id']}/conversations/nope", headers=bearer(s["token"])
        ),
    ),
    "delete-other-session": RestCase(
        403,
        "forbidden",
        lambda http, s: http.delete(
            f"/api/sessions/{s['session_id']}", headers=bearer(s["other"]["token"])
        ),
    ),
}


def test_the_documented_rest_errors_are_the_ones_tested_here() -> None:
    section = doc_section(2)
    rest_table = section[section.index("| status | code | when |") :]
    documented = {
        (int(row[0]), next(iter(backticked(row[1]))))
        for row in table_rows(rest_table)
        if row[0].isdigit()
    }
    # 429 and 503 are shown by test_rest.py (rate limit) and the Redis outage test below.
    tested = {(case.status, case.code) for case in REST_ERRORS.values()}
    assert documented == tested | {(429, "rate_limited"), (503, "unavailable")}


@pytest.mark.parametrize("case", list(REST_ERRORS), ids=list(REST_ERRORS))
async def test_each_documented_rest_error(start: Start, case: str) -> None:
    expected = REST_ERRORS[case]
    api = await start()
    session = await api.new_session()
    session["other"] = await api.new_session()
    async with api.client() as http:
        response = await expected.call(http, session)
    assert response.status_code == expected.status, response.text
    error = response.json()["error"]
    assert error["code"] == expected.code and error["message"]
    if expected.status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if expected.code == "bad_request":
        assert error["details"] and {"loc", "msg", "type"} <= set(error["details"][0])


# --- 10. the token lifetime setting -----------------------------------------------------------


async def test_tokens_live_for_the_token_ttl_setting(start: Start) -> None:
    api = await start(token_ttl=120)
    before = datetime.now(UTC)
    session = await api.new_session()
    expires = datetime.fromisoformat(session["expires_at"])
    assert timedelta(seconds=110) <= expires - before <= timedelta(seconds=125)
    async with api.ws() as client:
        welcome, _ = await client.hello(session["token"])
    fresh = datetime.fromisoformat(welcome["token_expires_at"])
    assert timedelta(seconds=110) <= fresh - before <= timedelta(seconds=125)


# --- 11. when a snapshot replaces the replay --------------------------------------------------


async def test_a_resume_replays_up_to_max_replay_events_and_gets_a_snapshot_beyond(
    start: Start,
) -> None:
    api = await start(max_replay_events=3)
    session = await api.new_session()
    async with api.ws() as client:
        _, frames = await client.hello(session["token"])
        cursor = frames[-1]["cursor"]
        for n in range(3):  # one event each
            assert (await client.request({"type": "start_conversation"}))["cursor"], n
    async with api.ws() as client:
        welcome, frames = await client.hello(session["token"], last_event_id=cursor)
        assert welcome["resume"] == "events"
        assert event_types(frames) == ["conversation_started"] * 3
        await client.request({"type": "start_conversation"})
    async with api.ws() as client:
        welcome, frames = await client.hello(session["token"], last_event_id=cursor)
        assert welcome["resume"] == "snapshot"
        assert [f["type"] for f in frames] == ["snapshot", "caught_up"]
        assert len(frames[0]["conversations"]) == 5
        assert frames[-1]["cursor"] == frames[0]["cursor"]


# --- 12. the cursor of a snapshot's messages ------------------------------------------------


async def test_snapshot_messages_carry_the_cursor_of_the_event_that_finished_them(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM(words=[f"w{n} " for n in range(40)], delay=0.05))
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.request(send_frame(session, "answer me", "a"))
        await client.until(is_terminal)
        await client.request(send_frame(session, "then stop", "b"))
        await client.until(is_event("reply_delta"))
        await client.request({"type": "cancel", "conversation_id": session["conversation_id"]})
        await client.until(is_event("reply_cancelled"))
        log = events(client.received)
    async with api.ws() as late:
        _, frames = await late.hello(session["token"])
    snapshot = frames[0]
    (conv,) = snapshot["conversations"]
    cursor_of = {
        (f["event"]["type"], f["event"].get("message_id") or f["event"].get("in_reply_to")): f[
            "cursor"
        ]
        for f in log
        if f["event"]["type"] in {"message_submitted", "reply_completed", "reply_cancelled"}
    }
    user_a, reply_a, user_b, reply_b = conv["messages"]
    assert user_a["cursor"] == cursor_of["message_submitted", user_a["message_id"]]
    assert reply_a["cursor"] == cursor_of["reply_completed", user_a["message_id"]]
    assert user_b["cursor"] == cursor_of["message_submitted", user_b["message_id"]]
    assert reply_b["cursor"] == cursor_of["reply_cancelled", user_b["message_id"]]
    assert reply_b["status"] == "cancelled"
    keys = [cursor_key(m["cursor"]) for m in conv["messages"]]
    assert keys == sorted(keys) and keys[-1] <= cursor_key(snapshot["cursor"])


# --- 13. cursors are canonical strings ---------------------------------------------------------


async def test_cursors_are_canonical_and_a_non_canonical_one_is_refused(start: Start) -> None:
    api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    async with api.ws() as client:
        _, frames = await client.hello(session["token"])
        await client.request(send_frame(session))
        await client.until(is_terminal)
        received = client.received
    cursors = [f["cursor"] for f in received if f.get("cursor")]
    assert cursors and all(CANONICAL.fullmatch(c) for c in cursors)
    keys = [cursor_key(f["cursor"]) for f in events(received)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    cursor = frames[-1]["cursor"]
    ms, seq = cursor.split("-")
    for variant in (f"0{ms}-{seq}", f"{ms}-0{seq}", f" {cursor}", f"{ms}-{seq}.0"):
        async with api.ws() as client:
            await client.send(
                {"type": "hello", "token": session["token"], "last_event_id": variant}
            )
            error = await client.recv()
            assert error["code"] == "bad_cursor", variant
            assert await client.close_code() == CloseCode.BAD_CURSOR
    async with api.ws() as client:  # the exact string the server sent is accepted
        welcome, _ = await client.hello(session["token"], last_event_id=cursor)
        assert welcome["resume"] == "events"
    async with api.client() as http:
        response = await http.get(
            f"/api/sessions/{session['session_id']}/messages",
            params={"conversation_id": session["conversation_id"], "after": f"0{ms}-{seq}"},
            headers=bearer(session["token"]),
        )
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_cursor"


# --- storage unavailable: a retryable close ----------------------------------------------------


@pytest.mark.redis
async def test_while_redis_is_down_a_new_connection_is_closed_with_1013_and_a_retry_succeeds() -> (
    None
):
    with RedisServer(appendonly=True) as redis:
        settings = settings_for(redis_url=redis.url, redis={"prefix": unique_prefix()})
        async with serve(settings, llm=ScriptedLLM()) as api:
            session = await api.new_session()
            async with api.ws() as client:
                _, frames = await client.hello(session["token"])
                cursor = frames[-1]["cursor"]
            redis.stop()
            try:
                async with api.ws() as client:
                    await client.send(
                        {"type": "hello", "token": session["token"], "last_event_id": cursor}
                    )
                    error = await client.recv(timeout=30)
                    assert error["type"] == "error" and error["code"] == "unavailable"
                    assert await client.close_code(timeout=30) == CloseCode.TRY_AGAIN_LATER
                async with api.client() as http:
                    down = await http.get(
                        f"/api/sessions/{session['session_id']}", headers=bearer(session["token"])
                    )
                assert down.status_code == 503
                assert down.json()["error"]["code"] == "unavailable"
                assert down.headers["retry-after"]
            finally:
                redis.start()
            # What a client does after 1013: reconnect with its cursor, with backoff.
            welcome = await _connect_with_backoff(api, session["token"], cursor)
            assert welcome["resume"] == "events"


async def _connect_with_backoff(api: RunningApi, token: str, cursor: str) -> Frame:
    delay = 0.05
    async with asyncio.timeout(30):
        while True:
            async with api.ws() as client:
                await client.send({"type": "hello", "token": token, "last_event_id": cursor})
                first = await client.recv(timeout=WAIT)
                if first["type"] == "welcome":
                    return first
                assert first["code"] == "unavailable", first
                assert await client.close_code() == CloseCode.TRY_AGAIN_LATER
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
