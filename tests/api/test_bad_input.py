"""Everything a client can get wrong: each is refused clearly, and only the ones that cannot
be recovered from close the connection (with the close code the protocol documents)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from websockets.exceptions import InvalidStatus

from chatcore_api.tokens import TokenSigner
from tests.api.support import SECRET, Start, is_terminal, send_frame
from tests.support.factories import ManualClock
from tests.support.scripted_llm import ScriptedLLM

BAD_FRAMES = [
    pytest.param("{not json", "not valid JSON", id="malformed-json"),
    pytest.param("[1, 2, 3]", "JSON object", id="array"),
    pytest.param('"hello"', "JSON object", id="string"),
    pytest.param("{}", "type", id="no-type"),
    pytest.param('{"type": 7}', "type", id="numeric-type"),
    pytest.param('{"type": "launch_rockets"}', "launch_rockets", id="unknown-type"),
    pytest.param(
        '{"type": "send", "conversation_id": "c", "text": "x"}',
        "client_message_id",
        id="missing-field",
    ),
    pytest.param(
        '{"type": "send", "conversation_id": 5, "client_message_id": "m", "text": "x"}',
        "conversation_id",
        id="wrong-type",
    ),
    pytest.param(
        '{"type": "send", "conversation_id": "c c", "client_message_id": "m", "text": "x"}',
        "conversation_id",
        id="bad-id",
    ),
    pytest.param('{"type": "ping", "extra": true}', "extra", id="unknown-field"),
    pytest.param(
        '{"type": "rename_conversation", "conversation_id": "c", "title": "' + "t" * 300 + '"}',
        "title",
        id="title-too-long",
    ),
]


@pytest.mark.parametrize(("raw", "hint"), BAD_FRAMES)
async def test_an_unreadable_frame_gets_bad_frame_and_the_connection_stays_usable(
    start: Start, raw: str, hint: str
) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.send(raw)
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "bad_frame"
        assert hint in error["message"]
        assert (await client.ping())["type"] == "pong"


async def test_a_bad_frame_echoes_its_request_id(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.send({"type": "send", "request_id": "abc", "conversation_id": 1})
        error = await client.recv()
        assert error["code"] == "bad_frame" and error["request_id"] == "abc"


async def test_a_binary_frame_is_refused_and_the_connection_stays_usable(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.send(b"\x00\x01binary")
        error = await client.recv()
        assert error["code"] == "bad_frame" and "binary" in error["message"]
        assert (await client.ping())["type"] == "pong"


async def test_domain_errors_come_back_with_their_code_and_the_connection_stays_open(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM(), max_message_chars=50)
    session = await api.new_session()
    conv = session["conversation_id"]
    async with api.ws() as client:
        await client.hello(session["token"])
        cases = {
            "unknown_conversation": {"conversation_id": "nope", "text": "hi"},
            "message_too_long": {"conversation_id": conv, "text": "x" * 51},
            "empty_message": {"conversation_id": conv, "text": "   "},
        }
        for code, fields in cases.items():
            error = await client.request({"type": "send", "client_message_id": code, **fields})
            assert error["type"] == "error", error
            assert error["code"] == code
            assert error["message"]
        ok = await client.request(
            {"type": "send", "client_message_id": "ok", "conversation_id": conv, "text": "x" * 50}
        )
        assert ok["type"] == "ack"
        await client.until(is_terminal)


async def test_a_frame_over_the_size_limit_closes_with_1009(start: Start) -> None:
    api = await start(max_frame_bytes=4096)
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.send(json.dumps({"type": "ping", "nonce": "x" * 5000}))
        assert await client.close_code() == 1009


async def test_sending_faster_than_the_limit_is_refused_with_retry_after(start: Start) -> None:
    api = await start(llm=ScriptedLLM(), messages_per_minute=1, messages_burst=1)
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        first = await client.request(send_frame(session, "one", "a"))
        assert first["type"] == "ack"
        second = await client.request(send_frame(session, "two", "b"))
        assert second["type"] == "error" and second["code"] == "rate_limited"
        assert 0 < second["retry_after"] <= 60
        assert (await client.ping())["type"] == "pong"


async def test_a_connection_that_never_says_hello_is_closed(start: Start) -> None:
    api = await start(hello_timeout=0.3)
    async with api.ws() as client:
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "hello_timeout"
        assert await client.close_code() == 1008


async def test_the_first_frame_must_be_hello_or_the_connection_is_closed(start: Start) -> None:
    api = await start()
    async with api.ws() as client:
        await client.send({"type": "ping", "request_id": "p0"})
        error = await client.recv()
        assert error["code"] == "hello_required" and error["request_id"] == "p0"
        assert await client.close_code() == 1008


async def test_a_second_hello_is_an_error(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.send({"type": "hello", "token": session["token"]})
        error = await client.recv()
        assert error["code"] == "already_authenticated"
        assert (await client.ping())["type"] == "pong"


async def test_a_silent_connection_is_closed_after_the_idle_timeout(start: Start) -> None:
    api = await start(idle_timeout=0.4)
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        assert await client.close_code() == 4008


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "v1.aaaaaaaaaaaaaaaaaaaaaaaa.9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
async def test_an_invalid_token_is_unauthorized_then_closed_with_4001(
    start: Start, token: str
) -> None:
    api = await start()
    async with api.ws() as client:
        await client.send({"type": "hello", "token": token})
        error = await client.recv()
        assert error["type"] == "error" and error["code"] == "unauthorized"
        assert await client.close_code() == 4001


async def test_a_token_signed_with_another_key_is_unauthorized(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    forged = TokenSigner(
        b"another-key-" * 4, ttl=timedelta(days=1), clock=ManualClock(datetime.now(UTC))
    ).issue(session["session_id"])
    async with api.ws() as client:
        await client.send({"type": "hello", "token": forged.token})
        assert (await client.recv())["code"] == "unauthorized"
        assert await client.close_code() == 4001


async def test_an_expired_token_says_token_expired_then_closes_with_4001(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    past = ManualClock(datetime.now(UTC) - timedelta(days=30))
    expired = TokenSigner(SECRET.encode(), ttl=timedelta(days=1), clock=past).issue(
        session["session_id"]
    )
    async with api.ws() as client:
        await client.send({"type": "hello", "token": expired.token})
        error = await client.recv()
        assert error["code"] == "token_expired"
        assert await client.close_code() == 4001


async def test_a_valid_token_for_a_session_that_does_not_exist_is_refused(start: Start) -> None:
    api = await start()
    ghost = TokenSigner(
        SECRET.encode(), ttl=timedelta(days=1), clock=ManualClock(datetime.now(UTC))
    ).issue("G" * 32)
    async with api.ws() as client:
        await client.send({"type": "hello", "token": ghost.token})
        assert (await client.recv())["code"] == "session_not_found"
        assert await client.close_code() == 4001


@pytest.mark.parametrize("cursor", ["garbage", "1-0", "99999999999999-0"])
async def test_a_cursor_that_is_not_an_event_of_the_session_is_refused_with_4002(
    start: Start, cursor: str
) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.send({"type": "hello", "token": session["token"], "last_event_id": cursor})
        error = await client.recv()
        assert error["code"] == "bad_cursor"
        assert await client.close_code() == 4002


async def test_an_unsupported_protocol_version_is_refused_with_4003(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    async with api.ws() as client:
        await client.send({"type": "hello", "token": session["token"], "protocol": 2})
        assert (await client.recv())["code"] == "unsupported_protocol"
        assert await client.close_code() == 4003


async def test_a_foreign_origin_is_refused_at_the_handshake(start: Start) -> None:
    api = await start()
    with pytest.raises(InvalidStatus) as refused:
        async with api.ws(origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        async with api.ws(origin="null"):
            pass


async def test_same_origin_and_configured_origins_are_accepted(start: Start) -> None:
    api = await start(allowed_origins=["https://chat.example.com"])
    session = await api.new_session()
    for origin in (f"http://127.0.0.1:{api.port}", "https://chat.example.com"):
        async with api.ws(origin=origin) as client:
            welcome, _ = await client.hello(session["token"])
            assert welcome["type"] == "welcome"


async def test_compression_is_not_negotiated_even_when_offered(start: Start) -> None:
    api = await start()
    async with api.ws(compression="deflate") as client:
        assert client.ws.response is not None
        assert "Sec-WebSocket-Extensions" not in client.ws.response.headers
