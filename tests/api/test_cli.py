"""``chatcore serve`` as real processes: the embedded default, graceful shutdown on SIGTERM,
and two API processes on one Redis serving one session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.support import (
    SECRET,
    WsClient,
    cursor_key,
    delta_text,
    is_event,
    is_terminal,
    send_frame,
)
from tests.support.redis_server import free_port, unique_prefix

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# After a graceful shutdown uvicorn re-raises the signal it caught, as Unix servers do.
STOPPED = {0, -signal.SIGTERM}


@dataclass
class ServeProcess:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def new_session(self) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=self.http, timeout=10) as http:
            response = await http.post("/api/sessions")
        assert response.status_code == 201
        data: dict[str, str] = response.json()
        return data


@contextlib.asynccontextmanager
async def chatcore_serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ServeProcess]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("src", "src/adapters", "apps/api")),
        "CHATCORE_WEB_DIR": "",
        # (the embedded default keeps its file here, never in the real home directory)
        "CHATCORE_DATA_DIR": str(tmp_path / "data"),
        **(env or {}),
    }
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chatcore_api",
            "serve",
            "--port",
            str(port),
            *args,
            env=environ,
            stdout=sink,
            stderr=sink,
            cwd=ROOT,
        )
    served = ServeProcess(process, port, log)
    try:
        async with asyncio.timeout(30), httpx.AsyncClient() as http:
            while True:
                if process.returncode is not None:
                    raise AssertionError(f"serve exited early:\n{log.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{served.http}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serve_runs_the_embedded_default_and_stops_gracefully_on_sigterm(
    tmp_path: Path,
) -> None:
    async with chatcore_serve(tmp_path, env={"CHATCORE_LLM__DEMO_DELAY": "0.005"}) as served:
        async with httpx.AsyncClient(base_url=served.http) as http:
            ready = (await http.get("/readyz")).json()
            root = await http.get("/")
        assert ready["status"] == "ready" and ready["in_process_worker"] is True
        assert "npm run build" in root.text
        session = await served.new_session()
        client = await WsClient.open(served.ws_url)
        try:
            welcome, _ = await client.hello(session["token"])
            assert "demo" in welcome["model"]
            await client.request(send_frame(session, "What is chatcore?", "m"))
            await client.recv_until(is_event("reply_delta"))
            served.process.send_signal(signal.SIGTERM)
            assert await client.close_code(timeout=15) == 1001
        finally:
            await client.close()
        assert await asyncio.wait_for(served.process.wait(), timeout=30) in STOPPED
    log = served.log.read_text()
    assert "reply completed" in log, "the worker finished the reply in its grace period"
    assert log.index("reply completed") < log.index("chatcore API stopped")
    assert session["token"].rsplit(".", 1)[1] not in log
    assert welcome["token"].rsplit(".", 1)[1] not in log
    assert '"session_id"' in log  # JSON logs, with the session id


def test_the_embedded_default_never_imports_litellm(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from chatcore_api.app import create_app\n"
        "from chatcore_api.runtime import Runtime\n"
        "from chatcore_api.settings import load_settings\n"
        "async def main():\n"
        "    s = load_settings(environ={})\n"
        "    app = create_app(s)\n"
        "    rt = await Runtime.start(app.state.container, s)\n"
        "    await rt.stop()\n"
        "asyncio.run(main())\n"
        "print('litellm' in sys.modules)\n"
    )
    env = {"PYTHONPATH": os.pathsep.join(sys.path), "XDG_DATA_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.redis
async def test_two_api_processes_on_one_redis_serve_one_session(
    tmp_path: Path, redis_url: str
) -> None:
    env = {
        "CHATCORE_REDIS_URL": redis_url,
        "CHATCORE_SECRET_KEY": SECRET,
        "CHATCORE_REDIS__PREFIX": unique_prefix(),
        "CHATCORE_LLM__DEMO_DELAY": "0.01",
    }
    async with (
        chatcore_serve(tmp_path, "--no-worker", env=env) as first,
        chatcore_serve(tmp_path, env=env) as second,
    ):
        async with httpx.AsyncClient() as http:
            # Heartbeats live in Redis: the process without a worker sees the other's worker.
            for _ in range(200):
                ready = (await http.get(f"{first.http}/readyz")).json()
                if ready["workers"] == 1:
                    break
                await asyncio.sleep(0.05)
            assert (ready["workers"], ready["in_process_worker"]) == (1, False)
        session = await first.new_session()
        on_first = await WsClient.open(first.ws_url)
        watcher = await WsClient.open(second.ws_url)
        try:
            await on_first.hello(session["token"])
            await watcher.hello(session["token"])
            await on_first.request(send_frame(session, "hello", "m"))
            got = await on_first.recv_until(is_event("reply_delta"))
            cursor = got[-1]["cursor"]
        finally:
            await on_first.close()
        try:
            on_second = await WsClient.open(second.ws_url)
            try:
                await on_second.hello(session["token"], last_event_id=cursor)
                rest = [f for f in await on_second.until(is_terminal) if f["type"] == "event"]
            finally:
                await on_second.close()
            truth = [f for f in await watcher.until(is_terminal) if f["type"] == "event"]
        finally:
            await watcher.close()
        after = [f for f in truth if cursor_key(f["cursor"]) > cursor_key(cursor)]
        rest = rest[: len(after)]
        assert rest == after
        assert after[-1]["event"]["type"] == "reply_completed"
        assert delta_text(truth)
        for served in (first, second):
            served.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(served.process.wait(), timeout=30) in STOPPED
