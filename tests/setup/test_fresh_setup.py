"""scripts/setup on a brand-new venv installs exactly the lock, whatever the index holds.

This is the first thing every user runs, so it is run as they would: a venv made by the
machine's own ``python3 -m venv`` (with the pip that Python bundles) and no pip cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.setup.locks import ROOT, canonical, read_lock

pytestmark = pytest.mark.slow

# What a venv holds before set-up touches it, and the project itself (installed editable).
_NOT_FROM_A_LOCK = {"setuptools", "chatcore"}


def _system_python() -> str:
    python = shutil.which("python3")
    assert python, "python3 is not on PATH"
    return python


def _installed(venv: Path) -> dict[str, str]:
    out = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "list",
            "--format=json",
            "--disable-pip-version-check",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {canonical(row["name"]): row["version"] for row in json.loads(out)}


def _run_setup(venv: Path, *options: str) -> None:
    env = {
        **os.environ,
        "CHATCORE_VENV": str(venv),
        "PIP_NO_CACHE_DIR": "1",
        "PYTHON": _system_python(),
    }
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [str(ROOT / "scripts" / "setup"), "--python", *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_setup_installs_exactly_the_locks_into_a_new_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([_system_python(), "-m", "venv", str(venv)], check=True)

    _run_setup(venv)
    tools, runtime, dev = read_lock("tools"), read_lock("runtime"), read_lock("dev")
    installed = _installed(venv)
    assert {n: v for n, v in installed.items() if n not in _NOT_FROM_A_LOCK} == tools | runtime
    assert "mypy" not in installed and "pytest" not in installed

    _run_setup(venv, "--test")
    installed = _installed(venv)
    assert {n: v for n, v in installed.items() if n not in _NOT_FROM_A_LOCK} == tools | dev

    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import chatcore, chatcore_api, chatcore_adapters"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
