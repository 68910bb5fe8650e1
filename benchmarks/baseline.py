"""The bare-bones pipeline: what the same trip costs with no chatcore code at all.

    python -m benchmarks.baseline server --port P --redis-url URL
    python -m benchmarks.baseline worker --redis-url URL [--mode per-token|batched]

A hand-written loop over the same Redis and the same kind of sockets:

    client --send--> server: XADD chat:<sid> (the message), XADD work (the job), ack
    worker: XREADGROUP work -> XADD chat:<sid> reply_started, the deltas, reply_completed; XACK
    server: ONE XREAD BLOCK over every connected session's stream -> event frames to sockets

It runs on the same event loop as chatcore's processes: uvloop when it is installed, asyncio's
own with ``CHATCORE_EVENT_LOOP=asyncio`` (read here without importing chatcore).

It speaks just enough of the ``/ws`` protocol for :mod:`benchmarks.client` (hello, welcome,
caught_up, send, ack, event frames carrying the stream id as cursor), with none of chatcore's
work: no tokens to sign or check, no optimistic concurrency, no session state folded, no
leases, no schema validation, no resume backlog, no rate limits, no metrics, no logs.

Deltas: ``per-token`` XADDs every token as its own entry; ``batched`` buffers them like
chatcore (one entry per ``--flush`` seconds or 2 KiB, whichever comes first). The tokens come
from the same generator as chatcore's benchmark model (:func:`benchmarks.model.stamped_tokens`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from websockets.asyncio.server import ServerConnection, broadcast, serve

from benchmarks.model import stamped_tokens
from benchmarks.procs import raise_nofile

WORK = "bb:work"
GROUP = "workers"
FLUSH_MAX_CHARS = 2048
CLIENT_NAME = "bb-server"


def chat_key(session_id: str) -> str:
    return f"bb:chat:{session_id}"


def _client(url: str, connections: int, name: str) -> aioredis.Redis:
    """A client whose callers wait for a free connection (as chatcore's do)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=connections, client_name=name
    )
    return aioredis.Redis.from_pool(pool)


