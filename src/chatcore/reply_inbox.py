"""What the model has said and the reply has not written yet: the batching between a model's
stream and the appends of its text (one append per batch, not per token)."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass

from chatcore.ports import TextDelta

# Put after the model's last chunk.
END = object()


@dataclass(slots=True)
class ModelFailure:
    error: BaseException


class ReplyInbox:
    """What the model has said and the consumer has not written yet.

    Text accumulates in ``text`` (``chars`` long); anything else (the end, a failure, a model
    switch, usage) goes to ``ordered`` behind the text that came before it, sealed into one
    string, so the consumer handles everything in the model's order. ``wake`` is set when the
    consumer may have something new to do: a non-text item, the first text after a write, or
    enough text for a full batch; never once per token.

    ``spaced`` says that the text waiting is one delta, from a model whose deltas come on
    average at least ``spacing`` seconds apart (a moving average, so one token that jitter
    brings early does not count as a burst): the model streams slowly, and batching would only
    delay it.
    """

    __slots__ = ("avg_gap", "chars", "last_text_at", "ordered", "spaced", "text", "wake")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.chars = 0
        self.ordered: deque[object] = deque()
        self.wake = asyncio.Event()
        self.last_text_at = -math.inf
        self.avg_gap = math.inf
        self.spaced = False

    def put(
        self, chunk: object, max_chars: int = 2048, *, now: float = 0.0, spacing: float = 0.0
    ) -> None:
        if isinstance(chunk, TextDelta):
            if chunk.text:
                if self.last_text_at != -math.inf:  # (the first delta has no gap)
                    gap = min(now - self.last_text_at, 1.0)  # a long pause counts as one second
                    self.avg_gap = (
                        gap if self.avg_gap == math.inf else 0.75 * self.avg_gap + gap / 4
                    )
                self.last_text_at = now
                if not self.chars:
                    self.wake.set()
                    self.spaced = self.avg_gap >= spacing
                else:
                    self.spaced = False
                self.text.append(chunk.text)
                self.chars += len(chunk.text)
                if self.chars >= max_chars:
                    self.wake.set()
            return
        if self.chars:
            self.ordered.append(self.take_text())
        self.ordered.append(chunk)
        self.wake.set()

    def take_text(self) -> str:
        text = "".join(self.text)
        self.text.clear()
        self.chars = 0
        self.spaced = False
        return text

    def take_all_text(self) -> str:
        """Every text not written yet, sealed or not (the reply is ending early)."""
        parts = [item for item in self.ordered if isinstance(item, str)]
        self.ordered.clear()
        parts.append(self.take_text())
        return "".join(parts)
