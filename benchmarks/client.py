"""A load client: many sessions speaking the real ``/ws`` protocol over real sockets.

    python -m benchmarks.client --target chatcore --ports 8001 --sessions 50 --mode turns

It runs in a process of its own (the benchmark starts several), so its CPU is not counted
as the server's. The same client drives chatcore and the bare-bones pipeline
(:mod:`benchmarks.baseline` speaks the few frames it uses). It talks to its parent over
stdin/stdout, one JSON object per line:

    client -> {"phase": "ready", ...}          every session connected (hello, caught_up)
    parent -> {"window": [t0, t1], "stop_sending": t2, "drain": s}    (turns, faults)
    parent -> {"stop": true}                                          (idle)
    client -> {"result": {...}}                counts, checks, latency samples

Modes: ``turns`` (each session sends a message, waits for its terminal event, sends the
next), ``idle`` (connect, then hold the sockets open) and ``faults`` (``turns`` with pauses
between messages, reconnecting with the last cursor when the server goes away).

Every turn is also timed from the client's side: from the moment it sends the message to the
``ack`` frame, and to the first text of the reply answering it (time to first token); a turn
counts when that frame arrives within the measurement window.

Every client checks what it receives: cursors strictly increasing across reconnects (no
duplicate, no reordering), every reply made of whole, well-formed tokens with the expected
count, exactly one terminal event per message it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from benchmarks import tokens
from benchmarks.procs import raise_nofile

TERMINAL = frozenset({"reply_completed", "reply_failed", "reply_cancelled"})
MESSAGE_TEXT = "How fast can you stream? Answer with as many tokens as you can."
CONNECT_TIMEOUT = 20.0


def position(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass
class Options:
    target: str
    ports: list[int]
    sessions: int
    mode: str
    tokens: int
    latency: bool
    connect_concurrency: int
    turn_timeout: float
    think: tuple[float, float]
    report_replies: bool
    seed: int


@dataclass
class Counts:
    """What all sessions of this process saw."""

    tokens_window: int = 0
    turns_window: int = 0
    frames: int = 0
    sent: int = 0
    acked: int = 0
    duplicate_acks: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    cursor_violations: int = 0
    duplicate_terminals: int = 0
    bad_replies: int = 0
    turn_timeouts: int = 0
    reconnects: int = 0
    snapshots_on_resume: int = 0
    connect_failures: int = 0
    resent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_us: list[int] = field(default_factory=list)
    batching_us: list[int] = field(default_factory=list)
    delivery_us: list[int] = field(default_factory=list)
    ttft_us: list[int] = field(default_factory=list)
    ack_us: list[int] = field(default_factory=list)
    turn_us: list[int] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)


class Window:
    """The measurement window, in this process's monotonic clock."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")

    def set_from_wall(self, start: float, end: float) -> None:
        offset = time.monotonic() - time.time()
        self.start, self.end = start + offset, end + offset

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


