"""Session tokens: ``v1.<session id>.<expiry>.<signature>``, signed with HMAC-SHA256.

A token proves which session its bearer may read and write, until its expiry (Unix seconds).
The signature covers a fixed context string, the session id and the expiry, so a token cannot
be stretched or pointed at another session; it is compared in constant time. Tokens travel in
the first WebSocket frame or an ``Authorization: Bearer`` header, never in a URL, and are never
logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chatcore.ports import Clock
from chatcore_api.errors import TokenExpired, Unauthorized

_VERSION = "v1"
_CONTEXT = b"chatcore/session-token/v1\x00"
_TOKEN = re.compile(r"^v1\.([A-Za-z0-9_-]{16,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    session_id: str
    expires_at: datetime

    def __repr__(self) -> str:  # never show the token itself
        return f"IssuedToken(session_id={self.session_id!r}, expires_at={self.expires_at!r})"


class TokenSigner:
    def __init__(self, key: bytes, *, ttl: timedelta, clock: Clock) -> None:
        if len(key) < 16:
            raise ValueError("the signing key is too short")
        self._key = key
        self._ttl = ttl
        self._clock = clock
        # What client addresses are hashed with (client_address.ClientKeys): derived from the
        # signing key, never the key itself.
        self.address_key = hmac.new(key, b"chatcore/client-address-key", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"TokenSigner(ttl={self._ttl!r})"

    def _sign(self, session_id: str, expiry: int) -> str:
        message = _CONTEXT + f"{session_id}\x00{expiry}".encode("ascii")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, session_id: str) -> IssuedToken:
        expiry = int((self._clock.now() + self._ttl).timestamp())
        token = f"{_VERSION}.{session_id}.{expiry}.{self._sign(session_id, expiry)}"
        return IssuedToken(token, session_id, datetime.fromtimestamp(expiry, UTC))

    def verify(self, token: str) -> str:
        """The session id the token grants, or :class:`Unauthorized` / :class:`TokenExpired`."""
        match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
        if match is None:
            raise Unauthorized("the session token is not valid")
        session_id, expiry_text, signature = match.groups()
        expiry = int(expiry_text)
        expected = self._sign(session_id, expiry)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            raise Unauthorized("the session token is not valid")
        if self._clock.now().timestamp() >= expiry:
            raise TokenExpired("the session token has expired; start a new session")
        return session_id
