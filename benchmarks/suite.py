"""The end-to-end benchmarks: chatcore beside a bare-bones pipeline, on this machine, in one run.

    python -m benchmarks                 # everything (about 25-30 minutes on 2 cores)
    python -m benchmarks --quick         # smaller and shorter, a smoke test (about 9 minutes)
    python -m benchmarks --only 1,2      # some figures
    python -m benchmarks --busy 2        # figures 2 and 7 also beside 2 CPU-bound processes
    python -m benchmarks --profile       # also profile chatcore's processes for figures 1, 2

Figures (docs/benchmarks.md explains each):

1. saturated token throughput, chatcore on Redis vs the bare-bones pipeline (same model, same
   clients); 2. added latency per token at ~2,500 tokens/s offered; 3. turns per second with
   100 sessions, with the loss/duplicate checks; 4. 10,000 idle WebSockets on one API process
   (RSS per connection, Redis connections held); 5. restoring a 10,000-event session, from
   Redis (:mod:`benchmarks.redis_store`) and from SQLite (:mod:`benchmarks.sqlite_store`);
   6. figures 1-4 for the embedded mode (one ``chatcore serve``), in memory and on SQLite;
   7. time to first token and to the ack, closed loop at 1, 50 and 200 sessions: chatcore on
   Redis, chatcore embedded on SQLite and the bare-bones pipeline; 8. figures 1 and 3 on a
   three-master Redis Cluster beside a single Redis.

Every target that compares with a baseline is a ratio to that baseline measured in the same
run. With ``--busy N``, figures 2 and 7 run a second time with N CPU-bound processes beside
both stacks (keys ending ``_busy{N}``), each judged against its own bare-bones run.

Every figure starts its own processes (a private redis-server on a free port, API and worker
processes, load clients) and stops them. The results go to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import profiles, stack
from benchmarks.procs import (
    ROOT,
    busy_processes,
    loadavg,
    raise_nofile,
    terminate_as_interrupt,
)
from benchmarks.stack import Deployment, Model
from chatcore_api import loops

RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8")

TARGETS = {
    "throughput_ratio": 0.80,
    "latency_p50_ms": 2.0,
    "latency_p99_ms": 10.0,
    # With --busy N: figure 2's p99 at most this many times the bare-bones' under the same load.
    "busy_latency_p99_ratio": 2.0,
    "turns_ratio": 0.60,  # figure 3: chatcore's turns/s over the bare-bones'
    "idle_rss_per_connection_kb": 50.0,  # kB = 1,000 bytes
    "restore_cold_median_ms": 150.0,  # figure 5, on Redis and on SQLite
    "sqlite_throughput_ratio": 0.80,  # figure 6: embedded on SQLite over embedded in memory
    # Figure 7 at ttft_target_sessions: time to first token over the bare-bones', p50 and p99.
    "ttft_p50_ratio": 1.5,
    "ttft_p99_ratio": 2.0,
    "ttft_target_sessions": 50,
}


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of a run."""

    warmup: float = 5.0
    measure: float = 20.0
    clients: int = 2
    throughput_sessions: int = 100
    throughput_tokens: int = 500
    latency_sessions: int = 50
    latency_tokens: int = 250
    latency_delay: float = 0.02  # 50 tokens/s per reply: 50 x 50 = 2,500 tokens/s offered
    turns_sessions: int = 100
    turns_tokens: int = 20
    idle_connections: int = 10_000
    idle_clients: int = 4
    flush: float = 0.015
    flush_alternatives: tuple[float, ...] = (0.002, 0.0)
    worker_concurrency: int = 128
    repeats: int = 3  # chatcore / bare-bones pairs of figures 1 and 2
    ttft_sessions: tuple[int, ...] = (1, 50, 200)  # figure 7's concurrency levels
    ttft_tokens: int = 20


FULL = Plan()
QUICK = Plan(
    warmup=2.0,
    measure=6.0,
    throughput_sessions=50,
    latency_sessions=50,
    latency_tokens=100,
    turns_sessions=100,
    idle_connections=1_000,
    idle_clients=2,
    repeats=1,
)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    except OSError:
        pass
    server = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    version = next((w.split("=", 1)[1] for w in server if w.startswith("v=")), "unknown")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "python": platform.python_version(),
        "redis_server": version,
    }


