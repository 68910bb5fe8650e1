"""Moving from the embedded SQLite default to Redis with the commands an operator runs
(issue 15): ``chatcore export`` while the server runs and after it stopped, ``chatcore import``
into Redis with the old data directory's key, then ``chatcore serve`` on Redis, where the old
token, its cursor and the reply cut off by the stop all carry on. Real processes throughout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.support import WsClient, cursor_key, is_event, is_terminal, send_frame
from tests.api.test_cli import ROOT, chatcore_serve
from tests.support.redis_server import unique_prefix

pytestmark = pytest.mark.slow

SLOW_DEMO = {"CHATCORE_LLM__DEMO_DELAY": "0.05"}  # a reply of a few seconds, cut in its middle


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def chatcore(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Ran:
    """``chatcore <args>`` as a process, with the embedded data directory of ``tmp_path``."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("src", "src/adapters", "apps/api")),
        "CHATCORE_DATA_DIR": str(tmp_path / "data"),
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatcore_api",
        *args,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


@pytest.mark.redis
async def test_sqlite_to_redis_with_the_commands_keeps_tokens_cursors_and_the_cut_reply(
    tmp_path: Path, redis_url: str
) -> None:
    async with chatcore_serve(tmp_path, env=SLOW_DEMO) as embedded:
        session = await embedded.new_session()
        client = await WsClient.open(embedded.ws_url)
        try:
            await client.hello(session["token"])
            await client.request(send_frame(session, "Tell me about event logs", "m1"))
            await client.recv_until(is_event("reply_delta"))
            cursor = [f for f in client.received if f["type"] == "event"][-1]["cursor"]
            # While the server runs and writes: each session as of one moment.
            live = await chatcore(tmp_path, "export", "--output", str(tmp_path / "live.jsonl"))
            embedded.process.send_signal(signal.SIGKILL)
            await embedded.process.wait()
        finally:
            await client.close()
    assert live.code == 0, live.err
    assert "exported 1 sessions" in live.err
    key_file = tmp_path / "data" / "secret_key"
    assert f"signed with the key in {key_file}" in live.err

    # Stopped (a reply cut in its middle): the archive the move uses.
    archive = tmp_path / "move.jsonl"
    exported = await chatcore(tmp_path, "export", "-o", str(archive))
    assert exported.code == 0, exported.err
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key not in archive.read_text()  # the archive holds no key
    lines = archive.read_text().splitlines()
    assert json.loads(lines[0])["source"] == "sqlite"
    assert json.loads(lines[-1]) == {
        "end": {"sessions": 1, "events": len(json.loads(lines[1])["records"])}
    }

    on_redis = {
        "CHATCORE_REDIS_URL": redis_url,
        "CHATCORE_REDIS__PREFIX": unique_prefix(),
        "CHATCORE_SECRET_KEY": key,
    }
    imported = await chatcore(tmp_path, "import", str(archive), env=on_redis)
    assert imported.code == 0, imported.err
    assert "imported 1 sessions" in imported.out
    assert "queued 1 turns awaiting an answer" in imported.out
    assert "warning" not in imported.err

    again = await chatcore(tmp_path, "import", str(archive), env=on_redis)
    assert again.code == 1
    assert "imported 0 sessions" in again.out and "1 already there" in again.out
    assert f"session {session['session_id']} is already there" in again.err

    # Another key: imported, with a warning saying how tokens would be lost.
    other = {**on_redis, "CHATCORE_REDIS__PREFIX": unique_prefix(), "CHATCORE_SECRET_KEY": "o" * 40}
    warned = await chatcore(tmp_path, "import", str(archive), env=other)
    assert warned.code == 0
    assert "warning: the exported deployment signs tokens with key" in warned.err

    async with chatcore_serve(tmp_path, env={**on_redis, **SLOW_DEMO}) as served:
        client = await WsClient.open(served.ws_url)
        try:
            # The old token, the old cursor: the conversation goes on from there.
            welcome, _ = await client.hello(session["token"], last_event_id=cursor)
            assert welcome["resume"] == "events"
            frames = await client.until(is_terminal, timeout=60)
        finally:
            await client.close()
    events = [f for f in frames if f["type"] == "event"]
    keys = [cursor_key(f["cursor"]) for f in events]
    assert keys == sorted(set(keys)) and keys[0] > cursor_key(cursor)
    kinds = [f["event"]["type"] for f in events]
    assert "reply_abandoned" in kinds  # the attempt the stop cut off, closed
    assert kinds[-1] == "reply_completed"


async def test_the_commands_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    nothing = await chatcore(tmp_path, "export", "-o", str(tmp_path / "x.jsonl"))
    assert nothing.code == 1 and "there is no such file" in nothing.err
    assert not (tmp_path / "x.jsonl").exists()

    in_memory = await chatcore(tmp_path, "export", env={"CHATCORE_STORAGE": "memory"})
    assert in_memory.code == 2 and "nothing to export" in in_memory.err

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "chatcore.sessions", "version": 1}\n{"session_id": [\n')
    refused = await chatcore(tmp_path, "import", str(bad))
    assert refused.code == 1
    assert "line 1: a bad header" in refused.err

    newer = tmp_path / "newer.jsonl"
    newer.write_text('{"format": "chatcore.sessions", "version": 9}\n')
    too_new = await chatcore(tmp_path, "import", str(newer))
    assert too_new.code == 1 and "archive format version 9" in too_new.err
    assert not (tmp_path / "data" / "chatcore.db").exists()  # the store was not even opened
