"""The session cache on Redis: ``session:{<session_id>}`` holds the encoded view.

Entries expire after ``ttl`` seconds without use: a write sets the expiry and a read pushes
it back (``GETEX ... PX``). The cache is disposable (I2): an entry that does not decode reads
as missing, and the caller rebuilds the view from the log.
"""

from __future__ import annotations

from chatcore.ports import CachedView
from chatcore.view import SessionView
from chatcore_adapters.codec import decode_view, encode_view
from chatcore_adapters.redis.connection import RedisConnection


class RedisSessionCache:
    """The :class:`chatcore.ports.SessionCache` on Redis."""

    def __init__(self, conn: RedisConnection, *, ttl: float = 3600.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.conn = conn
        self.ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._keys = conn.keys

    async def get(self, session_id: str) -> CachedView | None:
        key = self._keys.view(session_id)
        async with self.conn.guard("cache get"):
            raw = await self.conn.client.getex(key, px=self._ttl_ms)
        if raw is None:
            return None
        view = decode_view(raw)
        return CachedView(view) if view is not None else None

    async def put(self, session_id: str, view: SessionView) -> None:
        key = self._keys.view(session_id)
        raw = encode_view(view)
        async with self.conn.guard("cache put"):
            await self.conn.client.set(key, raw, px=self._ttl_ms)

    async def delete(self, session_id: str) -> None:
        key = self._keys.view(session_id)
        async with self.conn.guard("cache delete"):
            await self.conn.client.delete(key)
