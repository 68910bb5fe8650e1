"""The Origin rule of the WebSocket handshake (CORS does not cover WebSockets)."""

from __future__ import annotations

import pytest

from chatcore_api.security import origin_allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        (None, "chat.example.com", [], True),
        ("https://chat.example.com", "chat.example.com", [], True),
        ("http://chat.example.com", "chat.example.com", [], True),
        ("http://localhost:8000", "localhost:8000", [], True),
        ("http://LOCALHOST:8000", "localhost:8000", [], True),
        ("http://localhost:80", "localhost", [], True),
        ("http://localhost:8001", "localhost:8000", [], False),
        ("http://evil.example", "chat.example.com", [], False),
        ("http://chat.example.com.evil.example", "chat.example.com", [], False),
        ("null", "chat.example.com", [], False),
        ("", "chat.example.com", [], False),
        ("file://", "chat.example.com", [], False),
        ("https://app.example.com", "api.example.com", ["https://app.example.com"], True),
        ("https://app.example.com:443", "api.example.com", ["https://app.example.com"], True),
        ("http://app.example.com", "api.example.com", ["https://app.example.com"], False),
        ("http://[::1]:8000", "[::1]:8000", [], True),
        ("https://chat.example.com", None, [], False),
        ("https://chat.example.com", "chat.example.com:bad", [], False),
    ],
)
def test_websocket_origins_must_be_same_origin_or_listed(
    origin: str | None, host: str | None, allowed: list[str], expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is expected