# Figure 6's two embedded storages, and the prefix of their keys (memory's as before SQLite).
EMBEDDED = (("memory", "6_embedded"), ("sqlite", "6_sqlite"))


class Runner:
    def __init__(self, plan: Plan, logs: Path, profile_dir: Path | None, busy: int = 0) -> None:
        self.plan = plan
        self.logs = logs
        self.profile_dir = profile_dir
        self.busy = busy
        # name -> pid of the CPU-bound processes running now (during a busy pass only).
        self.beside: dict[str, int] = {}
        self.results: dict[str, Any] = {}

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text} (load {loadavg()})", flush=True)

    def load(
        self,
        key: str,
        make: Callable[[], Deployment],
        model: Model,
        sessions: int,
        *,
        latency: bool = False,
        first_token: bool = False,
    ) -> dict[str, Any]:
        self.say(f"{key}: {sessions} sessions, {model.tokens} tokens/reply, delay {model.delay}s")
        p = self.plan
        with make() as dep:
            result = stack.load_run(
                dep,
                model=model,
                sessions=sessions,
                clients=p.clients,
                warmup=p.warmup,
                measure=p.measure,
                latency=latency,
                beside=self.beside,
            )
        result["busy_processes"] = len(self.beside)
        lat, ttft, ack = result["latency"], result["ttft"], result["ack"]
        line = f"  {result['tokens_per_s']:,} tokens/s, {result['turns_per_s']} turns/s"
        if lat.get("samples"):
            line += f", p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms"
        if first_token and ttft.get("samples") and ack.get("samples"):
            line += (
                f", first token p50/p99 {ttft['p50_ms']}/{ttft['p99_ms']} ms"
                f", ack {ack['p50_ms']}/{ack['p99_ms']} ms"
            )
        self.say(line)
        self.results[key] = result
        return result

    @contextlib.contextmanager
    def busy_load(self) -> Iterator[str]:
        """``self.busy`` CPU-bound processes beside whatever runs in the block (both stacks of
        a figure); yields the suffix of the keys measured under them."""
        self.say(f"starting {self.busy} CPU-bound processes beside the stacks")
        with busy_processes(self.busy) as pids:
            self.beside = {f"busy{n + 1}": pid for n, pid in enumerate(pids)}
            try:
                yield f"_busy{self.busy}"
            finally:
                self.beside = {}
        self.say(f"stopped the {self.busy} CPU-bound processes")

    # --- deployments ----------------------------------------------------------------------------

    def log_dir(self, name: str) -> Path:
        path = self.logs / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def chatcore(
        self,
        model: Model,
        flush: float,
        name: str,
        env: dict[str, str] | None = None,
        *,
        cluster: bool = False,
    ) -> Callable[[], Deployment]:
        return lambda: stack.chatcore_redis(
            self.log_dir(name),
            model,
            flush=flush,
            concurrency=self.plan.worker_concurrency,
            name=name,
            extra_env=env,
            cluster=cluster,
            replicas=0,
        )

    def embedded(
        self, model: Model, flush: float, name: str, storage: str
    ) -> Callable[[], Deployment]:
        return lambda: stack.chatcore_embedded(
            self.log_dir(name),
            model,
            flush=flush,
            concurrency=self.plan.worker_concurrency,
            name=name,
            storage=storage,
        )

    def baseline(
        self, model: Model, mode: str, name: str, env: dict[str, str] | None = None
    ) -> Callable[[], Deployment]:
        return lambda: stack.baseline(
            self.log_dir(name),
            model,
            mode=mode,
            flush=self.plan.flush,
            concurrency=self.plan.worker_concurrency,
            name=name,
            extra_env=env,
        )

    # --- figures --------------------------------------------------------------------------------

    def throughput(self, embedded: bool) -> None:
        p = self.plan
        model = Model(p.throughput_tokens, 0.0)
        n = p.throughput_sessions
        if not embedded:
            self.throughput_pairs(model, n)
            for flush in p.flush_alternatives:
                alt = f"1_chatcore_flush_{flush * 1000:g}ms"
                self.load(alt, self.chatcore(model, flush, alt), model, n)
            self.load("1_baseline_per_token", self.baseline(model, "per-token", "1_bbt"), model, n)
            # Both pipelines run on uvloop when it is installed; the same pair on asyncio's own
            # loop shows how much of each figure is the event loop's.
            plain = {"CHATCORE_EVENT_LOOP": "asyncio"}
            key = "1_chatcore_asyncio_loop"
            self.load(key, self.chatcore(model, p.flush, key, plain), model, n)
            key = "1_baseline_batched_asyncio_loop"
            self.load(key, self.baseline(model, "batched", key, plain), model, n)
        else:
            for storage, prefix in EMBEDDED:
                make = self.embedded(model, p.flush, f"{prefix}_thr", storage)
                self.load(f"{prefix}_throughput", make, model, n)

    def throughput_pairs(self, model: Model, n: int) -> None:
        """chatcore and the batched bare-bones pipeline, one after the other, ``repeats``
        times: the machine's background load drifts, so the ratio is taken per pair and the
        median pair is reported (every run is kept in ``1_pairs``)."""
        pairs = []
        for i in range(self.plan.repeats):
            tag = f" (pair {i + 1} of {self.plan.repeats})" if self.plan.repeats > 1 else ""
            c = self.load(
                "1_chatcore" + tag, self.chatcore(model, self.plan.flush, "1_cc"), model, n
            )
            b = self.load(
                "1_baseline_batched" + tag, self.baseline(model, "batched", "1_bb"), model, n
            )
            pairs.append((c, b))
        ratios = [c["tokens_per_s"] / b["tokens_per_s"] for c, b in pairs]
        order = sorted(range(len(pairs)), key=lambda i: ratios[i])
        median = order[len(order) // 2]
        for key in list(self.results):
            if key.startswith(("1_chatcore (pair", "1_baseline_batched (pair")):
                del self.results[key]
        self.results["1_chatcore"], self.results["1_baseline_batched"] = pairs[median]
        self.results["1_pairs"] = {
            "chatcore_tokens_per_s": [c["tokens_per_s"] for c, _ in pairs],
            "baseline_tokens_per_s": [b["tokens_per_s"] for _, b in pairs],
            "ratios": [round(r, 3) for r in ratios],
            "median_pair": median + 1,
            "loadavg": [[c["loadavg_start"][0], b["loadavg_end"][0]] for c, b in pairs],
        }

    def latency(self, embedded: bool) -> None:
        p = self.plan
        model = Model(p.latency_tokens, p.latency_delay)
        n = p.latency_sessions
        if not embedded:
            self.latency_pairs(model, n)
            for flush in p.flush_alternatives:
                alt = f"2_chatcore_flush_{flush * 1000:g}ms"
                self.load(alt, self.chatcore(model, flush, alt), model, n, latency=True)
        else:
            for flush in (p.flush, *p.flush_alternatives):
                for storage, prefix in EMBEDDED:
                    key = f"{prefix}_latency"
                    if flush != p.flush:
                        key += f"_flush_{flush * 1000:g}ms"
                    make = self.embedded(model, flush, key, storage)
                    self.load(key, make, model, n, latency=True)

    def busy_latency(self) -> None:
        """Figure 2's pairs again (not its flush alternatives) with ``--busy`` CPU-bound
        processes beside both pipelines."""
        p = self.plan
        with self.busy_load() as suffix:
            model = Model(p.latency_tokens, p.latency_delay)
            self.latency_pairs(model, p.latency_sessions, suffix)

    def latency_pairs(self, model: Model, n: int, suffix: str = "") -> None:
        """chatcore at the default flush and the per-token bare-bones pipeline, one after the
        other, ``repeats`` times; each is reported by its median run (by p50), and every run's
        p50 and p99 are kept in ``2_runs``: one 20-second run moves by a few tenths of a
        millisecond with the machine's background load. ``suffix`` ends every key (a busy
        pass's)."""
        repeats = self.plan.repeats
        chatcore, bare = "2_chatcore" + suffix, "2_baseline_per_token" + suffix
        runs: dict[str, list[dict[str, Any]]] = {chatcore: [], bare: []}
        for i in range(repeats):
            tag = f" (run {i + 1} of {repeats})" if repeats > 1 else ""
            make = self.chatcore(model, self.plan.flush, chatcore)
            runs[chatcore].append(self.load(chatcore + tag, make, model, n, latency=True))
            make = self.baseline(model, "per-token", "2_bb" + suffix)
            runs[bare].append(self.load(bare + tag, make, model, n, latency=True))
        summary: dict[str, Any] = {}
        for key, results in runs.items():
            for i in range(repeats):
                self.results.pop(f"{key} (run {i + 1} of {repeats})", None)
            ordered = sorted(results, key=lambda r: r["latency"]["p50_ms"])
            self.results[key] = ordered[len(ordered) // 2]
            summary[key.removesuffix(suffix)] = [
                {"p50_ms": r["latency"]["p50_ms"], "p99_ms": r["latency"]["p99_ms"]}
                for r in results
            ]
        self.results["2_runs" + suffix] = summary

    def turns(self, embedded: bool) -> None:
        p = self.plan
        model = Model(p.turns_tokens, 0.0)
        n = p.turns_sessions
        if not embedded:
            self.load("3_chatcore", self.chatcore(model, p.flush, "3_chatcore"), model, n)
            self.load("3_baseline", self.baseline(model, "batched", "3_bb"), model, n)
        else:
            for storage, prefix in EMBEDDED:
                make = self.embedded(model, p.flush, f"{prefix}_turns", storage)
                self.load(f"{prefix}_turns", make, model, n)

    def first_token(self, suffix: str = "") -> None:
        """Figure 7: time to first token and to the ack, closed loop, a model whose tokens come
        at once, at each of ``ttft_sessions``: chatcore on Redis, chatcore embedded on SQLite
        and the batched bare-bones pipeline, one after the other at each level."""
        p = self.plan
        model = Model(p.ttft_tokens, 0.0)
        for n in p.ttft_sessions:
            stacks = (
                ("redis", self.chatcore(model, p.flush, f"7_redis_{n}{suffix}")),
                ("sqlite", self.embedded(model, p.flush, f"7_sqlite_{n}{suffix}", "sqlite")),
                ("baseline", self.baseline(model, "batched", f"7_bb_{n}{suffix}")),
            )
            for name, make in stacks:
                self.load(f"7_{name}_{n}{suffix}", make, model, n, first_token=True)

    def busy_first_token(self) -> None:
        with self.busy_load() as suffix:
            self.first_token(suffix)

    def cluster(self) -> None:
        """Figure 8: figures 1 and 3 on a three-master Redis Cluster (no replicas, work in one
        queue shard per master) beside a single Redis, in the same run. On 2 cores the masters
        share the cores the single server had, so this shows the Cluster's overhead, not its
        scaling; each master's CPU shows how the load spreads."""
        p = self.plan
        thr, turns = Model(p.throughput_tokens, 0.0), Model(p.turns_tokens, 0.0)
        n_thr, n_turns = p.throughput_sessions, p.turns_sessions
        self.load("8_single_throughput", self.chatcore(thr, p.flush, "8_st"), thr, n_thr)
        make = self.chatcore(thr, p.flush, "8_ct", cluster=True)
        self.load("8_cluster_throughput", make, thr, n_thr)
        self.load("8_single_turns", self.chatcore(turns, p.flush, "8_su"), turns, n_turns)
        make = self.chatcore(turns, p.flush, "8_cu", cluster=True)
        self.load("8_cluster_turns", make, turns, n_turns)

    def idle(self, embedded: bool) -> None:
        p = self.plan
        model = Model(1, 0.0)
        runs: list[tuple[str, Callable[[], Deployment]]] = (
            [
                (f"{prefix}_idle", self.embedded(model, p.flush, f"{prefix}_idle", storage))
                for storage, prefix in EMBEDDED
            ]
            if embedded
            else [
                ("4_chatcore", self.chatcore(model, p.flush, "4_chatcore")),
                ("4_baseline", self.baseline(model, "batched", "4_bb")),
            ]
        )
        for key, make in runs:
            self.say(f"{key}: {p.idle_connections:,} idle WebSockets on one server process")
            with make() as dep:
                result = stack.idle_run(dep, connections=p.idle_connections, clients=p.idle_clients)
            self.say(
                f"  {result['connections']:,} connected in {result['connect_seconds']} s, "
                f"{result['rss_per_connection_kib']} KiB RSS per connection, Redis connections "
                f"{result['redis_connections_before']} -> {result['redis_connections_after']}"
            )
            self.results[key] = result

    def restore(self, quick: bool) -> None:
        from benchmarks import redis_store
        from chatcore_adapters.redis import RedisSettings, connect

        self.say("5_restore: a 10,000-event session, empty and warm cache")

        async def measure() -> dict[str, Any]:
            server = redis_store.start_server()
            try:
                conn = connect(
                    RedisSettings(url=server.url, prefix="bench:", client_name="chatcore-bench")
                )
                try:
                    return await redis_store.bench_restore(conn, quick)
                finally:
                    await conn.aclose()
            finally:
                server.close()

        load0 = loadavg()
        result = asyncio.run(measure())
        result["loadavg_start"], result["loadavg_end"] = load0, loadavg()
        self.say(
            f"  empty cache {result['cold_cache']['median_ms']} ms median, "
            f"warm {result['warm_cache']['median_ms']} ms"
        )
        self.results["5_restore"] = result

        from benchmarks import sqlite_store

        self.say("5_restore_sqlite: the same session in a SQLite file, empty and warm cache")
        load0 = loadavg()
        result = loops.run(sqlite_store.restore_figure(quick))
        result["loadavg_start"], result["loadavg_end"] = load0, loadavg()
        self.say(
            f"  empty cache {result['cold_cache']['median_ms']} ms median, "
            f"reopened {result['cold_reopened']['median_ms']} ms, "
            f"warm {result['warm_cache']['median_ms']} ms"
        )
        self.results["5_restore_sqlite"] = result

    def profile(self) -> None:
        """Figures 1 and 2 again, chatcore's processes under cProfile (slower: not timed)."""
        assert self.profile_dir is not None
        p = self.plan
        out: dict[str, Any] = {}
        for key, model, sessions in (
            ("1", Model(p.throughput_tokens, 0.0), p.throughput_sessions),
            ("2", Model(p.latency_tokens, p.latency_delay), p.latency_sessions),
        ):
            where = self.profile_dir / f"figure{key}"
            where.mkdir(parents=True, exist_ok=True)
            self.say(f"profile of figure {key} (cProfile on the API and the worker)")
            with stack.chatcore_redis(
                self.log_dir(f"profile{key}"),
                model,
                flush=p.flush,
                concurrency=p.worker_concurrency,
                profile_dir=where,
                name=f"profile{key}",
            ) as dep:
                run = stack.load_run(
                    dep,
                    model=model,
                    sessions=sessions,
                    clients=p.clients,
                    warmup=p.warmup,
                    measure=p.measure,
                    latency=key == "2",
                )
            out[f"figure{key}"] = {
                "tokens_per_s_under_profiler": run["tokens_per_s"],
                "cpu_cores": run["cpu_cores"],
                **{f.stem: profiles.summarise(f) for f in sorted(where.glob("*.prof"))},
            }
        self.results["profile"] = out


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        plan = dataclasses.replace(plan, repeats=max(1, args.repeats))
    wanted = set(args.only.split(",")) if args.only else set(FIGURES)
    unknown = wanted - set(FIGURES)
    if unknown:
        raise SystemExit(f"--only: no figure {', '.join(sorted(unknown))} (figures: {FIGURES})")
    busy = max(0, args.busy or 0)
    raise_nofile()
    logs = Path(tempfile.mkdtemp(prefix="chatcore-bench-"))
    profile_dir = logs / "profiles" if args.profile else None
    runner = Runner(plan, logs, profile_dir, busy)
    started = datetime.now(UTC)
    load0 = loadavg()
    runner.say(f"logs in {logs}")
    with terminate_as_interrupt():
        steps: list[tuple[str, Callable[[], None]]] = [
            ("1", lambda: runner.throughput(embedded=False)),
            ("2", lambda: runner.latency(embedded=False)),
            *([("2", runner.busy_latency)] if busy else []),
            ("3", lambda: runner.turns(embedded=False)),
            ("4", lambda: runner.idle(embedded=False)),
            ("5", lambda: runner.restore(args.quick)),
            ("6", lambda: runner.throughput(embedded=True)),
            ("6", lambda: runner.latency(embedded=True)),
            ("6", lambda: runner.turns(embedded=True)),
            ("6", lambda: runner.idle(embedded=True)),
            ("7", runner.first_token),
            *([("7", runner.busy_first_token)] if busy else []),
            ("8", runner.cluster),
        ]
        for figure, step in steps:
            if figure in wanted:
                step()
        if profile_dir is not None:
            runner.profile()
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds()),
        "quick": args.quick,
        "busy": busy,
        "command": "python -m benchmarks " + " ".join(args.argv),
        "machine": machine(),
        "loadavg_start": load0,
        "loadavg_end": loadavg(),
        "plan": plan.__dict__,
        "targets": TARGETS,
        "results": runner.results,
        "logs": str(logs),
    }
