"""Deployments the benchmarks start (chatcore on Redis, chatcore embedded, the bare-bones
pipeline) and the load clients that drive them.

Every deployment starts its processes through a :class:`~benchmarks.procs.Processes` registry
and stops all of them in ``stop()``; a private ``redis-server`` runs on a free loopback port
(the one on 6379 is never touched).
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import shutil
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.procs import (
    Proc,
    Processes,
    child_env,
    cpu_seconds,
    free_port,
    loadavg,
    python,
    rss_kib,
    wait_until,
)

API_CLIENT_NAME = "chatcore-api"


@dataclass(frozen=True)
class Model:
    """The benchmark model of a run: ``tokens`` per reply, ``delay`` seconds between tokens."""

    tokens: int
    delay: float = 0.0

    def env(self) -> dict[str, str]:
        return {"BENCH_TOKENS": str(self.tokens), "BENCH_DELAY": str(self.delay)}


def start_redis() -> Any:
    from tests.support.redis_server import RedisServer

    server = RedisServer(extra_args=("--maxclients", "20000"))
    server.start()
    return server


def start_redis_cluster(replicas: int = 1) -> Any:
    """Three masters on loopback, each with ``replicas`` replicas (failover by the Cluster's
    own rules)."""
    from tests.support.redis_server import RedisClusterServers

    cluster = RedisClusterServers(3, replicas=replicas, extra_args=("--maxclients", "20000"))
    cluster.start()
    return cluster


# What every chatcore process of a run on the Cluster is told: where the Cluster is, work spread
# over one queue shard per master, and (with replicas) durable writes.
def cluster_env(*, durable: bool) -> dict[str, str]:
    env = {"CHATCORE_REDIS__CLUSTER": "true", "CHATCORE_REDIS__QUEUE_SHARDS": "3"}
    if durable:
        env["CHATCORE_REDIS__WAIT_REPLICAS"] = "1"
    return env


def chatcore_env(
    model: Model,
    *,
    flush: float,
    concurrency: int,
    redis_url: str | None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Settings of every chatcore process of a run: the benchmark model, limits raised for the
    load clients (sessions, messages, frames, budgets, connections, idle timeout), JSON logs at
    info level."""
    env = {
        "CHATCORE_SECRET_KEY": secrets.token_urlsafe(48),
        "CHATCORE_SESSIONS_PER_MINUTE": "1000000",
        "CHATCORE_MESSAGES_PER_MINUTE": "100000",
        "CHATCORE_MESSAGES_BURST": "10000",
        # Every load client comes from 127.0.0.1: the per-address limits, the budgets and the
        # connection caps would measure the limits, not chatcore.
        "CHATCORE_IP_MESSAGES_PER_MINUTE": "1000000",
        "CHATCORE_IP_MESSAGES_BURST": "100000",
        "CHATCORE_IP_TOKENS_PER_MINUTE": "0",
        "CHATCORE_FRAMES_PER_MINUTE": "1000000",
        "CHATCORE_FRAMES_BURST": "100000",
        "CHATCORE_CONVERSATIONS_PER_MINUTE": "100000",
        "CHATCORE_CONVERSATIONS_BURST": "10000",
        "CHATCORE_MAX_CONNECTIONS": "100000",
        "CHATCORE_MAX_CONNECTIONS_PER_IP": "100000",
        "CHATCORE_MAX_CONNECTIONS_PER_SESSION": "10000",
        "CHATCORE_IDLE_TIMEOUT": "3600",
        "CHATCORE_HELLO_TIMEOUT": "60",
        "CHATCORE_MAX_REPLAY_EVENTS": "1000000",
        "CHATCORE_WORKER__LLM_FACTORY": "benchmarks.model:from_env",
        "CHATCORE_WORKER__CONCURRENCY": str(concurrency),
        "CHATCORE_WORKER__FLUSH_INTERVAL": str(flush),
        "CHATCORE_LOG_FORMAT": "json",
        "CHATCORE_LOG_LEVEL": "info",
        **model.env(),
    }
    if redis_url is not None:
        env["CHATCORE_REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


def chatcore_proc(
    name: str, args: list[str], env: dict[str, str], log_dir: Path, profile_dir: Path | None
) -> Proc:
    """``python -m chatcore_api <args>`` (the ``chatcore`` command), under cProfile when
    ``profile_dir`` is given. cProfile writes its file when the process exits normally, so a
    profiled process is stopped with SIGINT: uvicorn re-raises the signal it stopped on, and a
    re-raised SIGINT ends in KeyboardInterrupt, which cProfile's ``finally`` survives (the
    default action of SIGTERM would kill it before it writes)."""
    if profile_dir is None:
        return Proc(name, python("-m", "chatcore_api", *args), env, log_dir)
    argv = python("-m", "cProfile", "-o", str(profile_dir / f"{name}.prof"), "-m", "chatcore_api")
    return Proc(name, [*argv, *args], env, log_dir, stop_signal=signal.SIGINT)


def _wait_http(port: int, path: str, timeout: float, proc: Proc, ok: int = 200) -> None:
    def answered() -> bool:
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0).status_code == ok
        except httpx.HTTPError:
            return False

    wait_until(answered, timeout, f"{proc.name} to answer {path}")


