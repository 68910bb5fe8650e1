"""Reading cProfile files: where a process's time went, by layer and by function."""

from __future__ import annotations

import pstats
from pathlib import Path
from typing import Any

# (layer, substrings of a function's file name or name), first match wins.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting (epoll)", ("method 'poll' of 'select.epoll'",)),
    ("socket syscalls", ("_socket.socket", "method 'send' of", "method 'recv")),
    ("benchmark model", ("/benchmarks/",)),
    ("chatcore core", ("/src/chatcore/",)),
    ("chatcore adapters", ("/chatcore_adapters/",)),
    ("chatcore api", ("/chatcore_api/",)),
    ("redis-py", ("/redis/", "hiredis")),
    ("metrics (prometheus)", ("prometheus_client",)),
    ("pydantic", ("pydantic",)),
    ("uvicorn/starlette/fastapi/websockets", ("uvicorn", "starlette", "fastapi", "websockets")),
    (
        "asyncio event loop",
        (
            "/asyncio/",
            "_asyncio",
            "contextvars",
            "selectors.py",
            "_weakrefset.py",
            "_heapq",
            "time.monotonic",
            "contextlib.py",
        ),
    ),
    ("json (orjson/json)", ("orjson", "/json/")),
    ("logging", ("/logging/",)),
    ("imports and start-up", ("importlib", "<frozen", "marshal", "builtins.compile")),
)


def _layer(where: str) -> str:
    for name, needles in LAYERS:
        if any(n in where for n in needles):
            return name
    return "other (builtins: isinstance, len, str and bytes methods, ...)"


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    return f"{filename}:{line}({name})" if line else f"{filename}({name})"


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Own time per layer (share of the busy time: all but waiting in epoll) and the
    functions with the most own time and the most cumulative time in chatcore's code."""
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    layers: dict[str, float] = {}
    rows = []
    for func, (_cc, calls, tottime, cumtime, _callers) in raw.items():
        where = _where(func)
        layer = _layer(where)
        layers[layer] = layers.get(layer, 0.0) + tottime
        rows.append((where, calls, tottime, cumtime))
    total = sum(layers.values())
    busy = total - layers.get("waiting (epoll)", 0.0)
    own = sorted(rows, key=lambda r: r[2], reverse=True)[:top]
    plumbing = ("<module>", "/cli.py", "__main__", "run_worker_command", "worker_runtime.py")
    ours = sorted(
        (
            r
            for r in rows
            if ("/chatcore" in r[0] or "/benchmarks/" in r[0])
            and not any(p in r[0] for p in plumbing)
        ),
        key=lambda r: r[3],
        reverse=True,
    )[:top]

    def short(where: str) -> str:
        for cut in ("/site-packages/", "/lib/python3.11/", "/src/adapters/", "/src/", "/apps/api/"):
            if cut in where:
                return where.split(cut, 1)[1]
        return where

    return {
        "profiled_seconds": round(total, 2),
        "busy_seconds": round(busy, 2),
        "layers_share_of_busy": {
            name: round(seconds / busy, 3)
            for name, seconds in sorted(layers.items(), key=lambda kv: kv[1], reverse=True)
            if name != "waiting (epoll)" and busy > 0
        },
        "top_own_time": [
            {"function": short(w), "calls": c, "own_s": round(t, 3), "cum_s": round(cu, 3)}
            for w, c, t, cu in own
        ],
        "top_cumulative_chatcore": [
            {"function": short(w), "calls": c, "own_s": round(t, 3), "cum_s": round(cu, 3)}
            for w, c, t, cu in ours
        ],
    }
