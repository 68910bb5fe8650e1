"""The published JSON Schemas (``docs/protocol``): generated from the frame models, kept up
to date, and describing what really goes over the wire."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from chatcore_api.schema import protocol_schemas, stale_schemas, write_schemas
from tests.api.support import Frame, Start, is_terminal
from tests.support.scripted_llm import ScriptedLLM

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "protocol"


def validator(name: str) -> Draft202012Validator:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_the_committed_schemas_are_up_to_date() -> None:
    assert stale_schemas(SCHEMAS) == [], "run: chatcore schema --out docs/protocol"


def test_every_client_and_server_frame_has_a_schema() -> None:
    names = set(protocol_schemas())
    for frame in (
        "hello",
        "send",
        "cancel",
        "start_conversation",
        "rename_conversation",
        "set_profile",
        "ping",
    ):
        assert f"client/{frame}.json" in names
    for frame in ("welcome", "snapshot", "event", "caught_up", "ack", "error", "pong"):
        assert f"server/{frame}.json" in names
    assert {"client.json", "server.json"} <= names


def test_the_check_notices_a_changed_missing_or_extra_file(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    assert stale_schemas(tmp_path) == []
    (tmp_path / "client" / "ping.json").write_text("{}\n")
    (tmp_path / "server" / "pong.json").unlink()
    (tmp_path / "client" / "extra.json").write_text("{}\n")
    assert stale_schemas(tmp_path) == ["client/extra.json", "client/ping.json", "server/pong.json"]


def test_the_schema_command_writes_and_checks(tmp_path: Path) -> None:
    env = {"PYTHONPATH": ":".join(sys.path)}
    command = [sys.executable, "-m", "chatcore_api", "schema", "--out", str(tmp_path)]
    written = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    assert "server/event.json" in written.stdout
    checked = subprocess.run([*command, "--check"], capture_output=True, text=True, env=env)
    assert checked.returncode == 0, checked.stderr
    (tmp_path / "server.json").write_text("{}")
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, env=env)
    assert stale.returncode == 1 and "server.json" in stale.stderr


async def test_frames_on_the_wire_match_the_schemas(start: Start) -> None:
    """A whole conversation, checked frame by frame against the published schemas."""
    api = await start(llm=ScriptedLLM(words=["Hi", " there"], delay=0.01))
    session = await api.new_session(display_name="Ada")
    conv = session["conversation_id"]
    sent: list[Frame] = [
        {"type": "hello", "token": session["token"], "last_event_id": None},
        {"type": "send", "conversation_id": conv, "client_message_id": "m1", "text": "hello"},
        {"type": "start_conversation", "title": "Next"},
        {"type": "rename_conversation", "conversation_id": "nope", "title": "x"},
        {"type": "set_profile", "language": "French"},
        {"type": "cancel", "conversation_id": conv},
        {"type": "ping", "nonce": "n1"},
    ]
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.request(dict(sent[1]))
        await client.until(is_terminal)
        for frame in sent[2:6]:
            await client.request(dict(frame))
        await client.ping()
        received = list(client.received)
    client_schema, server_schema = validator("client.json"), validator("server.json")
    for frame in sent:
        client_schema.validate(frame)
        validator(f"client/{frame['type']}.json").validate(frame)
    kinds = set()
    for frame in received:
        server_schema.validate(frame)
        validator(f"server/{frame['type']}.json").validate(frame)
        kinds.add(frame["type"])
    assert kinds >= {"welcome", "snapshot", "caught_up", "event", "ack", "error", "pong"}
