"""Hardening at the edge: the WebSocket Origin check, security headers, request size limits.

CORS does not protect WebSockets (browsers do not preflight them), so ``/ws`` checks
``Origin`` itself before accepting: the page's origin must be this server's own (its host
equals the ``Host`` header) or one of ``allowed_origins``. A client that sends no Origin is not
a browser and cannot ride a user's browser session, so it is let through (it still has to
present a token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _split_host(value: str) -> tuple[str, int | None] | None:
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):  # [ipv6]:port
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            return None
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif ":" in value:
        return None
    else:
        return value, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def origin_allowed(origin: str | None, host_header: str | None, allowed: Iterable[str]) -> bool:
    """True when a WebSocket handshake with this ``Origin`` may proceed."""
    if origin is None:
        return True
    origin = origin.strip()
    if not origin or origin.lower() == "null":
        return False
    parts = urlsplit(origin.lower())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return False
    try:
        origin_port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return False
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    normalised = f"{parts.scheme}://{host}" + (
        f":{origin_port}" if origin_port != _DEFAULT_PORTS[parts.scheme] else ""
    )
    if normalised in set(allowed):
        return True
    if host_header is None:
        return False
    found = _split_host(host_header)
    if found is None:
        return False
    expected_host, expected_port = found
    return expected_host == host and (expected_port or _DEFAULT_PORTS[parts.scheme]) == (
        origin_port
    )


# --- headers ----------------------------------------------------------------------------------

BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """Adds the headers every HTTP response should carry (unless the endpoint chose its own):
    nosniff, no referrer, no framing, and a Content-Security-Policy; API responses are also
    ``no-store`` because some carry tokens."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in BASE_HEADERS:
                    if name not in present:
                        headers.append((name, value))
                if b"content-security-policy" not in present:
                    csp = DOCS_CSP if path.startswith(DOCS_PATHS) else API_CSP
                    headers.append((b"content-security-policy", csp))
                if path.startswith("/api/") and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses HTTP request bodies larger than ``limit`` bytes with a 413, whether or not the
    client announced a length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: Mapping[bytes, bytes] = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await _too_large(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _too_large(send: Send) -> None:
    body = b'{"error":{"code":"too_large","message":"the request body is too large"}}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
