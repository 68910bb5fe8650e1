"""The session cache on Redis: ``session:{<session_id>}`` holds the encoded view.

Entries expire after ``ttl`` seconds without use: a write sets the expiry and a read pushes
it back (``GETEX ... PX``). The cache is disposable (I2): an entry that does not decode reads
as missing, and the caller rebuilds the view from the log.

An entry is ``<version>\\n<encoded view>``: the version in front lets the write script refuse
to replace a newer view with an older one, in one step, so a reader that folded the log before
a conversation was deleted cannot write the deleted text back. A forgotten session's entry is
the marker ``forgotten`` (no view), which no write replaces until it expires.
"""

from __future__ import annotations

from chatcore.ids import parse_position
from chatcore.ports import CachedView
from chatcore.view import SessionView
from chatcore_adapters.codec import decode_view, encode_view
from chatcore_adapters.redis.connection import RedisConnection

_FORGOTTEN = b"forgotten"

# KEYS[1] the entry. ARGV[1] the view's version ('' for none), ARGV[2] the entry, ARGV[3] ttl
# ms. Positions are compared as canonical decimals: the longer number, or the greater string
# of the same length, is the greater (exact at any size). Returns 1 when written.
_PUT = """
local function after(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur == 'forgotten' then return 0 end
  local ms, seq = string.match(cur, '^(%d+)-(%d+)\\n')
  if ms then
    if ARGV[1] == '' then return 0 end
    local ms2, seq2 = string.match(ARGV[1], '^(%d+)-(%d+)$')
    if after(ms, ms2) or (ms == ms2 and after(seq, seq2)) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


def _split(raw: bytes | str) -> bytes | None:
    """The encoded view of an entry (``None`` for the marker, or anything unreadable)."""
    data = raw.encode() if isinstance(raw, str) else raw
    _version, newline, body = data.partition(b"\n")
    return body if newline else None


class RedisSessionCache:
    """The :class:`chatcore.ports.SessionCache` on Redis."""

    def __init__(self, conn: RedisConnection, *, ttl: float = 3600.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.conn = conn
        self.ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._keys = conn.keys
        self._put = conn.client.register_script(_PUT)

    async def get(self, session_id: str) -> CachedView | None:
        key = self._keys.view(session_id)
        async with self.conn.guard("cache get"):
            raw = await self.conn.client.getex(key, px=self._ttl_ms)
        body = _split(raw) if raw is not None else None
        if body is None:
            return None
        view = decode_view(body)
        return CachedView(view) if view is not None else None

    async def put(self, session_id: str, view: SessionView) -> None:
        key = self._keys.view(session_id)
        version = view.version or ""
        if version:
            parse_position(version)  # (nothing but a position reaches the script)
        raw = version.encode() + b"\n" + encode_view(view)
        async with self.conn.guard("cache put"):
            await self._put(keys=[key], args=[version, raw, self._ttl_ms])

    async def delete(self, session_id: str) -> None:
        key = self._keys.view(session_id)
        async with self.conn.guard("cache delete"):
            await self.conn.client.delete(key)

    async def forget(self, session_id: str) -> None:
        key = self._keys.view(session_id)
        async with self.conn.guard("cache forget"):
            await self.conn.client.set(key, _FORGOTTEN, px=self._ttl_ms)
