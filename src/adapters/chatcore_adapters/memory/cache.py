"""The session cache in memory. It keeps the same bytes the Redis cache keeps, so the embedded
mode exercises the codec, and expires entries after an idle time."""

from __future__ import annotations

from chatcore.ids import validate_session_id
from chatcore.ports import CachedView, Clock
from chatcore.view import SessionView
from chatcore_adapters.codec import decode_view, encode_view


class MemorySessionCache:
    def __init__(self, clock: Clock, *, ttl: float = 3600.0, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, tuple[float, bytes]] = {}

    async def get(self, session_id: str) -> CachedView | None:
        validate_session_id(session_id)
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        expires, raw = entry
        if self._clock.monotonic() >= expires:
            del self._entries[session_id]
            return None
        view = decode_view(raw)
        if view is None:
            return None
        self._entries[session_id] = (self._clock.monotonic() + self._ttl, raw)
        return CachedView(view)

    async def put(self, session_id: str, view: SessionView) -> None:
        validate_session_id(session_id)
        self._entries.pop(session_id, None)
        while len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))  # oldest written first
        self._entries[session_id] = (self._clock.monotonic() + self._ttl, encode_view(view))

    async def delete(self, session_id: str) -> None:
        validate_session_id(session_id)
        self._entries.pop(session_id, None)

    def put_raw(self, session_id: str, raw: bytes) -> None:
        """Store arbitrary bytes (tests use it to plant a corrupt entry)."""
        self._entries[session_id] = (self._clock.monotonic() + self._ttl, raw)
