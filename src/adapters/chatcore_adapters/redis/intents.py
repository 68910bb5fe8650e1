"""The intent journal on Redis: one sorted set beside the work queue,
``{chatcore:work}:intents``, of ``<session_id>:<client_message_id>`` scored by the Redis
server's clock in milliseconds (one clock for every process, so "older than" means the same
thing to every sweeper)."""

from __future__ import annotations

from chatcore.ids import validate_session_id
from chatcore_adapters.redis.connection import RedisConnection

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] intents. ARGV[1] member. Scored with the server's clock.
_RECORD = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
return 1
"""
)

# KEYS[1] intents. ARGV[1] age ms, ARGV[2] limit. Members at least ARGV[1] ms old.
_STALE = (
    _NOW_MS
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]),
                  'LIMIT', 0, ARGV[2])
"""
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisIntentJournal:
    """The :class:`chatcore.ports.IntentJournal` on Redis."""

    def __init__(
        self, conn: RedisConnection, *, queue: str = "chatcore:work", stale_limit: int = 1000
    ) -> None:
        self.conn = conn
        self.key = conn.keys.queue(queue).intents
        self.stale_limit = stale_limit
        self._record = conn.client.register_script(_RECORD)
        self._stale = conn.client.register_script(_STALE)

    async def record(self, session_id: str, client_message_id: str) -> None:
        member = f"{validate_session_id(session_id)}:{client_message_id}"
        async with self.conn.guard("record intent"):
            await self._record(keys=[self.key], args=[member])

    async def clear(self, session_id: str, client_message_id: str) -> None:
        member = f"{validate_session_id(session_id)}:{client_message_id}"
        async with self.conn.guard("clear intent"):
            await self.conn.client.zrem(self.key, member)

    async def stale(self, older_than: float) -> list[tuple[str, str]]:
        age_ms = max(0, int(older_than * 1000))
        async with self.conn.guard("stale intents"):
            members = await self._stale(keys=[self.key], args=[age_ms, self.stale_limit])
        out: list[tuple[str, str]] = []
        for member in members or ():
            session_id, _, client_message_id = _text(member).partition(":")
            out.append((session_id, client_message_id))
        return out
