"""Removing secrets from text meant for the log (a provider's error may quote the key it got)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/=]{6,}"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
)
_SECRET_ENV_SUFFIXES = ("_API_KEY", "_KEY", "_TOKEN", "_SECRET", "_PASSWORD")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets, nor anything shaped like an API key or token."""
    for secret in sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True):
        text = text.replace(secret, "[REDACTED]")
    text = _SECRET_PATTERNS[0].sub("[REDACTED]", text)
    text = _SECRET_PATTERNS[1].sub("Bearer [REDACTED]", text)
    return _SECRET_PATTERNS[2].sub(r"\1[REDACTED]", text)


def secrets_in_environment(names: Iterable[str]) -> list[str]:
    """The values of the named environment variables and of every variable whose name says
    it holds a secret (``*_API_KEY``, ``*_TOKEN``, ...), when long enough to be one."""
    wanted = set(names)
    return [
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and (name in wanted or name.upper().endswith(_SECRET_ENV_SUFFIXES))
    ]
