"""Fuzzing the ``/ws`` protocol: whatever a client sends after hello, it gets exactly one
answer (ack, error or pong), never an internal error, and the connection survives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.support import Frame, Start, WsClient
from tests.support.scripted_llm import ScriptedLLM

ANSWERS = {"ack", "error", "pong"}
TYPES = [
    "hello",
    "send",
    "cancel",
    "start_conversation",
    "rename_conversation",
    "set_profile",
    "ping",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def valid_examples(conversation_id: str) -> list[Frame]:
    return [
        {"type": "ping", "nonce": "n"},
        {
            "type": "send",
            "conversation_id": conversation_id,
            "client_message_id": "m",
            "text": "hello",
        },
        {"type": "cancel", "conversation_id": conversation_id},
        {"type": "start_conversation", "title": "t"},
        {"type": "rename_conversation", "conversation_id": conversation_id, "title": "t"},
        {"type": "set_profile", "display_name": "Ada", "language": "en"},
        {"type": "hello", "token": "x", "last_event_id": None},
    ]


@st.composite
def near_valid(draw: st.DrawFn, examples: list[Frame]) -> Frame:
    """A valid frame, or one with a single thing wrong."""
    frame = dict(draw(st.sampled_from(examples)))
    if "client_message_id" in frame:
        frame["client_message_id"] = draw(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True))
    action = draw(st.sampled_from(["keep", "drop", "retype", "extra", "type", "request_id"]))
    keys = sorted(frame)
    if action == "drop":
        del frame[draw(st.sampled_from(keys))]
    elif action == "retype":
        frame[draw(st.sampled_from(keys))] = draw(json_values)
    elif action == "extra":
        frame[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    elif action == "type":
        frame["type"] = draw(st.sampled_from(TYPES) | st.text(max_size=20) | json_values)
    elif action == "request_id":
        frame["request_id"] = draw(st.text(max_size=100) | json_values)
    return frame


async def answer_to(client: WsClient, payload: str) -> Frame:
    """Send one frame; return the one answer to it (events of the session are skipped)."""
    await client.send(payload)
    while True:
        frame = await client.recv(timeout=10)
        if frame["type"] in ANSWERS:
            return frame
        assert frame["type"] == "event", frame


def run_fuzz(
    loop: asyncio.AbstractEventLoop, client: WsClient, payloads: st.SearchStrategy[str], n: int
) -> list[str]:
    """Drive the async client from hypothesis (which runs in this worker thread)."""
    codes: list[str] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payload=payloads)
    def check(payload: str) -> None:
        answer = asyncio.run_coroutine_threadsafe(answer_to(client, payload), loop).result(30)
        assert answer["type"] in ANSWERS
        if answer["type"] == "error":
            assert answer["code"] != "internal_error", (payload, answer)
            codes.append(answer["code"])

    check()
    return codes


async def fuzz(start: Start, payloads: Any, n: int) -> list[str]:
    api = await start(llm=ScriptedLLM(), messages_per_minute=100_000, messages_burst=10_000)
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        strategy = payloads(session["conversation_id"])
        loop = asyncio.get_running_loop()
        codes = await asyncio.to_thread(run_fuzz, loop, client, strategy, n)
        pong = await client.ping()
        assert pong["type"] == "pong"
    return codes


async def test_random_json_values_never_break_the_connection(start: Start) -> None:
    codes = await fuzz(start, lambda _: json_values.map(json.dumps), 150)
    assert set(codes) <= {"bad_frame"} and codes


async def test_random_text_never_breaks_the_connection(start: Start) -> None:
    codes = await fuzz(start, lambda _: st.text(max_size=300), 100)
    assert set(codes) <= {"bad_frame"}


async def test_near_valid_frames_are_answered_and_never_break_the_connection(
    start: Start,
) -> None:
    codes = await fuzz(start, lambda conv: near_valid(valid_examples(conv)).map(json.dumps), 250)
    assert "bad_frame" in codes