@dataclass
class Deployment:
    """Something to put load on: its ports, the processes whose CPU and memory count."""

    name: str
    target: str  # "chatcore" or "baseline": which flavour of the protocol the clients speak
    log_dir: Path
    procs: Processes = field(default_factory=Processes)
    ports: list[int] = field(default_factory=list)
    redis_server: Any = None
    flush: float | None = None  # the flush interval of the replies' deltas (s)
    data_dir: Path | None = None  # an embedded server's CHATCORE_DATA_DIR, removed at stop

    def measured(self) -> dict[str, int]:
        """Name -> pid of the server-side processes (CPU and RSS are reported for each); on a
        Cluster every node, named by its role when the run began."""
        out = {p.name: p.pid for p in self.procs.procs if p.running}
        server = self.redis_server
        if server is not None and hasattr(server, "nodes"):
            masters = set(map(id, server.masters()))
            for n, node in enumerate(server.nodes):
                if node.process is not None and node.running:
                    role = "master" if id(node) in masters else "replica"
                    out[f"redis-{role}{n + 1}"] = node.process.pid
        elif server is not None and server.process is not None:
            out["redis"] = server.process.pid
        return out

    def stop(self) -> None:
        try:
            self.procs.stop_all()
        finally:
            if self.redis_server is not None:
                self.redis_server.close()
                self.redis_server = None
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir = None

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def chatcore_redis(
    log_dir: Path,
    model: Model,
    *,
    flush: float = 0.015,
    apis: int = 1,
    workers: int = 1,
    concurrency: int = 64,
    profile_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "chatcore",
    cluster: bool = False,
    durable: bool = False,
    replicas: int = 1,
) -> Deployment:
    """A private Redis (``cluster``: a three-master Cluster, each master with a replica;
    ``durable``: writes wait for the replicas), ``apis`` x ``chatcore serve --no-worker``,
    ``workers`` x ``chatcore worker``."""
    dep = Deployment(name, "chatcore", log_dir, flush=flush)
    try:
        if cluster:
            dep.redis_server = start_redis_cluster(replicas)
            extra_env = {**cluster_env(durable=durable), **(extra_env or {})}
        else:
            dep.redis_server = start_redis()
        env = child_env(
            chatcore_env(
                model,
                flush=flush,
                concurrency=concurrency,
                redis_url=dep.redis_server.url,
                extra=extra_env,
            )
        )
        for n in range(apis):
            port = free_port()
            args = ["serve", "--no-worker", "--port", str(port)]
            proc = chatcore_proc(f"api{n + 1}", args, env, log_dir, profile_dir)
            dep.procs.start(proc)
            dep.ports.append(port)
        for n in range(workers):
            start_worker(dep, env, n + 1, profile_dir)
        for proc, port in zip(dep.procs.procs, dep.ports, strict=False):
            _wait_http(port, "/healthz", 60, proc)
        wait_for_workers(dep, workers)
    except BaseException:
        dep.stop()
        raise
    return dep


