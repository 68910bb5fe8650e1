"""Taking credentials out of text that is about to be shown (a settings error, say).

A value that broke a rule is worth showing, except the part of it that is a secret: the
user-info of a URL (``http://bob:secret@host``), a ``password=``-style query parameter, an
``Authorization`` value, and anything that looks like an API key (a known key prefix, or a long
run of letters and digits). Over-redacting a long harmless word costs nothing; printing a key
into a terminal, a CI log or a crash report cannot be undone.
"""

from __future__ import annotations

import re

MASK = "***"

_USER_INFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@'\"]+@")
_PARAMETER = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|key|auth|signature|sig)=([^&\s'\"]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY_PREFIX = re.compile(
    r"\b(sk|pk|rk|gsk|ghp|gho|github_pat|xox[abpr]|hf|AKIA|ASIA|AIza|glpat)[-_A-Za-z0-9]{8,}"
)
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_\-+=]{32,}")


def _long_token(match: re.Match[str]) -> str:
    text = match.group(0)
    has_letter = any(c.isalpha() for c in text)
    has_digit = any(c.isdigit() for c in text)
    return MASK if has_letter and has_digit else text


def redact(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``."""
    text = _USER_INFO.sub(rf"\g<1>{MASK}@", text)
    text = _PARAMETER.sub(rf"\g<1>={MASK}", text)
    text = _BEARER.sub(rf"\g<1> {MASK}", text)
    text = _KEY_PREFIX.sub(MASK, text)
    return _LONG_TOKEN.sub(_long_token, text)
