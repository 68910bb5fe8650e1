"""The host names this server answers to: the ``Host`` header of every HTTP and WebSocket
request is checked against ``allowed_hosts`` before anything else runs.

Without the check, DNS rebinding reaches a server on loopback or a private network from any web
page: the attacker's name is made to resolve to the server's address, and the browser, which
believes it talks to the attacker's origin, lets the page read the answers (and the WebSocket
Origin check passes too, since Origin and Host then name the same foreign host). A foreign
``Host`` is refused with 400 (``bad_host``), a WebSocket handshake with 403.

When ``allowed_hosts`` is not set it follows from the address the server binds to: a loopback
address answers to ``localhost``, ``127.0.0.1`` and ``::1``; a specific address to that
address; a wildcard address (``0.0.0.0``, ``::``) to any host, and start-up says to set the
setting, since the server's public names cannot be guessed from it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = {"", "0.0.0.0", "::", "*"}  # noqa: S104 - names of the wildcard address


def default_hosts(bind: str) -> tuple[str, ...]:
    """The host names a server bound to ``bind`` answers to when none are configured."""
    host = bind.strip().lower().strip("[]")
    if host in _WILDCARDS:
        return ("*",)
    if host == "localhost":
        return LOOPBACK_NAMES
    try:
        if ipaddress.ip_address(host).is_loopback:
            return LOOPBACK_NAMES
    except ValueError:
        pass
    return (host,)


def allowed_hosts(configured: Sequence[str] | None, bind: str) -> tuple[str, ...]:
    hosts = tuple(configured) if configured is not None else default_hosts(bind)
    if configured is None and hosts == ("*",):
        log.warning(
            "listening on every interface without allowed_hosts: any Host header is accepted; "
            "set CHATCORE_ALLOWED_HOSTS to the names clients use (DNS rebinding protection)",
            extra={"host": bind},
        )
    return hosts


def host_name(header: str | None) -> str | None:
    """The name in a ``Host`` header, without its port, in lower case (``None``: unreadable)."""
    if header is None:
        return None
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        return value[1:end] or None
    if value.count(":") > 1:
        return None
    name = value.split(":", 1)[0].rstrip(".")
    return name or None


def host_allowed(header: str | None, hosts: Sequence[str]) -> bool:
    if "*" in hosts:
        return True
    name = host_name(header)
    if name is None:
        return False
    for pattern in hosts:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]):
                return True
        elif name == pattern:
            return True
    return False


_BAD_HOST = b'{"error":{"code":"bad_host","message":"this server does not answer to that host"}}'


class AllowedHosts:
    """ASGI middleware refusing requests whose ``Host`` is not allowed."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = tuple(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"} or "*" in self.hosts:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"host")
        header = raw.decode("latin-1") if raw is not None else None
        if host_allowed(header, self.hosts):
            await self.app(scope, receive, send)
            return
        log.info("request refused: host not allowed", extra={"host": (header or "")[:100]})
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: 403
            return
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_BAD_HOST)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BAD_HOST})
