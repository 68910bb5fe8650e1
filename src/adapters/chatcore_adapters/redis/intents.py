"""The intent journal on Redis: a sorted set beside the work queue (beside each of its shards),
``{chatcore:work}:intents``, of ``<session_id>:<client_message_id>`` scored by the Redis
server's clock in milliseconds (one clock for every process, so "older than" means the same
thing to every sweeper). A session's intents sit in its work shard's slot."""

from __future__ import annotations

from chatcore.ids import validate_session_id
from chatcore_adapters.redis.connection import RedisConnection
from chatcore_adapters.redis.queue import shard_index

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
        self,
        conn: RedisConnection,
        *,
        queue: str = "chatcore:work",
        shards: int = 1,
        stale_limit: int = 1000,
    ) -> None:
        self.conn = conn
        self.keys = [keys.intents for keys in conn.keys.queue_shards(queue, shards)]
        self.stale_limit = stale_limit
        self._record = conn.client.register_script(_RECORD)
        self._stale = conn.client.register_script(_STALE)

    def _key(self, session_id: str) -> str:
        return self.keys[shard_index(validate_session_id(session_id), len(self.keys))]

    async def record(self, session_id: str, client_message_id: str) -> None:
        key = self._key(session_id)
        async with self.conn.guard("record intent"):
            await self._record(keys=[key], args=[f"{session_id}:{client_message_id}"])

    async def clear(self, session_id: str, client_message_id: str) -> None:
        key = self._key(session_id)
        async with self.conn.guard("clear intent"):
            await self.conn.client.zrem(key, f"{session_id}:{client_message_id}")

    async def stale(self, older_than: float) -> list[tuple[str, str]]:
        age_ms = max(0, int(older_than * 1000))
        out: list[tuple[str, str]] = []
        for key in self.keys:
            async with self.conn.guard("stale intents"):
                members = await self._stale(keys=[key], args=[age_ms, self.stale_limit])
            for member in members or ():
                session_id, _, client_message_id = _text(member).partition(":")
                out.append((session_id, client_message_id))
        return out
