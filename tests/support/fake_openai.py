"""A real OpenAI-compatible chat server on 127.0.0.1, scriptable per request, for tests.

It speaks plain HTTP/1.1 over asyncio streams (one request per connection) and answers
``POST /v1/chat/completions`` with ``stream: true`` as server-sent events sent with chunked
transfer encoding, so a dropped connection is visible to the client as a truncated body.

Each request takes the next scripted :class:`Stream` or :class:`Fail`; when the script is
empty it gets the server's default (``Stream()``: the :func:`echo_answer` of the request).
Like a well-behaved model, the echo answer honours a continuation request: when the last
non-system message is an assistant message (the text said so far), it answers only what
comes after that text.

Everything the server sees is kept in :attr:`FakeOpenAI.requests`, including whether the
client went away before the response was complete (:attr:`SeenRequest.disconnected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

CHAT_PATH = "/v1/chat/completions"


def echo_answer(messages: list[dict[str, Any]]) -> str:
    """The deterministic answer of the default stream: it quotes the last user message."""
    last_user = next(
        (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    return (
        f'You asked: "{last_user}". Here is a deterministic answer from the fake server, '
        "streamed in small pieces so that clients can be tested end to end."
    )


def split_tokens(text: str) -> list[str]:
    """Word-ish pieces: each word with the spaces that follow it."""
    return re.findall(r"\S+\s*|\s+", text)


def continuation_prefix(messages: list[dict[str, Any]]) -> str | None:
    """The text said so far when the request asks to continue it, else ``None``."""
    for message in reversed(messages):
        role = message.get("role")
        if role == "system":
            continue
        if role == "assistant":
            return str(message.get("content", ""))
        return None
    return None


@dataclass(frozen=True)
class Stream:
    """A streamed answer.

    ``tokens=None`` streams the echo answer (continuing after the text said so far when
    asked to). ``usage`` is sent in a final chunk when the client asked for it
    (``stream_options.include_usage``): ``"auto"`` counts it, a pair gives
    ``(prompt_tokens, completion_tokens)``, ``None`` never sends one.
    ``drop_after=k`` aborts the connection after ``k`` tokens; ``error_after=k`` sends an
    error event after ``k`` tokens and ends the response.
    """

    tokens: tuple[str, ...] | None = None
    usage: Literal["auto"] | tuple[int, int] | None = "auto"
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    drop_after: int | None = None
    error_after: int | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Fail:
    """An HTTP error response with an OpenAI-style JSON error body."""

    status: int
    message: str = "scripted failure"
    error_type: str = "server_error"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


Scenario = Stream | Fail


@dataclass
class SeenRequest:
    """One request as the server saw it, and what became of its response."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    scenario: Scenario | None = None
    tokens_sent: int = 0
    completed: asyncio.Event = field(default_factory=asyncio.Event)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages", [])
        return messages if isinstance(messages, list) else []


