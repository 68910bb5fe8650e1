"""A language model for tests, implementing the LLM port: it streams a script of chunks, with
optional pauses and a failure at a chosen point, and records whether it was closed early."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from chatcore.errors import LLMError
from chatcore.events import Usage
from chatcore.ports import CompletionRequest, LLMChunk, ModelSwitch, TextDelta, UsageReport


@dataclass
class ScriptedLLM:
    words: Sequence[str] = ("Hello", " there", ", friend", ".")
    delay: float = 0.0
    first_delay: float = 0.0
    fail_after: int | None = None
    error: LLMError = field(default_factory=lambda: LLMError("unavailable", "The model is down."))
    switch_after: int | None = None
    model: str = "scripted"
    requests: list[CompletionRequest] = field(default_factory=list)
    closed_early: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.model

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        self.requests.append(request)
        self.started.set()
        finished = False
        model = self.model
        try:
            if self.first_delay:
                await asyncio.sleep(self.first_delay)
            for n, word in enumerate(self.words):
                if self.fail_after is not None and n == self.fail_after:
                    raise self.error
                if self.switch_after is not None and n == self.switch_after:
                    yield ModelSwitch(model, "fallback", "primary dropped the connection")
                    model = "fallback"
                if self.delay and n:
                    await asyncio.sleep(self.delay)
                yield TextDelta(word, model)
            yield UsageReport(Usage(prompt_tokens=7, completion_tokens=len(self.words)), model)
            finished = True
        finally:
            if not finished:
                self.closed_early += 1
