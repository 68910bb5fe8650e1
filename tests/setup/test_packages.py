"""The packages people install: the sdist and the wheel built from this checkout, installed into
new venvs made by the machine's ``python3 -m venv``, away from the checkout.

The sdist is built from the checkout and the wheel from the unpacked sdist, both by the
hatchling that ``requirements/tools.lock`` pins, offline (``--no-build-isolation`` style: the
hatchling of this venv). The venvs install the wheel the way users do, so its metadata decides
what comes along; every version is held to the lock's by a constraints file (the lock's pins
without their hashes: pip refuses hashes in constraints), from the package index or pip's
cache.

* the base install (``pip install chatcore``) is pydantic and nothing else, and runs the core
  and the in-memory adapters; what needs an extra says which;
* ``chatcore[server]`` (no redis, no LiteLLM) runs ``chatcore serve`` in embedded mode and
  serves the very web client ``scripts/setup`` built;
* a build without the web client built fails and says how to build it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import httpx
import pytest

from tests.setup.locks import ROOT, canonical, read_lock
from tests.support.redis_server import free_port

pytestmark = pytest.mark.slow

WEB_BUILD = ROOT / "apps" / "web" / "out"
# What pip puts into every venv it makes (Python 3.11's ensurepip brings setuptools too).
VENV_SEED = {"pip", "setuptools"}
BASE = {"chatcore", "pydantic", "pydantic-core", "annotated-types", "typing-extensions"}
BASE |= {"typing-inspection"}
# After a graceful shutdown uvicorn re-raises the signal it caught, as Unix servers do.
STOPPED = {0, -signal.SIGTERM}


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path
    unpacked_sdist: Path


def _system_python() -> str:
    python = shutil.which("python3")
    assert python, "python3 is not on PATH"
    return python


def _hatchling(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """This venv's hatchling (requirements/tools.lock), building from ``cwd`` without network."""
    return subprocess.run(
        [sys.executable, "-m", "hatchling", "build", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
        check=False,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    assert (WEB_BUILD / "index.html").is_file(), (
        "the web client is not built: run scripts/setup (it runs npm run build)"
    )
    out = tmp_path_factory.mktemp("dist")
    built = _hatchling("-t", "sdist", "-d", str(out), cwd=ROOT)
    assert built.returncode == 0, built.stderr
    (sdist,) = out.glob("chatcore-*.tar.gz")
    unpacked = tmp_path_factory.mktemp("sdist")
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            archive.extractall(unpacked, filter="data")
        else:
            archive.extractall(unpacked)
    (source,) = unpacked.iterdir()
    built = _hatchling("-t", "wheel", "-d", str(out), cwd=source)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("chatcore-*.whl")
    return Dist(sdist=sdist, wheel=wheel, unpacked_sdist=source)


def _constraints(tmp: Path) -> Path:
    """The runtime lock's pins as constraints (name==version, no hashes)."""
    path = tmp / "constraints.txt"
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(read_lock("runtime").items())))
    return path


def _new_venv(where: Path) -> Path:
    subprocess.run([_system_python(), "-m", "venv", str(where)], check=True, timeout=300)
    return where / "bin" / "python"