class FakeOpenAI:
    """The server. Use ``async with FakeOpenAI() as server`` and ``server.base_url``."""

    def __init__(self, default: Stream | None = None) -> None:
        self.default = default if default is not None else Stream()
        self._server: asyncio.Server | None = None
        self._script: deque[Scenario] = deque()
        self._handlers: set[asyncio.Task[None]] = set()
        self._request_seen = asyncio.Condition()
        self.requests: list[SeenRequest] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *scenarios: Scenario) -> None:
        """Queue what the next requests get, in order."""
        self._script.extend(scenarios)

    async def wait_for_request(self, index: int, *, within: float = 10.0) -> SeenRequest:
        """The ``index``-th request (from 0), waiting at most ``within`` seconds for it."""
        async with asyncio.timeout(within), self._request_seen:
            await self._request_seen.wait_for(lambda: len(self.requests) > index)
        return self.requests[index]

    async def __aenter__(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        await self._server.wait_closed()

    # --- connection handling -------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # A handler ends quietly when the client leaves or the server shuts down.
            pass
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw = await reader.readexactly(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        seen = SeenRequest(method, path, headers, body if isinstance(body, dict) else {})
        async with self._request_seen:
            self.requests.append(seen)
            self._request_seen.notify_all()

        if method != "POST" or path.rstrip("/") != CHAT_PATH:
            await self._send_error(writer, seen, Fail(404, "no such route", "not_found"))
            return
        scenario: Scenario = self._script.popleft() if self._script else self.default
        seen.scenario = scenario
        if isinstance(scenario, Fail):
            await self._send_error(writer, seen, scenario)
        elif seen.body.get("stream") is not True:
            await self._send_error(writer, seen, Fail(400, "this server only streams", "invalid"))
        else:
            await self._send_stream(reader, writer, seen, scenario)

    async def _send_error(
        self, writer: asyncio.StreamWriter, seen: SeenRequest, fail: Fail
    ) -> None:
        if fail.delay:
            await asyncio.sleep(fail.delay)
        body = json.dumps(
            {"error": {"message": fail.message, "type": fail.error_type, "code": fail.status}}
        ).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in fail.headers)
        writer.write(
            (
                f"HTTP/1.1 {fail.status} Scripted\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"{extra}"
                "Connection: close\r\n\r\n"
            ).encode()
            + body
        )
        seen.completed.set()
        await writer.drain()

    async def _send_stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        seen: SeenRequest,
        plan: Stream,
    ) -> None:
        watcher = asyncio.create_task(self._watch_disconnect(reader, seen))
        try:
            await self._stream_events(writer, seen, plan)
        except ConnectionError:
            seen.disconnected.set()
        finally:
            if not seen.disconnected.is_set():
                # Give the watcher a moment to notice a close racing the last write.
                await asyncio.sleep(0)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_disconnect(self, reader: asyncio.StreamReader, seen: SeenRequest) -> None:
        # The client sends nothing more after its request: EOF or a reset means it left.
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass
        if not seen.completed.is_set():
            seen.disconnected.set()

    async def _stream_events(
        self, writer: asyncio.StreamWriter, seen: SeenRequest, plan: Stream
    ) -> None:
        model = str(seen.body.get("model", "fake-model"))
        if plan.tokens is not None:
            tokens = list(plan.tokens)
        else:
            answer = echo_answer(seen.messages)
            prefix = continuation_prefix(seen.messages)
            if prefix is not None and answer.startswith(prefix):
                answer = answer[len(prefix) :]
            tokens = split_tokens(answer)

        writer.write(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        if plan.first_token_delay:
            await asyncio.sleep(plan.first_token_delay)

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        for index, token in enumerate(tokens):
            if index == plan.drop_after:
                writer.transport.abort()
                return
            if index == plan.error_after:
                await self._send_event(
                    writer, {"error": {"message": "scripted mid-stream failure", "code": 500}}
                )
                await self._end_body(writer, seen)
                return
            if index and plan.token_delay:
                await asyncio.sleep(plan.token_delay)
            delta: dict[str, Any] = {"content": token}
            if index == 0:
                delta["role"] = "assistant"
            await self._send_event(writer, chunk(delta, None))
            seen.tokens_sent += 1
        if plan.drop_after is not None and plan.drop_after >= len(tokens):
            writer.transport.abort()
            return

        await self._send_event(writer, chunk({}, plan.finish_reason))
        options = seen.body.get("stream_options") or {}
        if plan.usage is not None and isinstance(options, dict) and options.get("include_usage"):
            if plan.usage == "auto":
                prompt_chars = sum(len(str(m.get("content", ""))) for m in seen.messages)
                prompt, completion = max(1, prompt_chars // 4), len(tokens)
            else:
                prompt, completion = plan.usage
            usage_chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
            await self._send_event(writer, usage_chunk)
        await self._send_raw(writer, b"data: [DONE]\n\n")
        await self._end_body(writer, seen)

    async def _send_event(self, writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
        await self._send_raw(writer, b"data: " + json.dumps(payload).encode() + b"\n\n")

    async def _send_raw(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _end_body(self, writer: asyncio.StreamWriter, seen: SeenRequest) -> None:
        # Marked complete before the last bytes go out: a client closing right after reading
        # them has not left early.
        seen.completed.set()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
