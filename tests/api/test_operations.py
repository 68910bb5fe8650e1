"""Operations and the edge: health, readiness, metrics, logs, security headers, CORS, and the
static web client."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path

import pytest

from chatcore_api.logs import JsonFormatter
from chatcore_api.settings import SettingsError, load_settings
from tests.api.support import Start, is_terminal, send_frame, serve, settings_for
from tests.support.scripted_llm import ScriptedLLM


async def test_healthz_says_the_process_is_alive(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        response = await http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_reports_storage_and_the_in_process_worker(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and body["storage"] is True
    assert body["workers"] >= 1 and body["in_process_worker"] is True


async def test_readyz_is_not_ready_without_any_live_worker() -> None:
    async with serve(settings_for(worker={"enabled": False})) as api, api.client() as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["workers"] == 0 and response.json()["storage"] is True


async def test_metrics_expose_connections_frames_messages_and_reply_timings(start: Start) -> None:
    api = await start(llm=ScriptedLLM(words=["a ", "b ", "c"], first_delay=0.05, delay=0.02))
    session = await api.new_session()
    async with api.ws() as client:
        await client.hello(session["token"])
        await client.request(send_frame(session, "hi", "m"))
        await client.until(is_terminal)
        await client.send("{oops")
        await client.recv()
        async with api.client() as http:
            text = (await http.get("/metrics")).text
    expected = [
        "chatcore_ws_connections_open 1.0",
        'chatcore_ws_frames_received_total{type="hello"} 1.0',
        'chatcore_ws_frames_received_total{type="send"} 1.0',
        'chatcore_ws_frames_received_total{type="invalid"} 1.0',
        'chatcore_ws_frames_sent_total{type="event"}',
        'chatcore_ws_errors_total{code="bad_frame"} 1.0',
        'chatcore_messages_accepted_total{duplicate="false"} 1.0',
        'chatcore_replies_observed_total{outcome="completed"} 1.0',
        "chatcore_reply_time_to_first_token_seconds_count 1.0",
        "chatcore_reply_tokens_per_second_count 1.0",
        "chatcore_reply_queue_wait_seconds_count 1.0",
        'chatcore_worker_replies_total{outcome="completed"} 1.0',
        "chatcore_sessions_created_total 1.0",
        "chatcore_feed_sessions 1.0",
    ]
    for line in expected:
        assert line in text, line
    ttft_sum = next(
        line
        for line in text.splitlines()
        if line.startswith("chatcore_reply_time_to_first") and "_sum" in line
    )
    assert float(ttft_sum.split()[-1]) >= 0.04


async def test_logs_carry_session_ids_but_never_tokens(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = await start(llm=ScriptedLLM())
    session = await api.new_session()
    async with api.ws() as client:
        welcome, _ = await client.hello(session["token"])
        await client.request(send_frame(session, "hi", "m"))
        await client.until(is_terminal)
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any(session["session_id"] in line for line in lines)
    secret_part = session["token"].rsplit(".", 1)[1]
    new_secret_part = welcome["token"].rsplit(".", 1)[1]
    assert not any(secret_part in line or new_secret_part in line for line in lines)


def test_the_json_formatter_masks_fields_that_look_secret() -> None:
    record = logging.makeLogRecord(
        {"msg": "x", "token": "v1.abc.1.sig", "api_key": "sk-123", "completion_tokens": 12}
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["token"] == "[redacted]" and entry["api_key"] == "[redacted]"
    assert entry["completion_tokens"] == 12


async def test_security_headers_are_on_every_response(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        for path in ("/", "/healthz", "/api/sessions/x", "/docs"):
            response = await http.get(path)
            headers = response.headers
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["referrer-policy"] == "no-referrer", path
            assert headers["x-frame-options"] == "DENY", path
            assert "frame-ancestors 'none'" in headers["content-security-policy"], path


async def test_cors_allows_only_the_configured_origins_and_never_a_wildcard() -> None:
    settings = settings_for(allowed_origins=["https://chat.example.com"])
    async with serve(settings) as api, api.client() as http:
        preflight = {"access-control-request-method": "POST"}
        allowed = await http.options(
            "/api/sessions", headers={"origin": "https://chat.example.com", **preflight}
        )
        refused = await http.options(
            "/api/sessions", headers={"origin": "https://evil.example", **preflight}
        )
        simple = await http.get("/healthz", headers={"origin": "https://chat.example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in refused.headers
    assert simple.headers["access-control-allow-origin"] == "https://chat.example.com"


async def test_without_configured_origins_there_is_no_cors_at_all(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        response = await http.get("/healthz", headers={"origin": "https://chat.example.com"})
    assert "access-control-allow-origin" not in response.headers


async def test_the_openapi_docs_are_served(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        docs = await http.get("/docs")
        schema = (await http.get("/openapi.json")).json()
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/api/sessions" in schema["paths"]
    assert "/api/sessions/{session_id}/messages" in schema["paths"]


async def test_a_deployment_can_turn_the_docs_and_the_metrics_off(start: Start) -> None:
    api = await start(docs_enabled=False, metrics_enabled=False)
    async with api.client() as http:
        for path in ("/docs", "/openapi.json", "/metrics"):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert "swagger" not in response.text.lower()
            assert "chatcore_" not in response.text
        assert (await http.get("/healthz")).status_code == 200


async def test_a_metrics_token_puts_the_metrics_behind_a_bearer_token(start: Start) -> None:
    token = "metrics-" + "t" * 40
    api = await start(metrics_token=token)
    async with api.client() as http:
        anonymous = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert "chatcore_" not in anonymous.text + wrong.text
    assert right.status_code == 200 and "chatcore_ws_connections_open" in right.text


def test_the_metrics_token_is_read_from_the_environment_only(tmp_path: Path) -> None:
    config = tmp_path / "chatcore.toml"
    config.write_text('metrics_token = "' + "t" * 40 + '"\n')
    with pytest.raises(SettingsError, match="environment only"):
        load_settings(config, environ={})


# --- the static web client -------------------------------------------------------------------

INLINE = "self.__next_f=self.__next_f||[];self.__next_f.push([0])"


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    (root / "_next" / "static" / "chunks").mkdir(parents=True)
    (root / "settings").mkdir()
    (root / "index.html").write_text(
        f'<!doctype html><html><head><script src="/_next/static/chunks/app.js"></script>'
        f"</head><body><script>{INLINE}</script><p>chat</p></body></html>"
    )
    (root / "index.txt").write_text("0:rsc payload")
    (root / "about.html").write_text("<!doctype html><p>about</p>")
    (root / "settings" / "index.html").write_text("<!doctype html><p>settings</p>")
    (root / "404.html").write_text("<!doctype html><p>lost</p>")
    (root / "_next" / "static" / "chunks" / "app.js").write_text("console.log(1)")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "escape.txt").symlink_to(tmp_path / "outside.txt")
    return root


async def test_the_web_client_is_served_with_next_export_rules(web_dir: Path) -> None:
    async with serve(settings_for(web_dir=web_dir)) as api, api.client() as http:
        index = await http.get("/")
        about = await http.get("/about")
        nested = await http.get("/settings")
        payload = await http.get("/index.txt")
        asset = await http.get("/_next/static/chunks/app.js")
        missing = await http.get("/no/such/page")
        head = await http.head("/about")
    assert index.status_code == 200 and "<p>chat</p>" in index.text
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert about.status_code == 200 and "about" in about.text
    assert nested.status_code == 200 and "settings" in nested.text
    assert payload.status_code == 200 and payload.text == "0:rsc payload"
    assert asset.status_code == 200
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert missing.status_code == 404 and "lost" in missing.text
    assert head.status_code == 200 and head.text == ""


async def test_html_pages_allow_exactly_their_own_inline_scripts(web_dir: Path) -> None:
    async with serve(settings_for(web_dir=web_dir)) as api, api.client() as http:
        csp = (await http.get("/")).headers["content-security-policy"]
    digest = base64.b64encode(hashlib.sha256(INLINE.encode()).digest()).decode()
    script_src = next(part for part in csp.split(";") if part.strip().startswith("script-src"))
    assert script_src.split() == ["script-src", "'self'", f"'sha256-{digest}'"]
    assert "unsafe-inline" not in script_src
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp


@pytest.mark.parametrize(
    "path",
    [
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/.env",
        "/escape.txt",
        "/settings/../../outside.txt",
    ],
)
async def test_nothing_outside_the_web_dir_or_hidden_is_served(web_dir: Path, path: str) -> None:
    async with serve(settings_for(web_dir=web_dir)) as api, api.client() as http:
        response = await http.get(path)
    assert response.status_code == 404
    assert "outside" not in response.text and "SECRET" not in response.text


async def test_without_a_built_client_the_root_says_how_to_build_it(start: Start) -> None:
    api = await start()
    async with api.client() as http:
        root = await http.get("/")
        other = await http.get("/chat")
    assert root.status_code == 200
    assert "npm ci" in root.text and "npm run build" in root.text and "apps/web" in root.text
    assert other.status_code == 404