def _pip_install(python: Path, *requirements: str, constraints: Path) -> None:
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--constraint",
            str(constraints),
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _installed(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {canonical(row["name"]): row["version"] for row in json.loads(out)}


def _clean_env(venv_python: Path, **extra: str) -> dict[str, str]:
    """No PYTHONPATH, no CHATCORE_* of the caller: only the venv's packages count."""
    return {
        "PATH": f"{venv_python.parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        **extra,
    }


def _run(python: Path, code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-c", code],
        cwd=cwd,
        env=_clean_env(python, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- what the archives hold ---------------------------------------------------------------------


def test_the_wheel_holds_the_three_packages_and_the_built_web_client(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = wheel.namelist()
        tops = {name.split("/")[0] for name in names}
        assert tops == {"chatcore", "chatcore_adapters", "chatcore_api", "chatcore-0.1.0.dist-info"}
        packaged = {
            name.removeprefix("chatcore_api/web_client/")
            for name in names
            if name.startswith("chatcore_api/web_client/")
        }
        built = {
            p.relative_to(WEB_BUILD).as_posix()
            for p in WEB_BUILD.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }
        assert packaged == built
        assert (
            wheel.read("chatcore_api/web_client/index.html")
            == (WEB_BUILD / "index.html").read_bytes()
        )
        metadata = Parser().parsestr(wheel.read("chatcore-0.1.0.dist-info/METADATA").decode())
    requires = metadata.get_all("Requires-Dist") or []
    assert [r for r in requires if "extra ==" not in r] == ["pydantic<3,>=2.11"]
    assert set(metadata.get_all("Provides-Extra") or []) == {"redis", "llm", "server", "all", "dev"}
    assert any(re.match(r"litellm==[\d.]+; extra == .llm.", r) for r in requires)
    assert not any(name.endswith((".pyc", ".chatcore-src")) for name in names)


def test_the_sdist_holds_what_building_the_wheel_needs(dist: Dist) -> None:
    source = dist.unpacked_sdist
    for needed in ("pyproject.toml", "hatch_build.py", "README.md", "apps/web/out/index.html"):
        assert (source / needed).is_file(), needed
    for package in ("src/chatcore", "src/adapters/chatcore_adapters", "apps/api/chatcore_api"):
        assert (source / package / "__init__.py").is_file(), package
    assert not (source / "apps" / "web" / "node_modules").exists()
    assert not (source / "tests").exists()


def test_building_without_the_web_client_fails_and_says_how_to_build_it(
    dist: Dist, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(dist.unpacked_sdist, source)
    shutil.rmtree(source / "apps" / "web" / "out")

    for target in ("wheel", "sdist"):
        result = _hatchling("-t", target, "-d", str(tmp_path / "out"), cwd=source)
        assert result.returncode != 0, target
        assert "the web client is not built" in result.stderr, result.stderr
        assert "npm run build" in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# --- the base install ---------------------------------------------------------------------------

BASE_PROBE = """
import asyncio
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.llm import DemoLLM, LLMSettings, build_llm


async def main():
    core = bootstrap(llm=DemoLLM(delay=0))  # the README's library entry point, on memory
    chat, replies, queue = core.service, core.generator, core.queue
    session = await chat.open_session(display_name="Ada")
    await chat.submit_message(
        session.session_id, conversation_id=session.conversation_id,
        client_message_id="first", text="What is chatcore?",
    )
    (work,) = await queue.claim("worker-1", count=1, block=1)
    await replies.generate(work.item, delivery_id=work.delivery_id, owner="worker-1")
    await queue.ack(work)
    view = await chat.load(session.session_id)
    return view.conversations[session.conversation_id].messages[-1].text

print("ANSWER", asyncio.run(main()))
for name in ("chatcore_api", "chatcore_adapters.redis"):
    try:
        __import__(name)
    except ImportError as exc:
        print("REFUSED", name, exc)
    else:
        print("IMPORTED", name)
try:
    build_llm(LLMSettings(model="openai/gpt-4o-mini")).preload()
except ImportError as exc:
    print("REFUSED litellm", exc)
"""


def test_the_base_install_is_pydantic_alone_and_runs_the_core(dist: Dist, tmp_path: Path) -> None:
    python = _new_venv(tmp_path / "venv")
    _pip_install(python, str(dist.wheel), constraints=_constraints(tmp_path))

    installed = _installed(python)
    assert set(installed) - VENV_SEED == BASE
    runtime = read_lock("runtime")
    assert {n: v for n, v in installed.items() if n in runtime} == {
        n: runtime[n] for n in BASE - {"chatcore"}
    }

    result = _run(python, BASE_PROBE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ANSWER Hi Ada!") and "chatcore" in lines[0]
    refused = {line.split()[1]: line for line in lines if line.startswith("REFUSED")}
    assert set(refused) == {"chatcore_api", "chatcore_adapters.redis", "litellm"}, lines
    assert "pip install 'chatcore[server]'" in refused["chatcore_api"]
    assert "pip install 'chatcore[redis]'" in refused["chatcore_adapters.redis"]
    assert "pip install 'chatcore[llm]'" in refused["litellm"]

    command = subprocess.run(
        [str(python.parent / "chatcore"), "serve"],
        cwd=tmp_path,
        env=_clean_env(python),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert command.returncode != 0
    assert "pip install 'chatcore[server]'" in command.stderr


# --- the server extra ---------------------------------------------------------------------------


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str


@pytest.fixture(scope="module")
def server_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("server")
    python = _new_venv(where / "venv")
    _pip_install(python, f"{dist.wheel}[server]", constraints=_constraints(where))
    return python


@pytest.fixture
def served(server_venv: Path, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [str(server_venv.parent / "chatcore"), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=_clean_env(server_venv),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=5) as http:
            while True:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "chatcore serve did not answer in 60 s"
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"{url}/healthz").status_code == 200:
                        break
                time.sleep(0.1)  # a process starting up: nothing to wait on but its port
        yield Served(process, url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_the_server_extra_brings_no_redis_and_no_litellm(server_venv: Path) -> None:
    installed = _installed(server_venv)
    assert "fastapi" in installed and "uvicorn" in installed and "orjson" in installed
    assert {"redis", "hiredis", "litellm", "openai", "tiktoken"} & set(installed) == set()
    runtime = read_lock("runtime")
    assert {n: v for n, v in installed.items() if n in runtime} == {
        n: runtime[n] for n in installed if n in runtime
    }
    assert set(installed) - VENV_SEED - {"chatcore"} <= set(runtime)


def test_chatcore_serve_from_the_wheel_serves_the_built_web_client(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as http:
        health = http.get("/healthz")
        ready = http.get("/readyz")
        page = http.get("/")
        asset = next((WEB_BUILD / "_next" / "static" / "chunks").glob("*.js"))
        script = http.get(f"/_next/static/chunks/{asset.name}")
    assert health.status_code == 200
    assert ready.status_code == 200 and ready.json()["in_process_worker"] is True
    assert page.status_code == 200
    assert page.content == (WEB_BUILD / "index.html").read_bytes()
    assert "<title>chatcore</title>" in page.text
    assert script.status_code == 200 and script.content == asset.read_bytes()

    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) in STOPPED


REDIS_URL = {"CHATCORE_REDIS_URL": "redis://127.0.0.1:1/0", "CHATCORE_SECRET_KEY": "k" * 48}
LITELLM_MODEL = {"CHATCORE_LLM__MODEL": "openai/gpt-4o-mini", "OPENAI_API_KEY": "sk-unused"}


@pytest.mark.parametrize(
    ("command", "settings", "extra"),
    [
        ("serve", REDIS_URL, "redis"),
        ("serve", LITELLM_MODEL, "llm"),
        ("worker", REDIS_URL, "redis"),
        ("worker", {**REDIS_URL, **LITELLM_MODEL}, "llm"),
    ],
)
def test_a_setting_that_needs_a_missing_extra_stops_the_command_and_names_it(
    server_venv: Path, tmp_path: Path, command: str, settings: dict[str, str], extra: str
) -> None:
    result = subprocess.run(
        [str(server_venv.parent / "chatcore"), command],
        cwd=tmp_path,
        env=_clean_env(server_venv, **settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"pip install 'chatcore[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr
