"""Guards: the core and the demo never load LiteLLM, and no known-bad LiteLLM is installed."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [ROOT / "src", ROOT / "src" / "adapters", ROOT / "apps" / "api"]
VETTED_LITELLM = "1.106.12"

# Imports every module of the core, builds both kinds of model from settings and streams
# an answer from the demo, then reports which modules got loaded.
PROBE = """
import asyncio, json, pkgutil, importlib, sys
import chatcore
for module in pkgutil.walk_packages(chatcore.__path__, "chatcore."):
    importlib.import_module(module.name)
from chatcore.ports import CompletionRequest, PromptMessage
from chatcore_adapters.llm import LLMSettings, build_llm
import chatcore_adapters.llm.litellm_adapter
build_llm(LLMSettings(model="openai/gpt-4o-mini", fallbacks=["groq/llama-3.1-8b-instant"]))
demo = build_llm(LLMSettings(demo_delay=0))

async def main():
    request = CompletionRequest(messages=(PromptMessage(role="user", content="hi"),))
    return [chunk async for chunk in demo.stream(request)]

chunks = asyncio.run(main())
heavy = {"litellm", "openai", "tiktoken"}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps({"chunks": len(chunks), "loaded": loaded}))
"""


def test_the_core_and_the_demo_model_never_import_litellm() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PYTHONPATH": ":".join(str(p) for p in SOURCE_ROOTS),
            "PATH": "/usr/bin:/bin",
            # Should LiteLLM get imported after all, fail fast instead of fetching prices.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        },
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["chunks"] > 10
    assert report["loaded"] == []


def site_package_dirs() -> set[Path]:
    places = {Path(p) for p in site.getsitepackages()}
    places.add(Path(site.getusersitepackages()))
    places.update(Path(sysconfig.get_path(key)) for key in ("purelib", "platlib"))
    places.update(Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return {p for p in places if p.is_dir()}


def litellm_hooks(dirs: set[Path]) -> list[Path]:
    return sorted(d / "litellm_init.pth" for d in dirs if (d / "litellm_init.pth").exists())


def test_no_litellm_init_pth_hook_is_installed() -> None:
    """The malicious LiteLLM 1.82.7/1.82.8 releases ran code at every interpreter start
    through a ``litellm_init.pth`` file; none may exist in any site-packages directory."""
    dirs = site_package_dirs()
    assert any(d.name == "site-packages" for d in dirs), "no site-packages directory found"
    assert litellm_hooks(dirs) == []


def test_the_hook_check_finds_a_planted_hook(tmp_path: Path) -> None:
    clean, infected = tmp_path / "clean", tmp_path / "infected"
    clean.mkdir()
    infected.mkdir()
    (infected / "litellm_init.pth").write_text("import os\n")

    assert litellm_hooks({clean, infected}) == [infected / "litellm_init.pth"]


def test_the_installed_litellm_is_the_vetted_version() -> None:
    try:
        installed = metadata.version("litellm")
    except metadata.PackageNotFoundError:
        pytest.fail("litellm is not installed")
    assert installed == VETTED_LITELLM
    pth_files = [
        str(f) for f in metadata.distribution("litellm").files or () if str(f).endswith(".pth")
    ]
    assert pth_files == [], "the litellm distribution installs a .pth start-up hook"
