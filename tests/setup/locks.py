"""Reading the lock files in requirements/ (name==version lines with their hashes)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(name: str) -> dict[str, str]:
    """The pins of requirements/<name>.lock: canonical name -> version."""
    pins: dict[str, str] = {}
    for line in (LOCKS / f"{name}.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def hash_lines(name: str) -> dict[str, int]:
    """How many --hash options each pin of a lock carries."""
    counts: dict[str, int] = {}
    current = ""
    for line in (LOCKS / f"{name}.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonical(match.group(1))
            counts[current] = 0
        elif current and line.strip().startswith("--hash=sha256:"):
            counts[current] += 1
    return counts
