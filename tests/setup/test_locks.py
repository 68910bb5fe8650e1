"""The lock files pin one consistent set of packages, every pin hash-checked."""

from __future__ import annotations

import pytest

from tests.setup.locks import hash_lines, read_lock

LOCK_NAMES = ("tools", "runtime", "dev")
DEV_ONLY = {
    "mypy",
    "ruff",
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "schemathesis",
    "hypothesis",
}
# LiteLLM releases known to have been compromised on PyPI (see docs/llm.md).
COMPROMISED_LITELLM = {"1.82.7", "1.82.8"}


@pytest.mark.parametrize("name", LOCK_NAMES)
def test_every_pin_carries_hashes(name: str) -> None:
    counts = hash_lines(name)
    assert counts, f"requirements/{name}.lock pins nothing"
    assert [pkg for pkg, n in counts.items() if n == 0] == []


def test_the_development_lock_contains_the_runtime_lock_unchanged() -> None:
    runtime, dev = read_lock("runtime"), read_lock("dev")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_runtime_lock_holds_no_development_tool() -> None:
    assert DEV_ONLY & set(read_lock("runtime")) == set()
    assert set(read_lock("dev")) >= DEV_ONLY


def test_packages_in_several_locks_have_one_version() -> None:
    tools, dev = read_lock("tools"), read_lock("dev")
    shared = set(tools) & set(dev)
    assert {n: tools[n] for n in shared} == {n: dev[n] for n in shared}


def test_pip_is_pinned_by_the_tools_lock() -> None:
    assert "pip" in read_lock("tools")


def test_litellm_is_an_exact_vetted_version() -> None:
    version = read_lock("runtime")["litellm"]
    assert version not in COMPROMISED_LITELLM
    assert not version.startswith("1.107"), "the 1.107 series was pulled after a compromise"
