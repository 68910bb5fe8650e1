"""Leases on Redis: one key per lease, holding its owner, expiring by itself.

Every operation is a single atomic step (a ``SET NX PX`` or a small compare-and-set script),
so two workers can never both believe they hold the same lease. The calls go through the
connection's batcher: a busy worker's takes and releases share round trips. Keys come from
:meth:`KeySpace.lease`: the core's ``reply:<sid>:<msg>`` lands in the session's slot.
"""

from __future__ import annotations

from chatcore_adapters.redis.connection import RedisConnection

# KEYS[1] lease, ARGV[1] owner, ARGV[2] ttl ms. Returns nil when taken, else the holder.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
"""

# KEYS[1] lease, ARGV[1] expected owner, ARGV[2] new owner, ARGV[3] ttl ms. Returns 1 or 0.
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] lease, ARGV[1] owner. Deletes the lease only if ARGV[1] holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ttl_ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


class RedisLeases:
    """The :class:`chatcore.ports.Leases` on Redis."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self._keys = conn.keys
        self._acquire = conn.client.register_script(_ACQUIRE)
        self._replace = conn.client.register_script(_REPLACE)
        self._release = conn.client.register_script(_RELEASE)

    async def acquire(self, key: str, owner: str, ttl: float) -> str | None:
        lease = self._keys.lease(key)
        async with self.conn.guard("lease acquire"):
            holder = await self.conn.batch.script(self._acquire, [lease], [owner, _ttl_ms(ttl)])
        if holder is None:
            return None
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    async def replace(self, key: str, expected_owner: str, owner: str, ttl: float) -> bool:
        lease = self._keys.lease(key)
        async with self.conn.guard("lease replace"):
            done = await self.conn.batch.script(
                self._replace, [lease], [expected_owner, owner, _ttl_ms(ttl)]
            )
        return bool(done)

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        return await self.replace(key, owner, owner, ttl)

    async def release(self, key: str, owner: str) -> None:
        lease = self._keys.lease(key)
        async with self.conn.guard("lease release"):
            await self.conn.batch.script(self._release, [lease], [owner])
