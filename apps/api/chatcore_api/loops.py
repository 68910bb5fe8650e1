"""The event loop chatcore's processes run on: uvloop when it is installed (it is a dependency
of the server; the library does not need it), else asyncio's own.

uvloop runs the same asyncio code with a loop written in C on libuv; on this project's
benchmarks it takes a large share of the per-event cost off both the API and the workers.
``CHATCORE_EVENT_LOOP=asyncio`` turns it off (to compare, or to debug with asyncio's tools).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

ENV = "CHATCORE_EVENT_LOOP"


def loop_name() -> Literal["uvloop", "asyncio"]:
    """``uvloop`` when it is importable and not turned off, else ``asyncio``."""
    wanted = os.environ.get(ENV, "auto").strip().lower()
    if wanted not in {"auto", "uvloop", "asyncio"}:
        raise ValueError(f"{ENV} must be auto, uvloop or asyncio, not {wanted!r}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401 - optional
    except ImportError:
        if wanted == "uvloop":
            raise
        return "asyncio"
    return "uvloop"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if loop_name() == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
