"""The load test with faults: sessions chat while workers are SIGKILLed and an API restarts.

    python -m benchmarks.faults            # 1,000 sessions for 5 minutes (the full run)
    python -m benchmarks.faults --short    # 50 sessions for 50 s: what CI runs (< 2 minutes)
    python -m benchmarks.faults --short --repeat 20 --busy 2   # 20 runs, 2 cores kept busy

It starts a private redis-server, two API processes (``chatcore serve --no-worker``), worker
processes (``chatcore worker``) and load clients (:mod:`benchmarks.client`, several sessions
each, connected to either API). Every session sends a message, waits for its reply's terminal
event, pauses, and sends the next. Meanwhile, at random moments, a random worker is SIGKILLed
(and started again a moment later), and once, halfway, one API process is SIGKILLed and
started again: its clients reconnect (to either API) with their last cursor and resume, and
send again a message that was not acknowledged (the server records a client message id once).

At the end, after the in-flight turns have finished:

* from the Redis logs directly (every session's stream, decoded): every recorded message has
  exactly one terminal reply event, every message a client had acknowledged is in its log, and
  every completed reply is whole (N well-formed tokens);
* from what each client received: cursors strictly increasing (no duplicate, no reordering,
  across reconnects), one terminal event per acknowledged message, and the text it assembled
  for each reply equal to the text in the log;
* memory: the RSS of the API and worker processes over the run; from 30 s after the API
  restart to the end (a constant number of connections) it must grow by less than 5%.

Exit status 0 when every count is right; the JSON (``--json``) has the details.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import stack, tokens
from benchmarks.procs import (
    FLAT_TOLERANCE,
    ROOT,
    Proc,
    Processes,
    busy_processes,
    loadavg,
    port_open,
    raise_nofile,
    rss_growth,
    rss_kib,
    terminate_as_interrupt,
    wait_until,
)
from benchmarks.stack import Deployment, Model

RESULTS = ROOT / "benchmarks" / "results"
TERMINAL = frozenset({"reply_completed", "reply_failed", "reply_cancelled"})


@dataclass(frozen=True)
class FaultPlan:
    sessions: int = 1000
    clients: int = 4
    duration: float = 300.0
    workers: int = 3
    tokens: int = 30
    delay: float = 0.03  # about 1 s per reply
    think: tuple[float, float] = (12.0, 24.0)
    kill_every: tuple[float, float] = (10.0, 25.0)
    quiet_end: float = 15.0  # no faults in the last seconds, so the drain is bounded
    restart_after: tuple[float, float] = (0.5, 2.0)
    reclaim_after: float = 3.0
    drain: float = 45.0
    seed: int = 7
    spare_one_worker: bool = True
    # On a three-master Redis Cluster with a replica each, writes waiting for the replicas; one
    # master is SIGKILLed (at this fraction of the run) and comes back once its replica is
    # promoted, as a supervisor would bring it back.
    cluster: bool = False
    kill_master_at: float | None = None


FULL = FaultPlan()
SHORT = FaultPlan(
    sessions=50,
    clients=2,
    duration=50.0,
    workers=2,
    think=(0.5, 2.0),
    kill_every=(6.0, 10.0),
    quiet_end=10.0,
    drain=25.0,
    spare_one_worker=False,  # short: every worker may die; memory is judged in the full run
)
SHORT_CLUSTER = FaultPlan(
    **{
        **asdict(SHORT),
        "workers": 3,
        "duration": 60.0,
        "quiet_end": 12.0,
        "drain": 40.0,
        "cluster": True,
        "kill_master_at": 0.3,
    }
)


def fault_env(plan: FaultPlan) -> dict[str, str]:
    """Short takeover times, so a killed worker's reply is taken over within seconds."""
    return {
        "CHATCORE_REDIS__RECLAIM_AFTER": str(plan.reclaim_after),
        "CHATCORE_WORKER__LEASE_TTL": str(plan.reclaim_after + 1),
        "CHATCORE_WORKER__KEEPALIVE_INTERVAL": str(plan.reclaim_after / 3),
        "CHATCORE_WORKER__CLAIM_BLOCK": "1",
        "CHATCORE_WORKER__HEARTBEAT_INTERVAL": "1",
        "CHATCORE_WORKER__HEARTBEAT_TTL": "3",
        "CHATCORE_WORKER__BACKOFF_MAX": "1",
        "CHATCORE_WORKER__SHUTDOWN_GRACE": "5",
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# --- faults -------------------------------------------------------------------------------------


class Faults:
    """Kills and restarts, at random moments, with a log of what was done."""

    def __init__(self, dep: Deployment, plan: FaultPlan, rand: random.Random) -> None:
        self.dep = dep
        self.plan = plan
        self.rand = rand
        self.events: list[dict[str, Any]] = []
        self.pending: list[tuple[float, str, Proc]] = []  # (when, what, process)
        self.dead_master: Any = None
        self.dead_slots: list[tuple[int, int]] = []
        self.master_killed_at = 0.0  # wall clock
        self.promoted_at = 0.0
        self.started = time.monotonic()

    def note(self, what: str, proc: Proc, **extra: Any) -> None:
        at = round(time.monotonic() - self.started, 1)
        self.events.append({"at_s": at, "what": what, "process": proc.name, **extra})
        print(f"[faults] {at:6.1f}s {what} {proc.name} {extra or ''}", flush=True)

    def workers(self) -> list[Proc]:
        return [p for p in self.dep.procs.procs if p.name.startswith("worker")]

    def apis(self) -> list[Proc]:
        return [p for p in self.dep.procs.procs if p.name.startswith("api")]

    def kill_worker(self) -> None:
        # The last worker is never killed, so one worker lives through the whole run and its
        # memory can be judged like the API's (the others still die every 10-25 s).
        spared = self.workers()[-1:] if self.plan.spare_one_worker else []
        alive = [p for p in self.workers() if p.running and p not in spared]
        if not alive:
            return
        victim = self.rand.choice(alive)
        pid = victim.pid
        victim.kill()
        self.note("SIGKILL", victim, pid=pid)
        self.pending.append((time.monotonic() + self.rand.uniform(*self.plan.restart_after),
                             "start", victim))  # fmt: skip

    def kill_master(self) -> None:
        """SIGKILL a master of the Cluster; it comes back once its replica has taken over."""
        cluster = self.dep.redis_server
        victim = self.rand.choice(cluster.masters())
        with victim.client() as admin:
            myid = admin.execute_command("CLUSTER", "MYID")
            ranges = admin.execute_command("CLUSTER", "SLOTS")
        myid = myid.decode() if isinstance(myid, bytes) else myid
        self.dead_slots = [(int(r[0]), int(r[1])) for r in ranges if _text(r[2][2]) == myid]
        self.master_killed_at = time.time()
        victim.kill()
        self.dead_master = victim
        at = round(time.monotonic() - self.started, 1)
        self.events.append(
            {"at_s": at, "what": "SIGKILL", "process": f"redis master :{victim.port}",
             "slots": self.dead_slots}
        )  # fmt: skip
        print(f"[faults] {at:6.1f}s SIGKILL redis master :{victim.port}", flush=True)

    def _revive_master(self) -> None:
        """Start the killed master again once three masters serve every slot (its replica
        was promoted): it rejoins as the promoted one's replica."""
        node = self.dead_master
        if node is None or node.running:
            return
        cluster = self.dep.redis_server
        if len(cluster.masters()) < 3:
            return
        self.promoted_at = time.time()
        node.start()
        self.dead_master = None
        at = round(time.monotonic() - self.started, 1)
        self.events.append({"at_s": at, "what": "started", "process": f"redis :{node.port}"})
        print(f"[faults] {at:6.1f}s promoted; started redis :{node.port} again", flush=True)

    def restart_api(self) -> None:
        api = self.apis()[-1]
        pid = api.pid
        api.kill()
        self.note("SIGKILL", api, pid=pid)
        self.pending.append((time.monotonic() + 1.0, "start-api", api))

    def due(self) -> None:
        if self.dead_master is not None:
            self._revive_master()
        now = time.monotonic()
        for item in [p for p in self.pending if p[0] <= now]:
            self.pending.remove(item)
            _, what, proc = item
            proc.start()
            self.note("started", proc, pid=proc.pid)
            if what == "start-api":
                self._wait_listening(proc)

    def _wait_listening(self, api: Proc) -> None:
        port = self.dep.ports[self.apis().index(api)]
        wait_until(lambda: port_open(port), 30, f"{api.name} to listen")

    def finish(self) -> None:
        """Start whatever is still waiting to be started."""
        deadline = time.monotonic() + 60
        while self.dead_master is not None and time.monotonic() < deadline:
            self._revive_master()
            time.sleep(0.2)
        for item in list(self.pending):
            self.pending.remove(item)
            item[2].start()
            self.note("started", item[2], pid=item[2].pid)


# --- checking the logs --------------------------------------------------------------------------


def redis_client(url: str, *, cluster: bool, decode: bool = False) -> Any:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    if cluster:
        return RedisCluster.from_url(url, decode_responses=decode)
    return aioredis.Redis.from_url(url, decode_responses=decode)


async def read_logs(
    url: str, session_ids: list[str], *, cluster: bool = False
) -> dict[str, list[Any]]:
    """Every session's whole event log, straight from Redis, decoded."""
    from chatcore_adapters.codec import decode_records
    from chatcore_adapters.redis import KeySpace

    keys = KeySpace()
    client = redis_client(url, cluster=cluster)
    out: dict[str, list[Any]] = {}
    try:
        for sid in session_ids:
            entries: list[Any] = []
            start = "-"
            while True:
                page: Any = await client.xrange(keys.events(sid), start, "+", count=1000)
                entries.extend(page)
                if len(page) < 1000:
                    break
                start = "(" + page[-1][0].decode()
            out[sid] = decode_records((i.decode(), f[b"e"]) for i, f in entries)
    finally:
        await client.aclose()
    return out


def check_logs(
    logs: dict[str, list[Any]], reports: list[dict[str, Any]], expected_tokens: int
) -> dict[str, Any]:
    """The counts of the end check (every ``*_bad`` count must be zero)."""
    c: Counter[str] = Counter()
    by_session = {r["session_id"]: r for r in reports}
    for sid, records in logs.items():
        report = by_session.get(sid, {"acked": {}, "replies": {}, "terminals": {}})
        messages: dict[str, str] = {}  # message id -> client message id
        terminals: Counter[str] = Counter()
        texts: dict[str, list[str]] = {}
        final: dict[str, tuple[str, str | None]] = {}  # message id -> (status, reply id)
        for record in records:
            event = record.event
            kind = event.type
            if kind == "message_submitted":
                messages[event.message_id] = event.client_message_id
            elif kind == "reply_delta":
                texts.setdefault(event.reply_id, []).append(event.text)
            elif kind == "reply_abandoned":
                c["takeovers_in_logs"] += 1
            elif kind in TERMINAL:
                terminals[event.in_reply_to] += 1
                final.setdefault(event.in_reply_to, (kind, event.reply_id))
        c["messages_in_logs"] += len(messages)
        for message_id in messages:
            n = terminals[message_id]
            if n == 0:
                c["messages_without_terminal_bad"] += 1
            elif n > 1:
                c["messages_with_several_terminals_bad"] += 1
        for message_id in terminals:
            if message_id not in messages:
                c["terminals_without_message_bad"] += 1
        for cmid, message_id in report["acked"].items():
            c["acked"] += 1
            if messages.get(message_id) != cmid:
                c["acked_but_not_in_log_bad"] += 1
        for message_id, (status, reply_id) in final.items():
            c[f"log_{status}"] += 1
            text = "".join(texts.get(reply_id or "", ()))
            if status == "reply_completed" and (
                not tokens.well_formed(text) or tokens.count(text) != expected_tokens
            ):
                c["incomplete_replies_in_log_bad"] += 1
            seen = report["replies"].get(message_id)
            if seen is None:
                continue
            c["replies_compared"] += 1
            if status == "reply_completed" and seen["text"] != digest(text):
                c["client_text_differs_from_log_bad"] += 1
            if seen["status"] != status:
                c["client_status_differs_from_log_bad"] += 1
    for report in reports:
        if report["session_id"] not in logs:
            c["sessions_without_log_bad"] += 1
    return dict(c)


def unanswered(logs: dict[str, list[Any]], reports: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every message with no terminal reply: recorded in a log without one, or acknowledged
    to a client that never received one. Each with its session, ids and where it was seen."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for sid, records in logs.items():
        answered = {r.event.in_reply_to for r in records if r.event.type in TERMINAL}
        for record in records:
            event = record.event
            if event.type == "message_submitted" and event.message_id not in answered:
                found[(sid, event.message_id)] = {
                    "session_id": sid,
                    "message_id": event.message_id,
                    "client_message_id": event.client_message_id,
                    "conversation_id": event.conversation_id,
                    "position": record.position,
                    "seen": "log",
                }
    for report in reports:
        sid = report["session_id"]
        for cmid, mid in report["acked"].items():
            if report["terminals"].get(mid, 0) == 0:
                entry = found.setdefault(
                    (sid, mid),
                    {"session_id": sid, "message_id": mid, "client_message_id": cmid,
                     "seen": ""},
                )  # fmt: skip
                entry["seen"] = (entry["seen"] + "+client").lstrip("+")
    return list(found.values())


async def message_histories(
    url: str,
    logs: dict[str, list[Any]],
    missing: list[dict[str, str]],
    *,
    cluster: bool = False,
    shards: int = 1,
) -> list[dict[str, Any]]:
    """Why each message of ``missing`` went unanswered, as far as Redis can tell: its session's
    events from the message on, the work queue's entries for it (pending or not, with their
    consumer, idle time and delivery count), dead letters and intents that name it."""
    from chatcore_adapters.redis import KeySpace

    client = redis_client(url, cluster=cluster, decode=True)
    out = []
    try:
        stream: list[Any] = []
        pending: list[Any] = []
        dead: list[Any] = []
        intents: list[Any] = []
        for queue in KeySpace().queue_shards("chatcore:work", shards):
            stream += await client.xrange(queue.stream, "-", "+")
            pending += await client.xpending_range(queue.stream, "workers", "-", "+", 10_000)
            dead += await client.xrange(queue.dead, "-", "+")
            intents += await client.zrange(queue.intents, 0, -1, withscores=True)
        pending_by_id = {p["message_id"]: p for p in pending}
        for entry in missing:
            sid, mid = entry["session_id"], entry["message_id"]
            records = logs.get(sid, [])
            start = next(
                (n for n, r in enumerate(records)
                 if getattr(r.event, "message_id", None) == mid),
                0,
            )  # fmt: skip
            events = [
                {"position": r.position, "type": r.event.type,
                 **{k: getattr(r.event, k) for k in ("reply_id", "in_reply_to", "message_id")
                    if getattr(r.event, k, None) is not None}}
                for r in records[start:]
                if r.event.type != "reply_delta"
            ]  # fmt: skip
            queued = [
                {"entry": eid, "pending": pending_by_id.get(eid)}
                for eid, fields in stream
                if mid in fields.get("i", "")
            ]
            out.append(
                {
                    **entry,
                    "events_from_the_message_on": events,
                    "work_entries": queued,
                    "dead_letters": [f for _, f in dead if mid in f.get("i", "")],
                    "intents": [m for m, _ in intents if m.startswith(sid)],
                }
            )
    finally:
        await client.aclose()
    return out


def log_lines(log_dir: Path, needles: list[str], limit: int = 60) -> list[str]:
    """Lines of the processes' logs that name any of ``needles`` (a message or session id)."""
    lines: list[str] = []
    for path in sorted(log_dir.glob("*.log")):
        with path.open(errors="replace") as log:
            for line in log:
                if any(n in line for n in needles):
                    lines.append(f"{path.stem}: {line.rstrip()[:400]}")
    return lines[-limit:]


# --- the run ------------------------------------------------------------------------------------


def run(plan: FaultPlan, *, log_dir: Path) -> dict[str, Any]:
    rand = random.Random(plan.seed)
    model = Model(plan.tokens, plan.delay)
    started_wall = time.time()
    load0 = loadavg()
    with (
        stack.chatcore_redis(
            log_dir,
            model,
            apis=2,
            workers=plan.workers,
            concurrency=256,
            extra_env=fault_env(plan),
            name="faults",
            cluster=plan.cluster,
            durable=plan.cluster,
        ) as dep,
        Processes() as procs,
    ):
        clients = stack.start_clients(
            dep,
            procs,
            sessions=plan.sessions,
            clients=plan.clients,
            mode="faults",
            model=model,
            think=plan.think,
            turn_timeout=120.0,
            report_replies=True,
        )
        setup = stack.connect_clients(clients, timeout=300)
        faults = Faults(dep, plan, rand)
        t0 = time.time()
        end = t0 + plan.duration
        for c in clients:
            c.send({"window": [t0, end], "stop_sending": end, "drain": plan.drain})
        faults.started = time.monotonic()
        rss_start = _rss(dep)
        samples: list[tuple[float, str, int, int | None]] = []
        next_sample = 0.0
        api_restart_at = plan.duration / 2
        master_kill_at = (
            plan.duration * plan.kill_master_at if plan.kill_master_at is not None else None
        )
        next_kill = rand.uniform(*plan.kill_every)
        restarted_api = False
        while time.time() < end:
            elapsed = time.monotonic() - faults.started
            quiet = elapsed > plan.duration - plan.quiet_end
            if master_kill_at is not None and elapsed >= master_kill_at:
                faults.kill_master()
                master_kill_at = None
            if not quiet and elapsed >= next_kill:
                faults.kill_worker()
                next_kill = elapsed + rand.uniform(*plan.kill_every)
            if not quiet and not restarted_api and elapsed >= api_restart_at:
                faults.restart_api()
                restarted_api = True
            faults.due()
            if elapsed >= next_sample:
                samples += [(round(elapsed, 1), n, pid, kib) for n, (pid, kib) in _rss(dep).items()]
                next_sample = elapsed + 5.0
            time.sleep(0.1)
        faults.finish()
        results = [c.expect("result", plan.drain + 120)["result"] for c in clients]
        rss_end = _rss(dep)
        reports = [r for res in results for r in res.pop("session_reports")]
        url, shards = dep.redis_server.url, 3 if plan.cluster else 1
        sids = [r["session_id"] for r in reports]
        logs = asyncio.run(read_logs(url, sids, cluster=plan.cluster))
        missing = unanswered(logs, reports)
        histories = (
            asyncio.run(message_histories(url, logs, missing, cluster=plan.cluster, shards=shards))
            if missing
            else []
        )
    recovery = failover_recovery(logs, faults) if plan.kill_master_at is not None else None
    for history in histories:
        history["process_logs"] = log_lines(
            log_dir, [history["message_id"], history.get("client_message_id", "-")]
        )
    merged = stack.merge(results)
    merged.pop("latency", None)
    merged.pop("latency_batching", None)
    merged.pop("latency_delivery", None)
    from_logs = check_logs(logs, reports, plan.tokens)
    client_bad = {
        "cursor_violations": merged["cursor_violations"],
        "duplicate_terminals": merged["duplicate_terminals"],
        "missing_terminals": merged["missing_terminals"],
        "bad_replies": merged["bad_replies"],
        "turn_timeouts": merged["turn_timeouts"],
        "snapshots_on_resume": merged["snapshots_on_resume"],
        "connect_failures": merged["connect_failures"],
    }
    bad = {k: v for k, v in from_logs.items() if k.endswith("_bad") and v}
    bad.update({k: v for k, v in client_bad.items() if v})
    kills = sum(1 for e in faults.events if e["what"] == "SIGKILL" and "worker" in e["process"])
    steady = steady_memory(samples, api_restart_at + STEADY_SETTLE)
    growing = [f"{w['process']} pid {w['pid']}" for w in steady if not w["flat"]]
    if growing:
        bad["memory_growing"] = growing
    ok = not bad and from_logs.get("acked", 0) > 0 and kills >= 1 and restarted_api
    if plan.kill_master_at is not None and not (recovery and recovery.get("served_again_s")):
        ok = False
        bad["failover"] = "the dead master's slots were never written to again"
    return {
        "ok": ok,
        "problems": bad,
        "plan": asdict(plan),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
        "wall_seconds": round(time.time() - started_wall, 1),
        "loadavg_start": load0,
        "loadavg_end": loadavg(),
        "setup": setup,
        "worker_kills": kills,
        "api_restarts": int(restarted_api),
        "faults": faults.events,
        "from_logs": from_logs,
        "from_clients": merged,
        "unanswered": histories,
        "failover": recovery,
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
        "rss_lifetimes": lifetimes(samples),
        "rss_steady": steady,
    }


def failover_recovery(logs: dict[str, list[Any]], faults: Faults) -> dict[str, Any]:
    """How long the sessions whose slots the killed master served went without a write: from
    the kill to the first event appended to any of them afterwards (stream ids are the
    master's clock in ms), and to the first terminal reply there."""
    from redis.crc import key_slot

    from chatcore_adapters.redis import KeySpace

    keys = KeySpace()
    killed_ms = faults.master_killed_at * 1000

    def hit(sid: str) -> bool:
        slot = key_slot(keys.events(sid).encode())
        return any(lo <= slot <= hi for lo, hi in faults.dead_slots)

    after = [
        (int(r.position.split("-")[0]), r.event.type)
        for sid, records in logs.items()
        if hit(sid)
        for r in records
        if int(r.position.split("-")[0]) > killed_ms
    ]
    first = min((ms for ms, _ in after), default=None)
    first_terminal = min((ms for ms, kind in after if kind in TERMINAL), default=None)
    return {
        "sessions_on_the_dead_master": sum(1 for sid in logs if hit(sid)),
        "promoted_after_s": round(faults.promoted_at - faults.master_killed_at, 1)
        if faults.promoted_at
        else None,
        "served_again_s": round((first - killed_ms) / 1000, 1) if first else None,
        "first_terminal_s": round((first_terminal - killed_ms) / 1000, 1)
        if first_terminal
        else None,
    }


def lifetimes(samples: list[tuple[float, str, int, int | None]]) -> list[dict[str, Any]]:
    """Per process (name and pid): RSS at its first and last sample, its peak, and how long
    it was watched; a process that lived through the whole run shows whether memory is flat."""
    seen: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for at, name, pid, kib in samples:
        if kib is not None:
            seen.setdefault((name, pid), []).append((at, kib))
    out = []
    for (name, pid), points in seen.items():
        out.append(
            {
                "process": name,
                "pid": pid,
                "from_s": points[0][0],
                "to_s": points[-1][0],
                "rss_kib_first": points[0][1],
                "rss_kib_last": points[-1][1],
                "rss_kib_peak": max(k for _, k in points),
                "timeline": points,
            }
        )
    return out


# After the API restart, the surviving process holds every client for the rest of the run;
# from this long after it, connection counts are constant and RSS should be too.
STEADY_SETTLE = 30.0
# "Flat": RSS over the steady window grows by less than this fraction.
# A process judged must be this old when the window starts (its warm-up is not a leak).
STEADY_MIN_AGE = 60.0


def steady_memory(
    samples: list[tuple[float, str, int, int | None]], start: float
) -> list[dict[str, Any]]:
    """Per process that lived through the whole steady window (``start`` to the last sample)
    and was at least STEADY_MIN_AGE seconds old when it began:
    its RSS at the window's first and last sample, the peak, the growth per minute, and
    whether that is flat (grew by less than FLAT_TOLERANCE)."""
    if not samples:
        return []
    end = max(at for at, *_ in samples)
    out = []
    for life in lifetimes(samples):
        points = [(at, kib) for at, kib in life["timeline"] if at >= start]
        if life["from_s"] > start - STEADY_MIN_AGE or life["to_s"] < end - 5.0 or len(points) < 2:
            continue  # too young at the window's start, or died in it
        out.append({"process": life["process"], "pid": life["pid"], **rss_growth(points)})
    return out


def _rss(dep: Deployment) -> dict[str, tuple[int, int | None]]:
    """Name -> (pid, VmRSS in KiB) of the API and worker processes."""
    return {p.name: (p.pid, rss_kib(p.pid)) for p in dep.procs.procs if p.running}


def render(result: dict[str, Any]) -> str:
    logs, clients = result["from_logs"], result["from_clients"]
    plan = result["plan"]
    lines = [
        f"load test with faults: {plan['sessions']} sessions, {plan['duration']:.0f} s, "
        f"{plan['workers']} workers, 2 API processes ({result['wall_seconds']} s wall, "
        f"load {result['loadavg_start'][0]} -> {result['loadavg_end'][0]})",
        f"  faults: {result['worker_kills']} worker SIGKILLs (each restarted), "
        f"{result['api_restarts']} API SIGKILL + restart; "
        f"{clients['reconnects']} client reconnects, {clients['resent']} messages re-sent",
        f"  messages acknowledged {logs.get('acked', 0)}, in the logs "
        f"{logs.get('messages_in_logs', 0)}; terminal events: completed "
        f"{logs.get('log_reply_completed', 0)}, failed {logs.get('log_reply_failed', 0)}, "
        f"cancelled {logs.get('log_reply_cancelled', 0)}; "
        f"attempts taken over {logs.get('takeovers_in_logs', 0)}",
        f"  replies compared client vs log: {logs.get('replies_compared', 0)}",
    ]
    failover = result.get("failover")
    if failover:
        lines.append(
            f"  Cluster master SIGKILLed: {failover['sessions_on_the_dead_master']} sessions on "
            f"its slots; replica promoted after {failover['promoted_after_s']} s; its slots "
            f"written again after {failover['served_again_s']} s, first terminal reply there "
            f"after {failover['first_terminal_s']} s"
        )
    checks = [
        ("messages without a terminal event (log)", logs.get("messages_without_terminal_bad")),
        ("messages with several terminals (log)", logs.get("messages_with_several_terminals_bad")),
        ("acknowledged but not in the log", logs.get("acked_but_not_in_log_bad")),
        ("incomplete completed replies (log)", logs.get("incomplete_replies_in_log_bad")),
        ("client text differs from the log", logs.get("client_text_differs_from_log_bad")),
        ("cursor not increasing (dup/reorder)", clients["cursor_violations"]),
        ("duplicate terminal events (client)", clients["duplicate_terminals"]),
        ("acked without terminal (client)", clients["missing_terminals"]),
        ("gaps in replies (client)", clients["bad_replies"]),
        ("turns timed out (client)", clients["turn_timeouts"]),
    ]  # fmt: skip
    lines += [f"  {name:<42}{n or 0:>6}" for name, n in checks]
    watched = 0.6 * plan["duration"]
    lines.append(
        f"  RSS (KiB), first -> last sample (peak), processes watched {watched:.0f} s or more:"
    )
    for life in result["rss_lifetimes"]:
        if life["to_s"] - life["from_s"] >= watched:
            lines.append(
                f"    {life['process']:<8} pid {life['pid']:<7} {life['from_s']:>5.0f}-"
                f"{life['to_s']:<4.0f}s {_n(life['rss_kib_first']):>9} -> "
                f"{_n(life['rss_kib_last'])} (peak {_n(life['rss_kib_peak'])})"
            )
    steady = result.get("rss_steady") or []
    if steady:
        lines.append(
            f"  RSS (KiB) with a constant connection count (from {STEADY_SETTLE:.0f} s after the "
            f"API restart to the end; processes {STEADY_MIN_AGE:.0f} s old or more), "
            f"flat = grew < {100 * FLAT_TOLERANCE:.0f}%:"
        )
        for w in steady:
            lines.append(
                f"    {w['process']:<8} pid {w['pid']:<7} {w['from_s']:>5.0f}-{w['to_s']:<4.0f}s "
                f"{_n(w['rss_kib_first']):>9} -> {_n(w['rss_kib_last'])} "
                f"(peak {_n(w['rss_kib_peak'])}, {w['kib_per_min']:+,.0f} KiB/min, "
                f"{100 * w['growth']:+.1f}%) {'flat' if w['flat'] else 'GROWING'}"
            )
    for history in result.get("unanswered", []):
        lines.append(
            f"  UNANSWERED {history['session_id']} / {history['message_id']} "
            f"({history['client_message_id']}, seen in {history['seen']}):"
        )
        for event in history["events_from_the_message_on"]:
            lines.append(f"    event {event}")
        lines.append(f"    work entries {history['work_entries']}")
        lines.append(f"    dead letters {history['dead_letters']}; intents {history['intents']}")
        for line in history.get("process_logs", []):
            lines.append(f"    {line}")
    lines.append("  result: " + ("OK" if result["ok"] else f"FAILED {result['problems']}"))
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def summary_line(n: int, result: dict[str, Any]) -> str:
    logs, clients = result["from_logs"], result["from_clients"]
    return (
        f"run {n}: {'OK' if result['ok'] else 'FAILED'} - acknowledged {logs.get('acked', 0)}, "
        f"worker kills {result['worker_kills']}, API restarts {result['api_restarts']}, "
        f"takeovers {logs.get('takeovers_in_logs', 0)}, reconnects {clients['reconnects']}, "
        f"load {result['loadavg_start'][0]} -> {result['loadavg_end'][0]}, "
        f"{result['wall_seconds']} s" + ("" if result["ok"] else f" {result['problems']}")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the CI size: 50 sessions, 50 s")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="on a 3-master Redis Cluster with a replica each (durable writes), a master "
        "SIGKILLed mid-run besides the worker and API kills",
    )
    parser.add_argument("--sessions", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--think", help="pause between a session's turns: min,max seconds")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the plan N times (seed, seed+1, ...)"
    )
    parser.add_argument(
        "--busy", type=int, default=0, help="N CPU-bound processes beside the stack"
    )
    parser.add_argument("--json", type=Path, help="where to write the result")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.busy < 0:
        parser.error("--repeat must be at least 1 and --busy at least 0")
    plan = SHORT if args.short else FULL
    if args.cluster:
        plan = (
            SHORT_CLUSTER
            if args.short
            else FaultPlan(**{**asdict(FULL), "cluster": True, "kill_master_at": 0.3})
        )
    if args.sessions is not None:
        plan = FaultPlan(**{**asdict(plan), "sessions": args.sessions})
    if args.duration is not None:
        plan = FaultPlan(**{**asdict(plan), "duration": args.duration})
    if args.think is not None:
        lo, hi = (float(x) for x in args.think.split(","))
        plan = FaultPlan(**{**asdict(plan), "think": (lo, hi)})
    raise_nofile()
    runs: list[dict[str, Any]] = []
    with terminate_as_interrupt(), busy_processes(args.busy) as busy:
        if busy:
            print(f"[faults] {len(busy)} CPU-bound processes beside the stack", flush=True)
        for n in range(1, args.repeat + 1):
            run_plan = FaultPlan(**{**asdict(plan), "seed": plan.seed + n - 1})
            log_dir = Path(tempfile.mkdtemp(prefix="chatcore-faults-"))
            print(f"[faults] run {n} of {args.repeat}; logs in {log_dir}", flush=True)
            result = run(run_plan, log_dir=log_dir)
            result["logs"] = str(log_dir)
            result["busy"] = args.busy
            runs.append(result)
            print(render(result), flush=True)
            if args.repeat > 1:
                print(summary_line(n, result), flush=True)
    out = args.json or RESULTS / (
        ("faults-cluster" if args.cluster else "faults")
        + ("-short" if args.short else "")
        + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.repeat == 1:
        out.write_text(json.dumps(runs[0], indent=1) + "\n")
    else:
        passed = sum(1 for r in runs if r["ok"])
        report = {
            "repeat": args.repeat,
            "busy": args.busy,
            "passed": passed,
            "acknowledged": sum(r["from_logs"].get("acked", 0) for r in runs),
            "worker_kills": sum(r["worker_kills"] for r in runs),
            "api_restarts": sum(r["api_restarts"] for r in runs),
            "takeovers": sum(r["from_logs"].get("takeovers_in_logs", 0) for r in runs),
            "runs": runs,
        }
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(
            f"fault runs: {passed} of {args.repeat} passed, {args.busy} busy processes; "
            f"{report['acknowledged']} messages acknowledged, {report['worker_kills']} worker "
            f"SIGKILLs, {report['api_restarts']} API SIGKILLs, {report['takeovers']} takeovers"
        )
        for n, result in enumerate(runs, 1):
            print("  " + summary_line(n, result))
    print(f"wrote {out}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
