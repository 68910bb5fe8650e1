"""Who may reach the server and who the client is: the allowed hosts (finding 4 of the review,
DNS rebinding) and forwarded addresses (finding 5: uvicorn believed X-Forwarded-For from any
local client)."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets

import pytest

from chatcore_api.app import create_app
from chatcore_api.client_address import ClientKeys, forwarded_client, parse_networks
from chatcore_api.hosts import LOOPBACK_NAMES, allowed_hosts, default_hosts, host_allowed
from chatcore_api.server import server_config
from chatcore_api.settings import SettingsError
from tests.api.support import RunningApi, Start, settings_for

REBIND = "rebind.attacker.example"


async def handshake(api: RunningApi, *, host: str, origin: str | None = None) -> int:
    """The HTTP status a WebSocket handshake with this Host (and Origin) gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=10)
        return int(status.split()[1])
    finally:
        writer.close()


# --- allowed hosts ----------------------------------------------------------------------------


async def test_a_rebound_host_is_refused_on_the_websocket_and_on_rest(start: Start) -> None:
    api = await start()
    foreign = f"{REBIND}:{api.port}"
    # Origin and Host name the same foreign host: the Origin check alone would let it in.
    assert await handshake(api, host=foreign, origin=f"http://{foreign}") == 403
    own = f"127.0.0.1:{api.port}"
    assert await handshake(api, host=own, origin=f"http://{own}") == 101
    async with api.client() as http:
        created = await http.post("/api/sessions", headers={"Host": foreign})
        health = await http.get("/healthz", headers={"Host": foreign})
        for name in LOOPBACK_NAMES:
            shown = f"[{name}]" if ":" in name else name
            ok = await http.get("/healthz", headers={"Host": f"{shown}:{api.port}"})
            assert ok.status_code == 200, name
    assert created.status_code == 400
    assert created.json()["error"]["code"] == "bad_host"
    assert health.status_code == 400


async def test_configured_hosts_replace_the_defaults(start: Start) -> None:
    api = await start(allowed_hosts="chat.example.com,*.example.org")
    async with api.client() as http:
        for host, status in [
            ("chat.example.com", 201),
            ("CHAT.example.com:443", 201),
            ("eu.example.org", 201),
            ("example.org", 400),
            ("127.0.0.1", 400),
            ("chat.example.com.evil.example", 400),
        ]:
            response = await http.post("/api/sessions", headers={"Host": host})
            assert response.status_code == status, host
    assert await handshake(api, host="chat.example.com") == 101
    assert await handshake(api, host=f"127.0.0.1:{api.port}") == 403


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("127.0.0.1", LOOPBACK_NAMES),
        ("127.0.0.2", LOOPBACK_NAMES),
        ("::1", LOOPBACK_NAMES),
        ("localhost", LOOPBACK_NAMES),
        ("192.168.1.5", ("192.168.1.5",)),
        ("chat.internal", ("chat.internal",)),
        ("0.0.0.0", ("*",)),
        ("::", ("*",)),
    ],
)
def test_without_allowed_hosts_the_bound_address_names_them(
    bind: str, expected: tuple[str, ...]
) -> None:
    assert default_hosts(bind) == expected


def test_binding_every_interface_without_allowed_hosts_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert allowed_hosts(None, "0.0.0.0") == ("*",)
    assert any("CHATCORE_ALLOWED_HOSTS" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert allowed_hosts(["chat.example.com"], "0.0.0.0") == ("chat.example.com",)
    assert not caplog.records


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost:8000", True),
        ("LOCALHOST", True),
        ("[::1]:8000", True),
        ("127.0.0.1.", True),
        (None, False),
        ("", False),
        ("[::1", False),
        ("::1:8000", False),
        ("localhost.evil.example", False),
    ],
)
def test_the_host_header_is_read_without_its_port(header: str | None, expected: bool) -> None:
    assert host_allowed(header, LOOPBACK_NAMES) is expected


@pytest.mark.parametrize("bad", ["https://chat.example.com", "chat.example.com:443", "a/b", "*x"])
def test_an_allowed_host_must_be_a_bare_name(bad: str) -> None:
    with pytest.raises(SettingsError, match="allowed_hosts"):
        settings_for(allowed_hosts=[bad])


# --- forwarded addresses ----------------------------------------------------------------------


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(start: Start) -> None:
    api = await start(sessions_per_minute=4)  # one new session at once per address
    async with api.client() as http:
        first = await http.post("/api/sessions", headers={"X-Forwarded-For": "198.51.100.1"})
        second = await http.post("/api/sessions", headers={"X-Forwarded-For": "198.51.100.2"})
    assert first.status_code == 201
    assert second.status_code == 429, "a local client cannot pretend to be another address"


async def test_a_trusted_proxy_s_forwarded_for_names_the_client(start: Start) -> None:
    api = await start(sessions_per_minute=4, trusted_proxies="127.0.0.1,10.0.0.0/8")
    async with api.client() as http:

        async def create(forwarded: str) -> int:
            response = await http.post("/api/sessions", headers={"X-Forwarded-For": forwarded})
            return response.status_code

        assert await create("198.51.100.1") == 201
        assert await create("198.51.100.2") == 201, "another client behind the proxy"
        assert await create("198.51.100.1") == 429
        # Whatever a client writes at the left, the first untrusted hop from the right counts.
        assert await create("203.0.113.9, 198.51.100.1, 10.1.2.3") == 429
        assert await create("203.0.113.9, 198.51.100.3, 10.1.2.3") == 201


def test_uvicorn_believes_no_forwarded_header_itself() -> None:
    settings = settings_for(trusted_proxies=["10.0.0.0/8"])
    config = server_config(create_app(settings), settings)
    assert config.proxy_headers is False


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("10.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.1", "198.51.100.1, 10.0.0.7", "198.51.100.1"),
        ("10.0.0.1", "spoofed, 198.51.100.1", "198.51.100.1"),
        ("10.0.0.1", "10.0.0.9, 10.0.0.8", "10.0.0.9"),
        ("10.0.0.1", "not-an-address", "10.0.0.1"),
        ("10.0.0.1", None, "10.0.0.1"),
        ("192.0.2.1", "198.51.100.1", "192.0.2.1"),  # an untrusted peer
        ("10.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
    ],
)
def test_forwarded_for_is_read_from_the_right_past_trusted_hops(
    peer: str, header: str | None, client: str
) -> None:
    assert forwarded_client(peer, header, parse_networks(["10.0.0.0/8"])) == client


def test_a_proxy_that_is_not_an_address_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="trusted_proxies"):
        settings_for(trusted_proxies=["proxy.internal"])


def test_client_keys_never_show_the_address_and_group_ipv6_by_64() -> None:
    keys = ClientKeys(b"k" * 32)
    key = keys.key("198.51.100.7")
    assert key.startswith("ip:") and "198" not in key
    assert keys.key("198.51.100.7") == key != keys.key("198.51.100.8")
    assert keys.key("::ffff:198.51.100.7") == key
    assert keys.key("2001:db8:1:2::1") == keys.key("2001:db8:1:2:ffff::9")
    assert keys.key("2001:db8:1:2::1") != keys.key("2001:db8:1:3::1")
    assert ClientKeys(b"x" * 32).key("198.51.100.7") != key, "keyed by the server's secret"
