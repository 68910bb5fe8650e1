"""The session cache in memory. It keeps the same bytes the Redis cache keeps, so the embedded
mode exercises the codec, and expires entries after an idle time."""

from __future__ import annotations

from chatcore.ids import parse_position, validate_session_id
from chatcore.ports import CachedView, Clock
from chatcore.view import SessionView
from chatcore_adapters.codec import decode_view, encode_view

# An entry: when it expires, the encoded view (None: the session was forgotten), its version.
_Entry = tuple[float, bytes | None, tuple[int, int] | None]


def _version_key(view: SessionView) -> tuple[int, int] | None:
    return parse_position(view.version) if view.version is not None else None


class MemorySessionCache:
    def __init__(self, clock: Clock, *, ttl: float = 3600.0, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, _Entry] = {}

    def _live(self, session_id: str) -> _Entry | None:
        entry = self._entries.get(session_id)
        if entry is not None and self._clock.monotonic() >= entry[0]:
            del self._entries[session_id]
            return None
        return entry

    async def get(self, session_id: str) -> CachedView | None:
        validate_session_id(session_id)
        entry = self._live(session_id)
        if entry is None:
            return None
        _, raw, version = entry
        if raw is None:
            return None  # forgotten
        view = decode_view(raw)
        if view is None:
            return None
        self._entries[session_id] = (self._clock.monotonic() + self._ttl, raw, version)
        return CachedView(view)

    async def put(self, session_id: str, view: SessionView) -> None:
        validate_session_id(session_id)
        version = _version_key(view)
        entry = self._live(session_id)
        if entry is not None:
            if entry[1] is None:
                return  # forgotten: a reader racing the session's deletion
            held = entry[2]
            if held is not None and (version is None or held > version):
                return  # never replaced by an older view
        self._store(session_id, (self._clock.monotonic() + self._ttl, encode_view(view), version))

    def _store(self, session_id: str, entry: _Entry) -> None:
        self._entries.pop(session_id, None)
        while len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))  # oldest written first
        self._entries[session_id] = entry

    async def delete(self, session_id: str) -> None:
        validate_session_id(session_id)
        self._entries.pop(session_id, None)

    async def forget(self, session_id: str) -> None:
        validate_session_id(session_id)
        self._store(session_id, (self._clock.monotonic() + self._ttl, None, None))

    def put_raw(self, session_id: str, raw: bytes) -> None:
        """Store arbitrary bytes (tests use it to plant a corrupt entry)."""
        self._entries[session_id] = (self._clock.monotonic() + self._ttl, raw, None)
