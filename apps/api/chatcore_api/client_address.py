"""Who the client is, for the limits: its address, and the key its limits are kept under.

**The address.** A request's address is the peer of its TCP connection. Only when that peer is
one of ``trusted_proxies`` (addresses or networks; none by default) does ``X-Forwarded-For``
count: it is read from the right, skipping every hop that is itself a trusted proxy, and the
first one that is not is the client (a client can put anything at the left of the header, but
not past the proxies). :class:`ForwardedClient` rewrites the ASGI scope's ``client`` (and its
scheme from ``X-Forwarded-Proto``) that way for every HTTP and WebSocket request, so uvicorn's
own trust of forwarded headers stays off (``server.server_config``).

**The key.** An address never reaches storage or a log as it is: :class:`ClientKeys` turns it
into ``ip:<HMAC-SHA256 of the address under the server's signing key, 16 characters>``. IPv6
addresses are keyed by their /64 network, which one subscriber usually holds whole (limits per
single IPv6 address would be escaped by changing address).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from starlette.types import ASGIApp, Receive, Scope, Send

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_CONTEXT = b"chatcore/client-address\x00"


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks (a bare address is a network of one);
    ValueError names a value that is neither."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(found)


def _address(value: str) -> Address | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def forwarded_client(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address for a connection from ``peer`` carrying ``X-Forwarded-For``."""
    if not trusted or not forwarded_for or not _trusted(_address(peer), trusted):
        return peer
    client = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        address = _address(hop)
        if address is None:
            break  # not an address: stop at the last proxy that was trusted
        client = str(address)
        if not _trusted(address, trusted):
            break
    return client


class ForwardedClient:
    """ASGI middleware: the scope's ``client`` (and scheme) as the trusted proxies say."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"} and self.trusted and scope.get("client"):
            peer, port = scope["client"]
            headers = dict(scope.get("headers") or [])
            if _trusted(_address(peer), self.trusted):
                forwarded = headers.get(b"x-forwarded-for")
                client = forwarded_client(
                    peer, forwarded.decode("latin-1") if forwarded else None, self.trusted
                )
                scope = dict(scope, client=(client, port))
                proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
                if proto in {"http", "https"}:
                    secure = proto == "https"
                    if scope["type"] == "websocket":
                        scope["scheme"] = "wss" if secure else "ws"
                    else:
                        scope["scheme"] = proto
        await self.app(scope, receive, send)


class ClientKeys:
    """The key a client address's limits are kept under (never the address itself)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "ClientKeys()"

    def key(self, address: str | None) -> str:
        parsed = _address(address or "")
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        if isinstance(parsed, ipaddress.IPv6Address):
            text = str(ipaddress.IPv6Network((parsed, 64), strict=False))
        elif parsed is not None:
            text = str(parsed)
        else:
            text = (address or "unknown").strip()[:200]
        digest = hmac.new(self._secret, _CONTEXT + text.encode(), hashlib.sha256).digest()
        return "ip:" + base64.urlsafe_b64encode(digest[:12]).decode("ascii")
