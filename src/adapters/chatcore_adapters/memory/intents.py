"""The intent journal in memory (one process: an intent outlives nothing but a failed step)."""

from __future__ import annotations

from chatcore.ids import validate_session_id
from chatcore.ports import Clock


class MemoryIntentJournal:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._intents: dict[tuple[str, str], float] = {}

    async def record(self, session_id: str, client_message_id: str) -> None:
        validate_session_id(session_id)
        self._intents[(session_id, client_message_id)] = self._clock.monotonic()

    async def clear(self, session_id: str, client_message_id: str) -> None:
        self._intents.pop((session_id, client_message_id), None)

    async def stale(self, older_than: float) -> list[tuple[str, str]]:
        now = self._clock.monotonic()
        return [key for key, at in self._intents.items() if now - at >= older_than]