class Session:
    def __init__(self, n: int, opts: Options, counts: Counts, window: Window) -> None:
        self.n = n
        self.opts = opts
        self.counts = counts
        self.window = window
        self.rand = random.Random(opts.seed * 100_003 + n)
        self.session_id = ""
        self.token = ""
        self.conversation_id = "c1"
        self.cursor: str | None = None
        self.last: tuple[int, int] = (-1, -1)
        self.ws: ClientConnection | None = None
        self.caught_up = asyncio.Event()
        self.closed_by_us = False
        self.drafts: dict[str, list[str]] = {}
        self.terminals: Counter[str] = Counter()
        self.replies: dict[str, dict[str, Any]] = {}
        self.message_of: dict[str, str] = {}  # client message id -> message id
        self.acked: dict[str, str] = {}  # client message id -> message id
        self.current: str | None = None
        self.current_done = asyncio.Event()
        # The current message: when it was first sent (monotonic), the reply answering it, and
        # whether its ack and its first token were seen yet.
        self.sent_at = 0.0
        self.current_reply: str | None = None
        self.ack_timed = False
        self.first_token_timed = False
        self.turn_no = 0
        self.broken = False
        self.reader: asyncio.Task[None] | None = None
        self.clock_offset = time.monotonic() - time.time()
        self.connecting = False

    # --- setting up --------------------------------------------------------------------------

    async def create(self, http: httpx.AsyncClient | None) -> None:
        if self.opts.target == "baseline":
            self.session_id = self.token = secrets.token_hex(11)
            return
        assert http is not None
        for _ in range(20):
            try:
                reply = await http.post("/api/sessions", json={})
            except httpx.TransportError:
                # A kept-alive connection the server closed just then (uvicorn closes idle
                # ones after 5 s): a browser would try again too.
                await asyncio.sleep(0.1)
                continue
            if reply.status_code == 429:
                await asyncio.sleep(float(reply.headers.get("retry-after", "0.5")))
                continue
            reply.raise_for_status()
            body = reply.json()
            self.session_id = body["session_id"]
            self.token = body["token"]
            self.conversation_id = body["conversation_id"]
            return
        raise RuntimeError("could not create a session (rate limited)")

    def _url(self) -> str:
        port = self.rand.choice(self.opts.ports)
        return f"ws://127.0.0.1:{port}/ws"

    async def connect(self) -> None:
        """Connect, say hello with the last cursor, wait for caught_up (retrying a while).

        One connection at a time: while this runs, a reader whose socket closes (a refused
        hello, a server going away) leaves the retrying to this loop."""
        self.connecting = True
        try:
            await self._connect()
        finally:
            self.connecting = False

    async def _connect(self) -> None:
        delay = 0.05
        deadline = time.monotonic() + CONNECT_TIMEOUT * 3
        while True:
            try:
                ws = await connect(
                    self._url(),
                    compression=None,
                    max_size=2**22,
                    ping_interval=None,
                    open_timeout=CONNECT_TIMEOUT,
                    close_timeout=2,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    self.counts.connect_failures += 1
                    raise RuntimeError(f"session {self.n}: cannot connect: {exc!r}") from exc
                await asyncio.sleep(delay * (0.5 + self.rand.random()))
                delay = min(delay * 2, 1.0)
                continue
            self.ws = ws
            self.caught_up.clear()
            hello = {"type": "hello", "token": self.token, "last_event_id": self.cursor}
            await ws.send(orjson.dumps(hello).decode())
            self.reader = asyncio.create_task(self._read(ws))
            got = asyncio.create_task(self.caught_up.wait())
            await asyncio.wait(
                {got, self.reader}, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if self.caught_up.is_set() and not self.reader.done():
                got.cancel()
                return
            got.cancel()
            self.ws = None  # abandoned: its reader must not start a reconnect of its own
            with contextlib.suppress(Exception):
                await ws.close()
            if time.monotonic() > deadline:
                self.counts.connect_failures += 1
                raise RuntimeError(f"session {self.n}: no caught_up")
            await asyncio.sleep(delay)

    async def close(self) -> None:
        self.closed_by_us = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader

    # --- reading -----------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                received = time.monotonic()
                self.counts.frames += 1
                self._on_frame(orjson.loads(raw), received)
        except ConnectionClosed:
            pass
        if self.closed_by_us or self.ws is not ws or self.connecting:
            return
        # The server went away (restart, 1001, 1013): resume from the last cursor elsewhere.
        self.counts.reconnects += 1
        asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await self.connect()
        except RuntimeError:
            self.broken = True
            self.current_done.set()
            return
        if self.current is not None and self.current not in self.acked:
            # Not acknowledged before the connection dropped: send it again. The server
            # records a client message id once (it answers with duplicate=true if it had it).
            self.counts.resent += 1
            await self._send_current()

    def _on_frame(self, frame: dict[str, Any], received: float) -> None:
        kind = frame.get("type")
        if kind == "event":
            self._on_event(frame["cursor"], frame["event"], received)
        elif kind == "ack":
            cmid = frame.get("client_message_id")
            if frame.get("for_type") == "send" and cmid is not None:
                if cmid not in self.acked:
                    self.counts.acked += 1
                if cmid == self.current and not self.ack_timed:
                    self.ack_timed = True
                    if received in self.window:
                        self.counts.ack_us.append(round((received - self.sent_at) * 1e6))
                self.acked[cmid] = frame["message_id"]
                self.message_of.setdefault(cmid, frame["message_id"])
                if frame.get("duplicate"):
                    self.counts.duplicate_acks += 1
                self._check_done()
        elif kind == "caught_up":
            if frame.get("cursor") is not None and self.cursor is None:
                self.cursor = frame["cursor"]
                self.last = position(frame["cursor"])
            self.caught_up.set()
        elif kind == "welcome":
            self.token = frame.get("token", self.token)
        elif kind == "snapshot":
            if self.cursor is not None:
                self.counts.snapshots_on_resume += 1
            if frame.get("cursor") is not None:
                self.cursor = frame["cursor"]
                self.last = position(frame["cursor"])
        elif kind == "error":
            self._on_error(frame)

    def _on_error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        self.counts.errors[code] += 1
        if frame.get("request_id") == self.current and code in {
            "rate_limited",
            "conflict",
            "unavailable",
        }:
            wait = float(frame.get("retry_after") or 0.2)
            asyncio.get_running_loop().call_later(
                wait, lambda: asyncio.ensure_future(self._send_current())
            )

    def _on_event(self, cursor: str, event: dict[str, Any], received: float) -> None:
        at = position(cursor)
        if at <= self.last:
            self.counts.cursor_violations += 1
            if len(self.counts.violations) < 5:
                self.counts.violations.append(
                    {"session": self.session_id, "cursor": cursor, "last": self.cursor,
                     "type": event.get("type")}
                )  # fmt: skip
            return
        self.last, self.cursor = at, cursor
        kind = event.get("type")
        if kind == "reply_delta":
            text: str = event["text"]
            self.drafts.setdefault(event["reply_id"], []).append(text)
            if event["reply_id"] == self.current_reply and not self.first_token_timed:
                self.first_token_timed = True
                if received in self.window:
                    self.counts.ttft_us.append(round((received - self.sent_at) * 1e6))
            if received in self.window:
                self.counts.tokens_window += tokens.count(text)
                if self.opts.latency:
                    self._latencies(text, event.get("at"), received)
        elif kind == "reply_started":
            self.drafts[event["reply_id"]] = []
            current = self.message_of.get(self.current) if self.current is not None else None
            if current is not None and event.get("in_reply_to") == current:
                self.current_reply = event["reply_id"]
        elif kind == "message_submitted":
            self.message_of.setdefault(event["client_message_id"], event["message_id"])
        elif kind in TERMINAL:
            self._on_terminal(kind, event, received)

    def _latencies(self, text: str, at: str | float | None, received: float) -> None:
        """Per token: stamp -> receive; and split at the event's ``at`` (when the worker
        flushed it): stamp -> flush (batching in the worker) and flush -> receive (append,
        feed, fan-out, socket). ``at`` is wall-clock time, turned into monotonic time with the
        offset between the two clocks of this machine."""
        received_us = int(received * 1_000_000)
        whole = tokens.latencies_us(text, received_us)
        self.counts.latencies_us.extend(whole)
        if at is None:
            return
        wall = at if isinstance(at, float) else datetime.fromisoformat(at).timestamp()
        flushed_us = int((wall + self.clock_offset) * 1_000_000)
        delivery = max(0, received_us - flushed_us)
        self.counts.delivery_us.extend([delivery] * len(whole))
        self.counts.batching_us.extend(max(0, w - delivery) for w in whole)

    def _on_terminal(self, kind: str, event: dict[str, Any], received: float) -> None:
        message_id: str = event["in_reply_to"]
        self.terminals[message_id] += 1
        if self.terminals[message_id] > 1:
            self.counts.duplicate_terminals += 1
            return
        reply_id = event.get("reply_id")
        if kind == "reply_completed":
            self.counts.completed += 1
            text = "".join(self.drafts.get(reply_id or "", ()))
            if not tokens.well_formed(text) or tokens.count(text) != self.opts.tokens:
                self.counts.bad_replies += 1
        elif kind == "reply_failed":
            self.counts.failed += 1
            text = event.get("partial_text", "")
        else:
            self.counts.cancelled += 1
            text = event.get("partial_text", "")
        if received in self.window:
            self.counts.turns_window += 1
            if message_id == self.message_of.get(self.current or ""):
                self.counts.turn_us.append(round((received - self.sent_at) * 1e6))
        if self.opts.report_replies:
            self.replies[message_id] = {"status": kind, "reply_id": reply_id, "text": digest(text)}
        self.drafts.pop(reply_id or "", None)
        self._check_done()

    def _check_done(self) -> None:
        cmid = self.current
        if cmid is None:
            return
        message_id = self.acked.get(cmid)
        if message_id is not None and self.terminals[message_id] >= 1:
            self.current_done.set()

    # --- sending -----------------------------------------------------------------------------

    async def _send_current(self) -> None:
        cmid, ws = self.current, self.ws
        if cmid is None or ws is None or cmid in self.acked:
            return
        frame = {
            "type": "send",
            "request_id": cmid,
            "conversation_id": self.conversation_id,
            "client_message_id": cmid,
            "text": MESSAGE_TEXT,
        }
        with contextlib.suppress(ConnectionClosed):
            await ws.send(orjson.dumps(frame).decode())

    async def turns(self, stop_sending: float) -> None:
        """Send, wait for the terminal event, repeat until ``stop_sending`` (monotonic)."""
        think_lo, think_hi = self.opts.think
        while time.monotonic() < stop_sending and not self.broken:
            self.turn_no += 1
            self.current = f"m{self.n}-{self.turn_no}-{secrets.token_hex(3)}"
            self.current_done.clear()
            self.current_reply = None
            self.ack_timed = self.first_token_timed = False
            self.counts.sent += 1
            # Time to first token and to the ack count from here, the first send of the
            # message (a message sent again after a refusal or a reconnect keeps this time).
            self.sent_at = time.monotonic()
            await self._send_current()
            try:
                await asyncio.wait_for(self.current_done.wait(), self.opts.turn_timeout)
            except TimeoutError:
                self.counts.turn_timeouts += 1
                return
            if think_hi > 0:
                pause = self.rand.uniform(think_lo, think_hi)
                await asyncio.sleep(min(pause, max(0.0, stop_sending - time.monotonic())))

    def summary(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "acked": {cmid: mid for cmid, mid in self.acked.items()},
            "terminals": dict(self.terminals),
            "replies": self.replies,
            "cursor": self.cursor,
        }


# --- the process --------------------------------------------------------------------------------


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_command() -> dict[str, Any]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        return {"stop": True}
    parsed: dict[str, Any] = json.loads(line)
    return parsed


async def run(opts: Options) -> dict[str, Any]:
    counts = Counts()
    window = Window()
    sessions = [Session(n, opts, counts, window) for n in range(opts.sessions)]
    gate = asyncio.Semaphore(opts.connect_concurrency)
    http = (
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{opts.ports[0]}",
            timeout=30,
            limits=httpx.Limits(max_connections=opts.connect_concurrency),
        )
        if opts.target == "chatcore"
        else None
    )
    started = time.monotonic()

    async def create_one(s: Session) -> None:
        async with gate:
            await s.create(http)

    async def connect_one(s: Session) -> None:
        async with gate:
            await s.connect()

    try:
        created = await asyncio.gather(*(create_one(s) for s in sessions), return_exceptions=True)
    finally:
        if http is not None:
            await http.aclose()
    failures = [r for r in created if isinstance(r, BaseException)]
    emit(
        {
            "phase": "created",
            "created": len(sessions) - len(failures),
            "first_error": repr(failures[0]) if failures else None,
            "seconds": round(time.monotonic() - started, 2),
        }
    )
    command = await read_command()
    started = time.monotonic()
    usable = [s for s, r in zip(sessions, created, strict=True) if r is None]
    results = await asyncio.gather(*(connect_one(s) for s in usable), return_exceptions=True)
    failures += [r for r in results if isinstance(r, BaseException)]
    alive = [s for s, r in zip(usable, results, strict=True) if r is None]
    emit(
        {
            "phase": "ready",
            "connected": len(alive),
            "failed": len(failures),
            "first_error": repr(failures[0]) if failures else None,
            "seconds": round(time.monotonic() - started, 2),
        }
    )
    command = await read_command()
    if opts.mode != "idle" and not command.get("stop"):
        window.set_from_wall(*command["window"])
        offset = time.monotonic() - time.time()
        stop_sending = float(command["stop_sending"]) + offset
        loops = [asyncio.create_task(s.turns(stop_sending)) for s in alive]
        # Turns started before stop_sending finish; bounded by the drain time.
        await asyncio.wait(loops, timeout=stop_sending - time.monotonic() + command["drain"])
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    open_now = sum(1 for s in sessions if s.ws is not None and s.ws.state.name == "OPEN")
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    out: dict[str, Any] = {
        "sessions": len(sessions),
        "open_at_end": open_now,
        "tokens_window": counts.tokens_window,
        "turns_window": counts.turns_window,
        "frames": counts.frames,
        "sent": counts.sent,
        "acked": counts.acked,
        "duplicate_acks": counts.duplicate_acks,
        "completed": counts.completed,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "cursor_violations": counts.cursor_violations,
        "duplicate_terminals": counts.duplicate_terminals,
        "missing_terminals": sum(
            1 for s in sessions for mid in s.acked.values() if s.terminals[mid] == 0
        ),
        "bad_replies": counts.bad_replies,
        "turn_timeouts": counts.turn_timeouts,
        "reconnects": counts.reconnects,
        "resent": counts.resent,
        "snapshots_on_resume": counts.snapshots_on_resume,
        "connect_failures": len(failures),
        "errors": dict(counts.errors),
        "violations": counts.violations,
        "latencies_us": counts.latencies_us,
        "batching_us": counts.batching_us,
        "delivery_us": counts.delivery_us,
        "ttft_us": counts.ttft_us,
        "ack_us": counts.ack_us,
        "turn_us": counts.turn_us,
    }
    if opts.report_replies:
        out["session_reports"] = [s.summary() for s in sessions if s.session_id]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["chatcore", "baseline"], required=True)
    parser.add_argument("--ports", required=True, help="comma-separated ports of the servers")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--mode", choices=["turns", "idle", "faults"], default="turns")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply expected")
    parser.add_argument("--latency", action="store_true", help="record per-token latencies")
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument("--turn-timeout", type=float, default=60.0)
    parser.add_argument("--think", default="0,0", help="pause between turns: min,max seconds")
    parser.add_argument("--report-replies", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    lo, hi = (float(x) for x in args.think.split(","))
    opts = Options(
        target=args.target,
        ports=[int(p) for p in args.ports.split(",")],
        sessions=args.sessions,
        mode=args.mode,
        tokens=args.tokens,
        latency=args.latency,
        connect_concurrency=args.connect_concurrency,
        turn_timeout=args.turn_timeout,
        think=(lo, hi),
        report_replies=args.report_replies,
        seed=args.seed,
    )
    raise_nofile()
    emit({"result": asyncio.run(run(opts))})


if __name__ == "__main__":
    main()
