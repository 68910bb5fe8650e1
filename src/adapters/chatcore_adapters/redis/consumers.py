"""Keeping the work queue's consumer group tidy.

Every worker process joins the group under a name of its own (``<host>-<pid>-<random>``), so
each restart leaves a consumer behind. A consumer with no pending entries holds nothing and can
go: a worker that stops gracefully removes itself, and workers remove consumers idle for a long
time (crashed processes whose work others have taken over). One with pending entries is never
removed (``XGROUP DELCONSUMER`` would drop them); its entries are reclaimed first.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from chatcore_adapters.redis.queue import RedisWorkQueue

# KEYS[1] stream. ARGV[1] group, ARGV[2] minimum idle ms, ARGV[3] one consumer's name or ''.
# Removes the consumers without pending entries idle at least ARGV[2] ms; returns how many.
_FORGET = """
local removed = 0
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2])
     and (ARGV[3] == '' or info['name'] == ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""


class ConsumerJanitor:
    def __init__(self, queue: RedisWorkQueue) -> None:
        self.queue = queue
        self._forget = queue.conn.client.register_script(_FORGET)

    async def _run(self, idle: float, only: str) -> int:
        """Consumers removed, over every stream (shard) of the queue."""
        args: list[str | int] = [self.queue.group, max(0, int(idle * 1000)), only]
        removed = 0
        for stream in self.queue.streams:
            async with self.queue.conn.guard("forget consumers"):
                try:
                    removed += int(await self._forget(keys=[stream.keys.stream], args=args))
                except ResponseError as exc:
                    # No stream or no group yet (the error may come wrapped by the script).
                    if "NOGROUP" in str(exc) or "no such key" in str(exc).lower():
                        continue
                    raise
        return removed

    async def forget(self, consumer: str) -> bool:
        """Remove ``consumer`` from every shard where it holds no pending entries (a worker
        leaving for good); ``True`` if it was removed from at least one."""
        if not consumer:
            return False
        return await self._run(0.0, consumer) >= 1

    async def forget_idle(self, idle: float) -> int:
        """Remove every consumer idle for ``idle`` seconds that holds no pending entries."""
        return await self._run(idle, "")
