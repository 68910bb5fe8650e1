"""The REST side: sessions, conversations, history; bearer tokens scoped to one session;
clear 4xx JSON errors; and schemathesis over the OpenAPI schema (never a server error)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from chatcore_api.tokens import TokenSigner
from tests.api.support import SECRET, Frame, RunningApi, Start, is_terminal, serve, settings_for
from tests.support.factories import ManualClock
from tests.support.scripted_llm import ScriptedLLM


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def answers(message_id: str) -> Callable[[Frame], bool]:
    def done(frame: Frame) -> bool:
        return is_terminal(frame) and frame["event"]["in_reply_to"] == message_id

    return done


async def converse(api: RunningApi, session: dict[str, Any], *texts: str) -> None:
    async with api.ws() as client:
        await client.hello(session["token"])
        for n, text in enumerate(texts):
            ack = await client.request(
                {
                    "type": "send",
                    "conversation_id": session["conversation_id"],
                    "client_message_id": f"m{n}",
                    "text": text,
                }
            )
            assert ack["type"] == "ack"
            await client.until(answers(ack["message_id"]))


async def test_creating_a_session_returns_its_id_conversation_and_a_signed_token(
    start: Start,
) -> None:
    api = await start()
    async with api.client() as http:
        empty = await http.post("/api/sessions")
        named = await http.post("/api/sessions", json={"display_name": "Ada", "language": "fr"})
    assert empty.status_code == named.status_code == 201
    body = named.json()
    assert set(body) == {"session_id", "conversation_id", "token", "expires_at"}
    assert body["token"].startswith("v2.")
    assert body["token"].split(".")[2:4] == [body["session_id"], "0"]
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC) + timedelta(days=6)
    assert named.headers["cache-control"] == "no-store"
    assert empty.json()["session_id"] != body["session_id"]


async def test_the_session_its_conversations_and_history_are_readable_with_its_token(
    start: Start,
) -> None:
    api = await start(llm=ScriptedLLM(words=["Bonjour", "!"]))
    session = await api.new_session(display_name="Ada", language="French")
    await converse(api, session, "first", "second")
    sid, conv = session["session_id"], session["conversation_id"]
    async with api.client() as http:
        info = (await http.get(f"/api/sessions/{sid}", headers=bearer(session["token"]))).json()
        listed = (
            await http.get(f"/api/sessions/{sid}/conversations", headers=bearer(session["token"]))
        ).json()
        page = await http.get(
            f"/api/sessions/{sid}/messages",
            params={"conversation_id": conv, "limit": 3},
            headers=bearer(session["token"]),
        )
        assert page.status_code == 200
        first = page.json()
        rest = (
            await http.get(
                f"/api/sessions/{sid}/messages",
                params={"conversation_id": conv, "after": first["next_after"]},
                headers=bearer(session["token"]),
            )
        ).json()
    assert info["profile"] == {"display_name": "Ada", "language": "French"}
    assert info["conversations"] == listed["conversations"]
    (summary,) = info["conversations"]
    assert summary["message_count"] == 4 and summary["replying"] is False
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user"]
    assert first["next_after"] == first["messages"][-1]["cursor"]
    assert [m["text"] for m in rest["messages"]] == ["Bonjour!"]
    assert rest["next_after"] is None


async def test_a_token_of_another_session_is_forbidden(start: Start) -> None:
    api = await start()
    mine, theirs = await api.new_session(), await api.new_session()
    async with api.client() as http:
        response = await http.get(
            f"/api/sessions/{theirs['session_id']}", headers=bearer(mine["token"])
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"authorization": "Bearer nonsense"}, "unauthorized"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "unauthorized"),
    ],
)
async def test_reading_without_a_valid_token_is_unauthorized(
    start: Start, headers: dict[str, str], code: str
) -> None:
    api = await start()
    session = await api.new_session()
    async with api.client() as http:
        response = await http.get(f"/api/sessions/{session['session_id']}", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"


async def test_an_expired_token_is_told_apart_from_an_invalid_one(start: Start) -> None:
    api = await start()
    session = await api.new_session()
    past = ManualClock(datetime.now(UTC) - timedelta(days=30))
    expired = TokenSigner(SECRET.encode(), ttl=timedelta(days=1), clock=past).issue(
        session["session_id"]
    )
    async with api.client() as http:
        response = await http.get(
            f"/api/sessions/{session['session_id']}", headers=bearer(expired.token)
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"conversation_id": "nope"}, 404, "unknown_conversation"),
        ({"conversation_id": "c", "after": "yesterday"}, 400, "bad_cursor"),
        ({"conversation_id": "c", "limit": 0}, 422, "bad_request"),
        ({"conversation_id": "c", "limit": "many"}, 422, "bad_request"),
        ({}, 422, "bad_request"),
    ],
)
async def test_bad_history_queries_get_clear_4xx_errors(
    start: Start, params: dict[str, Any], status: int, code: str
) -> None:
    api = await start()
    session = await api.new_session()
    async with api.client() as http:
        response = await http.get(
            f"/api/sessions/{session['session_id']}/messages",
            params=params,
            headers=bearer(session["token"]),
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ('{"display_name": 5}', 422),
        ('{"favourite_colour": "blue"}', 422),
        ('{"display_name": "' + "x" * 300 + '"}', 422),
        ("[1, 2]", 422),
        ("{not json", 422),
    ],
)
async def test_bad_session_bodies_get_clear_4xx_errors(
    start: Start, body: str, status: int
) -> None:
    api = await start()
    async with api.client() as http:
        response = await http.post(
            "/api/sessions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "bad_request"


async def test_an_oversized_body_is_refused_with_413(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        response = await http.post(
            "/api/sessions",
            content=b'{"display_name": "' + b"x" * 100_000 + b'"}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


async def test_creating_sessions_too_fast_from_one_address_is_rate_limited() -> None:
    async with serve(settings_for(sessions_per_minute=4)) as api, api.client() as http:
        statuses = [(await http.post("/api/sessions")).status_code for _ in range(3)]
        assert statuses.count(201) == 1 and statuses.count(429) == 2
        limited = await http.post("/api/sessions")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1


async def test_unknown_api_paths_are_json_404s(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        response = await http.get("/api/nothing/here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- schemathesis ----------------------------------------------------------------------------


def _fuzz_operations(schema_doc: dict[str, Any], base_url: str, session: dict[str, str]) -> int:
    """Run every operation of the schema with generated input (sync: schemathesis uses
    requests); half of the cases are pointed at a real session with its real token."""
    schema = schemathesis.openapi.from_dict(schema_doc)
    calls = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok)
        operation = result.ok()

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), real=st.booleans())
        def check(case: Any, real: bool) -> None:
            nonlocal calls
            headers = {}
            if real and case.path_parameters and "session_id" in case.path_parameters:
                case.path_parameters["session_id"] = session["session_id"]
                headers = bearer(session["token"])
            response = case.call(base_url=base_url, headers=headers, timeout=10)
            calls += 1
            case.validate_response(response, checks=[not_a_server_error])
            assert response.status_code < 500, (case.path, response.status_code, response.text)

        check()
    return calls


async def test_no_generated_request_gets_a_server_error() -> None:
    async with serve(settings_for(sessions_per_minute=100_000)) as api:
        session = await api.new_session()
        async with httpx.AsyncClient(base_url=api.http) as http:
            schema_doc = (await http.get("/openapi.json")).json()
        calls = await asyncio.to_thread(_fuzz_operations, schema_doc, api.http, session)
    assert calls > 50
