"""The benchmark model: N stamped tokens per reply, as fast as it can or at a given pace.

chatcore's workers load it with ``CHATCORE_WORKER__LLM_FACTORY=benchmarks.model:from_env``
(``chatcore worker`` and the in-process worker of ``chatcore serve`` both honour that setting);
the bare-bones pipeline uses :func:`stamped_tokens` directly. Its knobs come from the
environment, so every process of a run streams the same replies:

* ``BENCH_TOKENS``: tokens per reply (default 200);
* ``BENCH_DELAY``: seconds between two tokens of one reply (default 0: as fast as it can; it
  still yields to the event loop between tokens, as a model read from a socket would).

Tokens are defined in :mod:`benchmarks.tokens` (8 characters, each stamped with the time it
was generated). Paced replies follow a schedule (token i at ``start + i * delay``), so the
offered rate does not sag by the time the consumer takes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

from benchmarks import tokens
from chatcore.events import Usage
from chatcore.ports import CompletionRequest, LLMChunk, TextDelta, UsageReport

NAME = "bench (stamped tokens)"


async def stamped_tokens(count: int, delay: float, *, skip: int = 0) -> AsyncIterator[str]:
    """Tokens ``skip`` to ``count - 1`` of a reply, each stamped when it is produced."""
    start = time.monotonic()
    for n in range(count - skip):
        if delay > 0:
            wait = start + (n + 1) * delay - time.monotonic()
            await asyncio.sleep(max(0.0, wait))
        else:
            await asyncio.sleep(0)
        yield tokens.stamp()


class BenchLLM:
    """A :class:`chatcore.ports.LLM` streaming ``count`` stamped tokens per reply."""

    def __init__(self, *, count: int = 200, delay: float = 0.0) -> None:
        if count < 1 or delay < 0:
            raise ValueError("count must be positive and delay not negative")
        self.count = count
        self.delay = delay

    @property
    def name(self) -> str:
        return NAME

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        # An attempt taking over from another one goes on after what was already said.
        said = tokens.count(request.continue_from)
        async for token in stamped_tokens(self.count, self.delay, skip=min(said, self.count)):
            yield TextDelta(text=token, model=NAME)
        yield UsageReport(
            usage=Usage(prompt_tokens=1, completion_tokens=self.count * 2, cost_usd=0.0),
            model=NAME,
        )


def from_env() -> BenchLLM:
    return BenchLLM(
        count=int(os.environ.get("BENCH_TOKENS", "200")),
        delay=float(os.environ.get("BENCH_DELAY", "0")),
    )
