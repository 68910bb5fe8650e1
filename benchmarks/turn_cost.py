"""What one turn costs on the Redis deployment: figure 3's load, counted per turn.

    python -m benchmarks.turn_cost [--seconds S] [--sessions N] [--profile]

One API process, one worker and a private redis-server, as in figure 3 (sessions chatting
back to back, 20-token replies from a model that never waits). Over the measured window it
prints, per completed turn:

* each process's CPU time, user and system apart (``/proc/<pid>/stat``);
* the Redis commands the server ran, by command (``INFO commandstats``): a script counts once,
  whatever it calls inside;
* with ``--profile``, the API and the worker run under cProfile (slower; their turns/s are not
  figure 3's), over their whole run: the Python time of each process per turn, the function
  calls per turn, and the sends to Redis per turn (redis-py's socket writes, one per command
  sent alone or per pipeline).

Times per turn, profiled or not, move by 10-20% from run to run on a shared machine; the
command counts, the function calls and the sends per turn barely move, so they are what
shows a change of round trips or of work.
"""

from __future__ import annotations

import argparse
import os
import pstats
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks import stack
from benchmarks.stack import Model


def _ticks(pid: int) -> tuple[int, int]:
    """(user, system) CPU ticks ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _profiled(path: Path, turns: int) -> dict[str, float]:
    """Python µs per turn in a cProfile file (the event loop's own wait left out), function
    calls per turn (steadier than times on a shared machine) and sends to Redis per turn.
    ``turns``: the turns the process did while profiled."""
    stats: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    busy = 0.0
    sends = 0
    functions = 0
    for (filename, _, function), row in stats.items():
        primitive, calls, own, _, _ = row
        functions += primitive
        if function == "run" and filename.endswith("runners.py"):
            continue  # (asyncio's runner: time spent waiting in the loop)
        if function in ("run", "_serve") and filename.endswith(("worker.py", "handler.py")):
            continue  # (long-lived coroutines: their own time is the loop's wait)
        busy += own
        if function == "writelines" and filename.endswith("streams.py"):
            sends += calls
    return {
        "python_us_per_turn": round(1e6 * busy / turns) if turns else 0,
        "function_calls_per_turn": round(functions / turns) if turns else 0,
        "redis_sends_per_turn": round(sends / turns, 2) if turns else 0,
    }


def _turns_profiled(path: Path) -> int:
    """The turns a profiled process took part in: one prompt built (worker) or one message
    accepted (API) per turn."""
    stats: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    for (_, _, function), row in stats.items():
        if function in ("build_prompt", "_accepted"):
            return int(row[1])
    return 0


def run(seconds: float, sessions: int, profile: bool) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="chatcore-turn-cost-"))
    profile_dir = logs / "profiles" if profile else None
    if profile_dir is not None:
        profile_dir.mkdir()
    model = Model(20, 0.0)
    warmup = 4.0
    window: dict[str, Any] = {}
    with stack.chatcore_redis(
        logs, model, flush=0.015, concurrency=128, name="turn-cost", replicas=0,
        profile_dir=profile_dir,
    ) as dep:  # fmt: skip
        pids = dep.measured()
        server = redis.Redis.from_url(dep.redis_server.url)

        def sample() -> None:
            time.sleep(warmup)
            window["cpu0"] = {name: _ticks(pid) for name, pid in pids.items()}
            window["cmd0"] = server.info("commandstats")
            time.sleep(seconds)
            window["cpu1"] = {name: _ticks(pid) for name, pid in pids.items()}
            window["cmd1"] = server.info("commandstats")

        sampler = threading.Thread(target=sample)
        sampler.start()
        result = stack.load_run(
            dep, model=model, sessions=sessions, clients=2, warmup=warmup, measure=seconds
        )
        sampler.join()
        server.close()
    turns = result["turns_window"]
    hz = os.sysconf("SC_CLK_TCK")
    cpu = {}
    for name in pids:
        (u0, s0), (u1, s1) = window["cpu0"][name], window["cpu1"][name]
        cpu[name] = {
            "user_us": round(1e6 * (u1 - u0) / hz / turns) if turns else 0,
            "system_us": round(1e6 * (s1 - s0) / hz / turns) if turns else 0,
        }
    commands: dict[str, float] = {}
    for key, row in window["cmd1"].items():
        calls = row["calls"] - window["cmd0"].get(key, {"calls": 0})["calls"]
        if calls and turns:
            commands[key.removeprefix("cmdstat_")] = round(calls / turns, 2)
    out: dict[str, Any] = {
        "turns_per_s": result["turns_per_s"],
        "first_token_ms": {k: result["ttft"].get(k) for k in ("p50_ms", "p99_ms")},
        "cpu_per_turn": cpu,
        "redis_commands_per_turn": dict(sorted(commands.items())),
        "redis_commands_per_turn_total": round(sum(commands.values()), 2),
        "logs": str(logs),
    }
    if profile_dir is not None:
        out["profiled"] = {
            f.stem: _profiled(f, _turns_profiled(f)) for f in sorted(profile_dir.glob("*.prof"))
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="API and worker under cProfile")
    args = parser.parse_args()
    out = run(args.seconds, args.sessions, args.profile)
    print(f"turns/s {out['turns_per_s']}; first token p50/p99 ms {out['first_token_ms']}")
    for name, row in out["cpu_per_turn"].items():
        print(f"  {name:10s} CPU per turn: user {row['user_us']} µs, system {row['system_us']} µs")
    print(f"  Redis commands per turn: {out['redis_commands_per_turn_total']}")
    for command, n in out["redis_commands_per_turn"].items():
        print(f"    {command:14s} {n}")
    for name, row in out.get("profiled", {}).items():
        print(
            f"  {name} under cProfile, per turn: {row['python_us_per_turn']} µs of Python, "
            f"{row['function_calls_per_turn']:,} function calls, "
            f"{row['redis_sends_per_turn']} sends to Redis"
        )
    print(f"  logs in {out['logs']}")


if __name__ == "__main__":
    main()
