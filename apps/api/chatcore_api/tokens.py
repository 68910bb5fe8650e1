"""Session tokens, signed with HMAC-SHA256 under one of the deployment's keys.

    v2.<key id>.<session id>.<generation>.<expiry>.<signature>

A token proves which session its bearer may read and write, until its expiry (Unix seconds),
as long as the session has not been logged out since it was issued: ``generation`` is the
session's token generation at issue time, and a session logged out everywhere (a
``tokens_revoked`` event) refuses every token of an older one (``sessions.SessionManager``
checks it). The signature covers a fixed context string, the key id, the session id, the
generation and the expiry, so a token cannot be stretched, pointed at another session or moved
to another generation; it is compared in constant time.

**Keys.** The deployment has a list of keys (``CHATCORE_SECRET_KEYS``, or the one
``CHATCORE_SECRET_KEY``): the first signs, every one verifies. A token names its key by an id
derived from the key (the first 8 characters of a hash of it, so ids need no configuring and
reveal nothing). Rotating: put a new key first and keep the old one after it until the tokens
it signed have expired or been renewed (every ``welcome`` renews the connection's token).

**Tokens of version 1** (``v1.<session id>.<expiry>.<signature>``, before key ids) are still
accepted, verified with the first key, as generation 0: an upgrade logs nobody out, and the
first key rotation retires them.

Tokens travel in the first WebSocket frame or an ``Authorization: Bearer`` header, never in a
URL, and are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chatcore.ports import Clock
from chatcore_api.errors import TokenExpired, Unauthorized

_CONTEXT_V1 = b"chatcore/session-token/v1\x00"
_CONTEXT_V2 = b"chatcore/session-token/v2\x00"
_SESSION = r"([A-Za-z0-9_-]{16,64})"
_SIGNATURE = r"([A-Za-z0-9_-]{43})"
_TOKEN_V1 = re.compile(rf"^v1\.{_SESSION}\.([0-9]{{1,12}})\.{_SIGNATURE}$")
_TOKEN_V2 = re.compile(
    rf"^v2\.([A-Za-z0-9_-]{{8}})\.{_SESSION}\.(0|[1-9][0-9]{{0,8}})\.([0-9]{{1,12}})\.{_SIGNATURE}$"
)
MIN_KEY_BYTES = 16


def key_id(key: bytes) -> str:
    """The public name of a signing key (8 characters derived from it)."""
    digest = hashlib.sha256(b"chatcore/key-id\x00" + key).digest()
    return base64.urlsafe_b64encode(digest[:6]).decode("ascii")


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    session_id: str
    expires_at: datetime
    generation: int = 0

    def __repr__(self) -> str:  # never show the token itself
        return f"IssuedToken(session_id={self.session_id!r}, expires_at={self.expires_at!r})"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a genuine, unexpired token grants: its session, as of a token generation."""

    session_id: str
    generation: int


class TokenSigner:
    def __init__(self, keys: bytes | Sequence[bytes], *, ttl: timedelta, clock: Clock) -> None:
        keys = [keys] if isinstance(keys, bytes) else list(keys)
        if not keys:
            raise ValueError("at least one signing key is needed")
        if any(len(key) < MIN_KEY_BYTES for key in keys):
            raise ValueError("a signing key is too short")
        self._keys = {key_id(key): key for key in keys}
        if len(self._keys) != len(keys):
            raise ValueError("the signing keys must differ")
        self._signing = keys[0]
        self._signing_id = key_id(keys[0])
        self._ttl = ttl
        self._clock = clock
        # What client addresses are hashed with (client_address.ClientKeys): derived from the
        # signing key, never the key itself.
        self.address_key = hmac.new(
            keys[0], b"chatcore/client-address-key", hashlib.sha256
        ).digest()

    def __repr__(self) -> str:
        return f"TokenSigner(keys={len(self._keys)}, ttl={self._ttl!r})"

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys, the signing one first (safe to log)."""
        return [self._signing_id, *(kid for kid in self._keys if kid != self._signing_id)]

    @staticmethod
    def _sign_v2(key: bytes, kid: str, session_id: str, generation: int, expiry: int) -> str:
        message = _CONTEXT_V2 + f"{kid}\x00{session_id}\x00{generation}\x00{expiry}".encode()
        return _b64(hmac.new(key, message, hashlib.sha256).digest())

    @staticmethod
    def _sign_v1(key: bytes, session_id: str, expiry: int) -> str:
        message = _CONTEXT_V1 + f"{session_id}\x00{expiry}".encode("ascii")
        return _b64(hmac.new(key, message, hashlib.sha256).digest())

    def issue(self, session_id: str, generation: int = 0) -> IssuedToken:
        expiry = int((self._clock.now() + self._ttl).timestamp())
        kid = self._signing_id
        signature = self._sign_v2(self._signing, kid, session_id, generation, expiry)
        token = f"v2.{kid}.{session_id}.{generation}.{expiry}.{signature}"
        return IssuedToken(token, session_id, datetime.fromtimestamp(expiry, UTC), generation)

    def verify(self, token: str) -> Grant:
        """What the token grants, or :class:`Unauthorized` / :class:`TokenExpired`."""
        if not isinstance(token, str):
            raise Unauthorized("the session token is not valid")
        if (match := _TOKEN_V2.fullmatch(token)) is not None:
            kid, session_id, generation_text, expiry_text, signature = match.groups()
            generation, expiry = int(generation_text), int(expiry_text)
            key = self._keys.get(kid)
            expected = (
                self._sign_v2(key, kid, session_id, generation, expiry) if key is not None else ""
            )
        elif (match := _TOKEN_V1.fullmatch(token)) is not None:
            session_id, expiry_text, signature = match.groups()
            generation, expiry = 0, int(expiry_text)
            expected = self._sign_v1(self._signing, session_id, expiry)
        else:
            raise Unauthorized("the session token is not valid")
        if not expected or not hmac.compare_digest(expected.encode(), signature.encode()):
            raise Unauthorized("the session token is not valid")
        if self._clock.now().timestamp() >= expiry:
            raise TokenExpired("the session token has expired; start a new session")
        return Grant(session_id, generation)
