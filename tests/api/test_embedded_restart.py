"""The embedded default keeps your chats: ``chatcore serve`` with no configuration stores into
SQLite in its data directory, keeps its signing key there, and survives being killed in the
middle of a reply (issue 15). Real processes, SIGKILL, the same data directory."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import httpx
import pytest

from tests.api.support import WsClient, cursor_key, is_event, is_terminal, send_frame
from tests.api.test_cli import chatcore_serve

pytestmark = pytest.mark.slow

TERMINALS = ("reply_completed", "reply_failed", "reply_cancelled")
SLOW_DEMO = {"CHATCORE_LLM__DEMO_DELAY": "0.05"}  # a reply of a few seconds, cut in its middle


async def test_a_reply_cut_by_kill_9_is_answered_once_after_a_restart_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with chatcore_serve(tmp_path, env=SLOW_DEMO) as first:
        session = await first.new_session()
        client = await WsClient.open(first.ws_url)
        try:
            await client.hello(session["token"])
            ack = await client.request(send_frame(session, "Tell me about event logs", "m1"))
            assert ack["type"] == "ack"
            await client.recv_until(is_event("reply_delta"))
            seen = [f for f in client.received if f["type"] == "event"]
            cursor = seen[-1]["cursor"]
            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
        finally:
            await client.close()
    assert (data / "chatcore.db").exists()
    key = data / "secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    async with chatcore_serve(tmp_path, env=SLOW_DEMO) as second:
        client = await WsClient.open(second.ws_url)
        try:
            # The same token works (the key was kept), and the resume goes on from the cursor.
            welcome, _ = await client.hello(session["token"], last_event_id=cursor)
            assert welcome["resume"] == "events"
            frames = await client.until(is_terminal, timeout=60)
            events = [f for f in frames if f["type"] == "event"]
            keys = [cursor_key(f["cursor"]) for f in events]
            assert keys == sorted(set(keys)) and keys[0] > cursor_key(cursor)  # no gap, no dup
            kinds = [f["event"]["type"] for f in events]
            assert "reply_abandoned" in kinds  # the cut-off attempt, closed
            assert [k for k in kinds if k in TERMINALS] == ["reply_completed"]

            # The whole conversation is there, and it goes on.
            await client.request(send_frame(session, "And after a restart?", "m2"))
            await client.until(
                lambda f: is_terminal(f) and f["cursor"] != events[-1]["cursor"], timeout=60
            )
        finally:
            await client.close()
        async with httpx.AsyncClient(base_url=second.http) as http:
            page = await http.get(
                f"/api/sessions/{session['session_id']}/messages",
                params={"conversation_id": session["conversation_id"]},
                headers={"Authorization": f"Bearer {session['token']}"},
            )
        assert page.status_code == 200, page.text
        messages = page.json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        assert [m["status"] for m in messages if m["role"] == "assistant"] == ["complete"] * 2


async def test_a_second_server_on_the_same_data_directory_is_refused_at_start(
    tmp_path: Path,
) -> None:
    async with chatcore_serve(tmp_path):
        with pytest.raises(AssertionError, match="another chatcore process is using"):
            async with chatcore_serve(tmp_path):
                pass


async def test_workers_beside_the_embedded_default_are_refused_with_a_word_about_redis(
    tmp_path: Path,
) -> None:
    for flags in (("--workers", "2"), ("--no-worker",)):
        with pytest.raises(AssertionError, match="needs Redis"):
            async with chatcore_serve(tmp_path, *flags):
                pass


async def test_a_damaged_database_stops_the_start_with_one_line_naming_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "chatcore.db").write_bytes(b"not a database at all" * 200)
    with pytest.raises(AssertionError) as failed:
        async with chatcore_serve(tmp_path):
            pass
    output = str(failed.value)
    assert str(data / "chatcore.db") in output
    assert "Traceback" not in output
