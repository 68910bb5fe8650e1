"""Worker heartbeats on Redis: who is alive, what each worker is doing, when it last beat.

Two keys share one hash tag (``{chatcore:workers}`` by default), so they sit in one Cluster slot
and one script updates both atomically:

* ``{chatcore:workers}``: a hash, worker id -> the worker's last :class:`WorkerStatus` (JSON);
* ``{chatcore:workers}:expiry``: a sorted set, worker id -> when its record expires, in
  milliseconds of the Redis server's clock (one clock for every process, whatever their hosts'
  clocks say).

Every beat and every listing first drops the records that expired, so the hash never shows a
dead worker. Both keys themselves expire with the last record, so a deployment whose workers
are all gone leaves nothing behind.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from chatcore.ports import WorkerStatus
from chatcore_adapters.redis.connection import RedisConnection
from chatcore_adapters.redis.keys import KeySpace

log = logging.getLogger(__name__)

# Shared head of every script: the server's clock in ms, and the expired records removed.
# KEYS[1] hash, KEYS[2] expiry zset.
_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[1], id)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
"""

# ARGV[1] worker id, ARGV[2] status JSON, ARGV[3] ttl ms.
_BEAT = (
    _PRUNE
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
"""
)

# The records still alive, oldest expiry first.
_LIST = (
    _PRUNE
    + """
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
"""
)

# ARGV[1] worker id.
_REMOVE = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


def _ttl_ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class RedisHeartbeats:
    """The :class:`chatcore.ports.Heartbeats` on Redis (works on a Cluster too)."""

    def __init__(self, conn: RedisConnection, *, name: str = "chatcore:workers") -> None:
        self.conn = conn
        # A queue's key layout is exactly what a heartbeat set needs: one tagged base key.
        keys = KeySpace(conn.keys.prefix).queue(name)
        self.records = keys.stream
        self.expiry = f"{keys.stream}:expiry"
        client = conn.client
        self._beat = client.register_script(_BEAT)
        self._list = client.register_script(_LIST)
        self._remove = client.register_script(_REMOVE)

    async def beat(self, status: WorkerStatus, *, ttl: float) -> None:
        payload = status.model_dump_json().encode()
        async with self.conn.guard("heartbeat"):
            await self._beat(
                keys=[self.records, self.expiry],
                args=[status.worker_id, payload, _ttl_ms(ttl)],
            )

    async def workers(self) -> list[WorkerStatus]:
        async with self.conn.guard("list workers"):
            rows: Any = await self._list(keys=[self.records, self.expiry])
        out: list[WorkerStatus] = []
        for raw in rows or ():
            if raw is None:
                continue
            try:
                out.append(WorkerStatus.model_validate_json(raw))
            except ValidationError:
                log.warning("skipping an unreadable worker heartbeat")
        return out

    async def remove(self, worker_id: str) -> None:
        async with self.conn.guard("remove heartbeat"):
            await self._remove(keys=[self.records, self.expiry], args=[worker_id])
