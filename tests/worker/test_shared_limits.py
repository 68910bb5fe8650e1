"""Limits of a deployment, as real processes on one private redis-server: two ``chatcore serve``
API processes enforce one message limit between them (finding 1 of the review: every extra API
process multiplied the allowance), and a ``chatcore worker`` charges a reply's tokens to the
budget the API then refuses new messages against."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.support import SECRET, WsClient, is_terminal, send_frame
from tests.support.redis_server import free_port
from tests.support.worker_processes import ChatcoreProcess
from tests.worker.conftest import Deployment

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@dataclass
class ApiProcess:
    process: ChatcoreProcess
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def new_session(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as h:
            response = await h.post("/api/sessions")
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    async def connect(self, session: Mapping[str, Any]) -> WsClient:
        client = await WsClient.open(self.ws_url)
        await client.hello(session["token"])
        return client


def start_api(deployment: Deployment, name: str, env: Mapping[str, str]) -> ApiProcess:
    port = free_port()
    process = deployment.pool.start(
        name,
        "serve",
        "--no-worker",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env={"CHATCORE_SECRET_KEY": SECRET, **env},
    )
    process.wait_for_log("chatcore API started", timeout=30)
    return ApiProcess(process, port)


async def test_two_api_processes_on_one_redis_enforce_one_limit(deployment: Deployment) -> None:
    limits = {
        "CHATCORE_MESSAGES_PER_MINUTE": "1",
        "CHATCORE_MESSAGES_BURST": "3",
        "CHATCORE_IP_MESSAGES_PER_MINUTE": "1",
        "CHATCORE_IP_MESSAGES_BURST": "5",
    }
    a, b = start_api(deployment, "api-a", limits), start_api(deployment, "api-b", limits)
    session = await a.new_session()
    on_a, on_b = await a.connect(session), await b.connect(session)
    try:
        answers = []
        for n in range(6):  # alternately on each process, one conversation each
            client = on_a if n % 2 == 0 else on_b
            ack = await client.request({"type": "start_conversation", "conversation_id": f"c{n}"})
            assert ack["type"] == "ack", ack
            frame = {**send_frame(session, cmid=f"m{n}"), "conversation_id": f"c{n}"}
            answers.append(await client.request(frame))
    finally:
        await on_a.close()
        await on_b.close()
    # One process alone would have let 3 through; each process on its own memory, 6.
    assert [x["type"] for x in answers] == ["ack"] * 3 + ["error"] * 3
    assert {x["code"] for x in answers[3:]} == {"rate_limited"}
    assert all(50 < x["retry_after"] <= 60 for x in answers[3:])

    # The address's allowance (5) is shared too: two more sends, wherever they go.
    results = []
    for api in (b, a, b):
        other = await api.new_session()
        client = await api.connect(other)
        try:
            results.append(await client.request(send_frame(other, cmid="x")))
        finally:
            await client.close()
    assert [x["type"] for x in results] == ["ack", "ack", "error"]
    assert results[-1]["code"] == "rate_limited" and "address" in results[-1]["message"]


async def test_a_worker_charges_the_reply_to_the_budget_the_api_refuses_against(
    deployment: Deployment,
) -> None:
    api = start_api(deployment, "api", {"CHATCORE_IP_TOKENS_PER_MINUTE": "60"})
    deployment.pool.worker("w").wait_for_log("worker started", timeout=30)
    session = await api.new_session()
    client = await api.connect(session)
    try:
        assert (await client.request(send_frame(session, cmid="m1")))["type"] == "ack"
        await client.until(is_terminal, timeout=30)
        refused = await client.request(send_frame(session, cmid="m2"))
    finally:
        await client.close()
    # The demo answer and its prompt are a few hundred tokens: minutes of a 60-a-minute budget.
    assert refused["code"] == "budget_exceeded", refused
    assert refused["retry_after"] > 60
    terminal = [f for f in client.received if is_terminal(f)]
    assert terminal[-1]["event"]["type"] == "reply_completed"