def _dumps(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# --- the server ---------------------------------------------------------------------------------


class Server:
    def __init__(self, url: str) -> None:
        self.redis = _client(url, 64, CLIENT_NAME)
        self.feed_redis = _client(url, 2, CLIENT_NAME)
        self.sockets: dict[str, set[ServerConnection]] = {}
        self.cursors: dict[str, str] = {}

    async def handle(self, ws: ServerConnection) -> None:
        hello = orjson.loads(await ws.recv())
        sid: str = hello["token"]
        key = chat_key(sid)
        await ws.send(_dumps({"type": "welcome", "session_id": sid, "resume": "events"}))
        if sid not in self.cursors:
            last: Any = await self.redis.xrevrange(key, count=1)
            self.cursors[sid] = last[0][0].decode() if last else "0-0"
        self.sockets.setdefault(sid, set()).add(ws)
        await ws.send(_dumps({"type": "caught_up", "cursor": None}))
        try:
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame.get("type") == "send":
                    await self.on_send(ws, sid, key, frame)
                elif frame.get("type") == "ping":
                    await ws.send(_dumps({"type": "pong", "nonce": frame.get("nonce")}))
        finally:
            peers = self.sockets.get(sid)
            if peers is not None:
                peers.discard(ws)
                if not peers:
                    del self.sockets[sid]
                    self.cursors.pop(sid, None)

    async def on_send(
        self, ws: ServerConnection, sid: str, key: str, frame: dict[str, Any]
    ) -> None:
        message_id = "msg_" + secrets.token_hex(8)
        event = {
            "type": "message_submitted",
            "message_id": message_id,
            "client_message_id": frame["client_message_id"],
            "text": frame["text"],
        }
        cursor: Any = await self.redis.xadd(key, {"e": orjson.dumps(event)})
        await self.redis.xadd(WORK, {"s": sid, "m": message_id})
        ack = {
            "type": "ack",
            "for_type": "send",
            "request_id": frame.get("request_id"),
            "cursor": cursor.decode(),
            "client_message_id": frame["client_message_id"],
            "message_id": message_id,
        }
        await ws.send(_dumps(ack))

    async def feed(self) -> None:
        """One blocking read for every followed session; each entry goes out as a frame."""
        while True:
            if not self.cursors:
                await asyncio.sleep(0.01)
                continue
            streams: Any = {chat_key(sid): cursor for sid, cursor in self.cursors.items()}
            reply: Any = await self.feed_redis.xread(streams, block=100)
            for key, entries in reply or ():
                sid = key.decode()[len("bb:chat:") :]
                peers = self.sockets.get(sid)
                for entry_id, fields in entries:
                    cursor = entry_id.decode()
                    if sid in self.cursors:
                        self.cursors[sid] = cursor
                    if peers:
                        text = '{"type":"event","cursor":"%s","event":%s}' % (  # noqa: UP031
                            cursor,
                            fields[b"e"].decode(),
                        )
                        broadcast(peers, text)

    async def run(self, port: int) -> None:
        feed = asyncio.create_task(self.feed())
        try:
            async with serve(
                self.handle,
                "127.0.0.1",
                port,
                compression=None,
                max_size=65536,
                ping_interval=20,
                ping_timeout=20,
                backlog=4096,
            ):
                print(f"baseline server on 127.0.0.1:{port}", flush=True)
                await _until_stopped()
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
            await self.redis.aclose()
            await self.feed_redis.aclose()


# --- the worker ---------------------------------------------------------------------------------


class Worker:
    def __init__(
        self, url: str, *, concurrency: int, tokens: int, delay: float, mode: str, flush: float
    ) -> None:
        self.redis = _client(url, 64, "bb-worker")
        self.concurrency = concurrency
        self.tokens = tokens
        self.delay = delay
        self.mode = mode
        self.flush = flush
        self.name = f"w{os.getpid()}"

    async def answer(self, entry_id: bytes, sid: str, message_id: str) -> None:
        key = chat_key(sid)
        reply_id = "rep_" + secrets.token_hex(8)
        started = {"type": "reply_started", "reply_id": reply_id, "in_reply_to": message_id}
        await self.redis.xadd(key, {"e": orjson.dumps(started)})

        async def append(text: str) -> None:
            # "at" (when it was flushed, wall clock) only lets the client split the latency.
            delta = {"type": "reply_delta", "reply_id": reply_id, "text": text, "at": time.time()}
            await self.redis.xadd(key, {"e": orjson.dumps(delta)})

        if self.mode == "per-token":
            async for token in stamped_tokens(self.tokens, self.delay):
                await append(token)
        else:
            await self._batched(append)
        done = {"type": "reply_completed", "reply_id": reply_id, "in_reply_to": message_id}
        await self.redis.xadd(key, {"e": orjson.dumps(done)})
        await self.redis.xack(WORK, GROUP, entry_id)

    async def _batched(self, append: Any) -> None:
        inbox: asyncio.Queue[str | None] = asyncio.Queue()

        async def pump() -> None:
            async for token in stamped_tokens(self.tokens, self.delay):
                inbox.put_nowait(token)
            inbox.put_nowait(None)

        producer = asyncio.create_task(pump())
        buffer: list[str] = []
        size, since = 0, 0.0
        try:
            while True:
                try:
                    token = inbox.get_nowait()
                except asyncio.QueueEmpty:
                    wait = None if not buffer else max(0.0, since + self.flush - time.monotonic())
                    try:
                        token = await asyncio.wait_for(inbox.get(), wait)
                    except TimeoutError:
                        await append("".join(buffer))
                        buffer.clear()
                        size = 0
                        continue
                if token is None:
                    break
                if not buffer:
                    since = time.monotonic()
                buffer.append(token)
                size += len(token)
                if size >= FLUSH_MAX_CHARS or time.monotonic() - since >= self.flush:
                    await append("".join(buffer))
                    buffer.clear()
                    size = 0
            if buffer:
                await append("".join(buffer))
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def run(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.redis.xgroup_create(WORK, GROUP, id="0", mkstream=True)
        stopped = asyncio.create_task(_until_stopped())
        running: set[asyncio.Task[None]] = set()
        print(f"baseline worker {self.name} ({self.mode})", flush=True)
        try:
            while not stopped.done():
                free = self.concurrency - len(running)
                if free <= 0:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                rows: Any = await self.redis.xreadgroup(
                    GROUP, self.name, {WORK: ">"}, count=free, block=500
                )
                for _, entries in rows or ():
                    for entry_id, fields in entries:
                        task = asyncio.create_task(
                            self.answer(entry_id, fields[b"s"].decode(), fields[b"m"].decode())
                        )
                        running.add(task)
                        task.add_done_callback(running.discard)
        finally:
            stopped.cancel()
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, stopped, return_exceptions=True)
            await self.redis.aclose()


def _run(main: Any) -> None:
    """Run ``main`` on uvloop unless ``CHATCORE_EVENT_LOOP=asyncio`` (as chatcore does)."""
    if os.environ.get("CHATCORE_EVENT_LOOP", "auto").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main)
            return
    asyncio.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "worker"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--mode", choices=["per-token", "batched"], default="batched")
    parser.add_argument("--flush", type=float, default=0.015)
    args = parser.parse_args(argv)
    raise_nofile()
    if args.role == "server":
        _run(Server(args.redis_url).run(args.port))
    else:
        worker = Worker(
            args.redis_url,
            concurrency=args.concurrency,
            tokens=int(os.environ.get("BENCH_TOKENS", "200")),
            delay=float(os.environ.get("BENCH_DELAY", "0")),
            mode=args.mode,
            flush=args.flush,
        )
        _run(worker.run())


if __name__ == "__main__":
    main()
