"""What the base install (``pip install chatcore``: pydantic and nothing else) must run: the
whole core, the in-memory and system adapters, the demo model and the LLM adapters' modules.

A fresh interpreter imports all of it and answers a message through the in-memory adapters
(the cached view included), then lists every top-level module it loaded: each must be the
standard library's, ours, or what pydantic brings. ``tests/setup/test_packages.py`` installs
the built wheel into a venv that really lacks the extras; this is the quick check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [ROOT / "src", ROOT / "src" / "adapters"]
# pydantic's own dependencies (pydantic-core, typing-extensions, ...): the base install's.
BASE = {
    "chatcore",
    "chatcore_adapters",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
}

PROBE = """
import asyncio, importlib, json, pkgutil, sys
before = set(sys.modules)  # the interpreter's own start-up (site, a venv's .pth hooks)
import chatcore, chatcore_adapters, chatcore_adapters.llm, chatcore_adapters.memory
# Every module of the core and of the adapters but the Redis ones (walk_packages would import
# chatcore_adapters.redis to look inside).
for package in (chatcore, chatcore_adapters, chatcore_adapters.llm, chatcore_adapters.memory):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name != "chatcore_adapters.redis":
            importlib.import_module(module.name)

from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.llm import DemoLLM


async def main():
    core = bootstrap(llm=DemoLLM(delay=0))  # the library entry point, on memory
    chat, replies, queue, cache = core.service, core.generator, core.queue, core.cache
    session = await chat.open_session(display_name="Ada")
    await chat.submit_message(
        session.session_id, conversation_id=session.conversation_id,
        client_message_id="first", text="What is chatcore?",
    )
    (work,) = await queue.claim("w", count=1, block=1)
    await replies.generate(work.item, delivery_id=work.delivery_id, owner="w")
    await queue.ack(work)
    view = await chat.load(session.session_id)
    cached = await cache.get(session.session_id)
    assert cached is not None
    return view.conversations[session.conversation_id].messages[-1].text, cached.view == view

answer, cached = asyncio.run(main())
loaded = sorted({name.split(".")[0] for name in set(sys.modules) - before})
print(json.dumps({"answer": answer, "cached": cached, "loaded": loaded}))
"""


def test_the_core_and_the_memory_adapters_need_only_pydantic() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": ":".join(str(p) for p in SOURCE_ROOTS), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "chatcore" in report["answer"]
    assert report["cached"] is True
    foreign = [
        name
        for name in report["loaded"]
        if name not in BASE
        and name not in sys.stdlib_module_names
        and not name.startswith("_sysconfigdata_")  # the standard library's, named per platform
    ]
    assert foreign == []
