"""I1: the core imports no I/O library and nothing from the adapters or the apps."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import chatcore
import chatcore_adapters

CORE = Path(chatcore.__file__).parent
ADAPTERS = Path(chatcore_adapters.__file__).parent
FORBIDDEN = {
    "chatcore_adapters",
    "chatcore_api",
    "redis",
    "hiredis",
    "fastapi",
    "starlette",
    "uvicorn",
    "litellm",
    "httpx",
    "aiohttp",
    "requests",
    "websockets",
    "socket",
    "ssl",
    "subprocess",
    "sqlite3",
    "orjson",
    "dependency_injector",
    "prometheus_client",
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_module_of_the_core_imports_io_adapters_or_apps() -> None:
    offenders = {
        str(path.relative_to(CORE)): sorted(imported_roots(path) & FORBIDDEN)
        for path in sorted(CORE.rglob("*.py"))
        if imported_roots(path) & FORBIDDEN
    }
    assert offenders == {}


def test_no_adapter_imports_the_apps() -> None:
    """Arrows point down: the bundled API builds on the adapters, never the reverse."""
    offenders = {
        str(path.relative_to(ADAPTERS)): sorted(imported_roots(path) & {"chatcore_api"})
        for path in sorted(ADAPTERS.rglob("*.py"))
        if "chatcore_api" in imported_roots(path)
    }
    assert offenders == {}


def test_the_scan_would_catch_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import redis.asyncio\nfrom fastapi import FastAPI\n")
    assert imported_roots(bad) & FORBIDDEN == {"redis", "fastapi"}


# asyncio itself loads socket, ssl and subprocess; at run time only third-party packages and
# our own outer layers are checked (the static scan above covers the core's own imports).
STDLIB = {"socket", "ssl", "subprocess", "sqlite3"}


def test_importing_every_core_module_loads_no_forbidden_package() -> None:
    modules = sorted(
        "chatcore." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in CORE.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & {set(FORBIDDEN - STDLIB)!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert out.stdout.strip() == "[]"