def start_worker(dep: Deployment, env: dict[str, str], n: int, profile_dir: Path | None) -> Proc:
    proc = chatcore_proc(f"worker{n}", ["worker"], env, dep.log_dir, profile_dir)
    return dep.procs.start(proc)


def wait_for_workers(dep: Deployment, count: int, timeout: float = 60) -> None:
    """Until ``/readyz`` of the first API counts ``count`` live workers (their heartbeats)."""

    def live() -> int:
        try:
            body = httpx.get(f"http://127.0.0.1:{dep.ports[0]}/readyz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return 0
        return int(body.get("workers", 0))

    wait_until(lambda: live() >= count, timeout, f"{count} live workers")


EMBEDDED_STORAGES = ("memory", "sqlite")


def chatcore_embedded(
    log_dir: Path,
    model: Model,
    *,
    flush: float = 0.015,
    concurrency: int = 64,
    profile_dir: Path | None = None,
    name: str = "embedded",
    storage: str = "memory",
) -> Deployment:
    """One ``chatcore serve`` process and its in-process worker, on ``storage``: ``memory``,
    or ``sqlite`` (what ``chatcore serve`` keeps its sessions in unless told). Either way its
    ``CHATCORE_DATA_DIR`` is a new temporary directory, removed when the deployment stops:
    nothing is read from or written to the user's own data directory."""
    if storage not in EMBEDDED_STORAGES:
        raise ValueError(f"embedded storage is one of {EMBEDDED_STORAGES}, not {storage!r}")
    dep = Deployment(name, "chatcore", log_dir, flush=flush)
    try:
        dep.data_dir = Path(tempfile.mkdtemp(prefix=f"chatcore-bench-{storage}-"))
        extra = {"CHATCORE_STORAGE": storage, "CHATCORE_DATA_DIR": str(dep.data_dir)}
        env = child_env(
            chatcore_env(model, flush=flush, concurrency=concurrency, redis_url=None, extra=extra)
        )
        port = free_port()
        proc = chatcore_proc("serve", ["serve", "--port", str(port)], env, log_dir, profile_dir)
        dep.procs.start(proc)
        dep.ports.append(port)
        _wait_http(port, "/healthz", 60, proc)
    except BaseException:
        dep.stop()
        raise
    return dep


def baseline(
    log_dir: Path,
    model: Model,
    *,
    mode: str,
    flush: float = 0.015,
    concurrency: int = 64,
    name: str = "baseline",
    extra_env: dict[str, str] | None = None,
) -> Deployment:
    """A private Redis, the bare-bones server and one bare-bones worker."""
    dep = Deployment(name, "baseline", log_dir, flush=flush if mode == "batched" else 0.0)
    try:
        dep.redis_server = start_redis()
        env = child_env({**model.env(), **(extra_env or {})})
        port = free_port()
        url = dep.redis_server.url
        server = Proc(
            "bb-server",
            python("-m", "benchmarks.baseline", "server", "--redis-url", url, "--port", str(port)),
            env,
            log_dir,
        )
        dep.procs.start(server)
        dep.ports.append(port)
        worker = Proc(
            "bb-worker",
            python(
                "-m", "benchmarks.baseline", "worker", "--redis-url", url,
                "--mode", mode, "--flush", str(flush), "--concurrency", str(concurrency),
            ),
            env,
            log_dir,
        )  # fmt: skip
        dep.procs.start(worker)
        from benchmarks.procs import port_open

        wait_until(lambda: port_open(port), 30, "the baseline server")
        wait_until(lambda: "baseline worker" in worker.log_tail(), 30, "the baseline worker")
    except BaseException:
        dep.stop()
        raise
    return dep


# --- load clients -------------------------------------------------------------------------------


class ClientProc:
    """A :mod:`benchmarks.client` process and the JSON lines it prints."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in self.proc.stdout:
                with contextlib.suppress(json.JSONDecodeError):
                    self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.proc.name}: no {key!r} within {timeout:.0f}s")
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                raise RuntimeError(f"{self.proc.name} exited:\n{self.proc.log_tail()}")
            if key in item or item.get("phase") == key:
                return item

    def send(self, command: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()


def start_clients(
    dep: Deployment,
    procs: Processes,
    *,
    sessions: int,
    clients: int,
    mode: str,
    model: Model,
    latency: bool = False,
    think: tuple[float, float] = (0.0, 0.0),
    turn_timeout: float = 60.0,
    report_replies: bool = False,
    tag: str = "client",
) -> list[ClientProc]:
    out = []
    per = [sessions // clients + (1 if n < sessions % clients else 0) for n in range(clients)]
    for n, count in enumerate(per):
        argv = python(
            "-m", "benchmarks.client",
            "--target", dep.target,
            "--ports", ",".join(map(str, dep.ports)),
            "--sessions", str(count),
            "--mode", mode,
            "--tokens", str(model.tokens),
            "--turn-timeout", str(turn_timeout),
            "--think", f"{think[0]},{think[1]}",
            "--seed", str(n + 1),
        )  # fmt: skip
        if latency:
            argv.append("--latency")
        if report_replies:
            argv.append("--report-replies")
        proc = Proc(f"{tag}{n + 1}", argv, child_env({}), dep.log_dir, stdin=True, stdout=True)
        procs.start(proc)
        out.append(ClientProc(proc))
    return out


def connect_clients(clients: list[ClientProc], timeout: float) -> dict[str, Any]:
    created = [c.expect("created", timeout) for c in clients]
    for c in clients:
        c.send({"connect": True})
    ready = [c.expect("ready", timeout) for c in clients]
    failed = sum(r["failed"] for r in ready)
    if failed:
        first = next(r["first_error"] for r in ready if r["first_error"])
        raise RuntimeError(f"{failed} sessions could not connect; first error: {first}")
    return {
        "create_seconds": max(c["seconds"] for c in created),
        "connect_seconds": max(r["seconds"] for r in ready),
        "connected": sum(r["connected"] for r in ready),
    }


def percentiles(samples: list[int]) -> dict[str, float | int]:
    """p50/p90/p99/max of microsecond samples, in milliseconds."""
    if not samples:
        return {"samples": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 2)

    return {
        "samples": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] / 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) / 1000, 2),
    }


SUMMED = (
    "tokens_window", "turns_window", "frames", "sent", "acked", "duplicate_acks", "completed",
    "failed", "cancelled", "cursor_violations", "duplicate_terminals", "missing_terminals",
    "bad_replies", "turn_timeouts", "reconnects", "resent", "snapshots_on_resume",
    "connect_failures", "open_at_end",
)  # fmt: skip


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {key: sum(r[key] for r in results) for key in SUMMED}
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    out["errors"] = errors
    out["violations_sample"] = [v for r in results for v in r.get("violations", ())][:10]
    out["latency"] = percentiles([x for r in results for x in r["latencies_us"]])
    out["latency_batching"] = percentiles([x for r in results for x in r["batching_us"]])
    out["latency_delivery"] = percentiles([x for r in results for x in r["delivery_us"]])
    out["ttft"] = percentiles([x for r in results for x in r["ttft_us"]])
    out["ack"] = percentiles([x for r in results for x in r["ack_us"]])
    out["turn"] = percentiles([x for r in results for x in r.get("turn_us", ())])
    return out


def sample_cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_share(
    before: dict[str, float | None], after: dict[str, float | None], seconds: float
) -> dict[str, float]:
    """Cores used by each process over the window (1.0 = one core all the time)."""
    out = {}
    for name, start in before.items():
        end = after.get(name)
        if start is not None and end is not None:
            out[name] = round((end - start) / seconds, 2)
    return out


def load_run(
    dep: Deployment,
    *,
    model: Model,
    sessions: int,
    clients: int,
    warmup: float,
    measure: float,
    drain: float = 30.0,
    latency: bool = False,
    beside: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Sessions chat back to back; what arrives within the window after ``warmup`` counts.

    No more client processes than sessions. ``beside``: name -> pid of other processes
    running meanwhile (the busy ones) whose CPU over the window is reported with the rest."""
    clients = max(1, min(clients, sessions))
    with Processes() as procs:
        cps = start_clients(
            dep, procs, sessions=sessions, clients=clients, mode="turns", model=model,
            latency=latency,
        )  # fmt: skip
        setup = connect_clients(cps, timeout=120)
        now = time.time()
        start, end = now + warmup, now + warmup + measure
        for c in cps:
            c.send({"window": [start, end], "stop_sending": end, "drain": drain})
        pids = {**dep.measured(), **{c.proc.name: c.proc.pid for c in cps}, **(beside or {})}
        time.sleep(max(0.0, start - time.time()))
        cpu0, load0 = sample_cpu(pids), loadavg()
        time.sleep(max(0.0, end - time.time()))
        cpu1, load1 = sample_cpu(pids), loadavg()
        rss = {name: rss_kib(pid) for name, pid in dep.measured().items()}
        results = [c.expect("result", drain + 60)["result"] for c in cps]
    merged = merge(results)
    merged.update(
        {
            "deployment": dep.name,
            "flush_ms": dep.flush * 1000 if dep.flush is not None else None,
            "sessions": sessions,
            "clients": clients,
            "model": {"tokens": model.tokens, "delay": model.delay},
            "measure_s": measure,
            "warmup_s": warmup,
            "tokens_per_s": round(merged["tokens_window"] / measure),
            "turns_per_s": round(merged["turns_window"] / measure, 1),
            "cpu_cores": cpu_share(cpu0, cpu1, end - start),
            "rss_kib_end": rss,
            "loadavg_start": load0,
            "loadavg_end": load1,
            "setup": setup,
        }
    )
    return merged


def redis_clients(server: Any, name: str) -> int:
    """Connections the server has from clients called ``name``."""
    with server.client() as client:
        listed: Any = client.client_list()
    return sum(1 for c in listed if c.get("name") == name)


def idle_run(
    dep: Deployment, *, connections: int, clients: int, settle: float = 5.0
) -> dict[str, Any]:
    name = API_CLIENT_NAME if dep.target == "chatcore" else "bb-server"
    """``connections`` sockets on the deployment's first process (hello, caught up, idle)."""
    api = dep.procs.procs[0]
    model = Model(tokens=1)
    with Processes() as procs:
        cps = start_clients(
            dep, procs, sessions=connections, clients=clients, mode="idle", model=model, tag="idle"
        )
        created = [c.expect("created", 600) for c in cps]
        time.sleep(settle)
        rss_before = rss_kib(api.pid)
        redis_before = redis_clients(dep.redis_server, name) if dep.redis_server else None
        load0 = loadavg()
        for c in cps:
            c.send({"connect": True})
        ready = [c.expect("ready", 900) for c in cps]
        connected = sum(r["connected"] for r in ready)
        time.sleep(settle)
        rss_after = rss_kib(api.pid)
        redis_after = redis_clients(dep.redis_server, name) if dep.redis_server else None
        load1 = loadavg()
        for c in cps:
            c.send({"stop": True})
        results = [c.expect("result", 300)["result"] for c in cps]
    assert rss_before is not None
    assert rss_after is not None
    return {
        "deployment": dep.name,
        "connections": connected,
        "failed": sum(r["failed"] for r in ready),
        "first_errors": [x["first_error"] for x in (*created, *ready) if x.get("first_error")][:4],
        "open_at_end": sum(r["open_at_end"] for r in results),
        "create_seconds": max(c["seconds"] for c in created),
        "connect_seconds": max(r["seconds"] for r in ready),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_connection_kib": round((rss_after - rss_before) / max(1, connected), 2),
        "redis_connections_before": redis_before,
        "redis_connections_after": redis_after,
        "loadavg_start": load0,
        "loadavg_end": load1,
    }
