"""Continuing a cut-off answer without saying its text twice."""

from __future__ import annotations


class RepeatGuard:
    """Drops the part of a continuation that repeats text already said.

    Asked to continue, models sometimes start over, or repeat the last words before going on.
    The guard holds back the start of the continuation (while it still matches the start of
    the said text, or up to ``window`` characters), then drops a restatement of all the said
    text or an overlap of at least ``min_overlap`` characters with its end.
    """

    def __init__(self, said: str, *, window: int = 160, min_overlap: int = 16) -> None:
        self._said = said
        self._window = window
        self._min_overlap = min_overlap
        self._buffer = ""
        self._open = not said

    def feed(self, text: str) -> str:
        """Text to pass on now (possibly empty) for the next piece of the continuation."""
        if self._open:
            return text
        self._buffer += text
        if self._said.startswith(self._buffer):
            return ""  # so far it restates the said text: wait and see
        if self._buffer.startswith(self._said) or len(self._buffer) >= self._window:
            return self._decide()
        return ""

    def flush(self) -> str:
        """What is still held back, at the end of the continuation."""
        return "" if self._open else self._decide()

    def _decide(self) -> str:
        self._open = True
        buffer, said, self._buffer = self._buffer, self._said, ""
        if buffer.startswith(said):
            out = buffer[len(said) :]
        elif said.startswith(buffer):
            out = ""
        else:
            out = buffer
            for size in range(min(len(buffer), len(said)), self._min_overlap - 1, -1):
                if said.endswith(buffer[:size]):
                    out = buffer[size:]
                    break
        return out.lstrip() if said[-1:].isspace() else out
