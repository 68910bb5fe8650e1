"""Rate limits on Redis: the GCRA of :mod:`chatcore.gcra` in one Lua script.

Each key's state is one string, its theoretical arrival time (TAT), that expires by itself once
the key's allowance is full again. The script reads the time from the server (``TIME``), so
every API process and worker shares one clock whatever their own say, decides, and writes the
new TAT in the same atomic step: two processes can never both take the last unit. Times in the
script are microseconds since 2023-11-14 (1,700,000,000 s), which keeps them well inside the
precision of a Lua number.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatcore.gcra import Rate, Refused, Step, validate_cost
from chatcore_adapters.redis.connection import RedisConnection

# KEYS[1] the limit's state. ARGV[1] mode: "acquire", "check" or "charge"; ARGV[2] the
# emission interval, ARGV[3] the tolerance (burst x interval), both in microseconds; ARGV[4]
# the cost. Returns the microseconds to wait, as a string ("0": allowed; always "0" for a
# charge). The formula is chatcore.gcra.decide / charged.
_GCRA = """
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - 1700000000) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local stored = redis.call('GET', KEYS[1])
local tat = stored and tonumber(stored) or now
if tat < now then
  tat = now
end
local new_tat = tat + cost * interval
if ARGV[1] ~= 'charge' then
  local wait = new_tat - tolerance - now
  if wait >= 1 then
    return string.format('%.3f', wait)
  end
  if ARGV[1] == 'check' then
    return '0'
  end
end
local ttl = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
return '0'
"""

# KEYS: the states of the steps (one server only: any slots). ARGV: per step four values: mode
# ("acquire" or "check"), interval, tolerance, cost, as in _GCRA. Every step is decided on the
# TATs as they would be after the steps before it; the first that does not fit is answered as
# {index (1-based), microseconds to wait} and nothing is written; else every counting step's
# new TAT is written and {0, "0"} answered.
_ADMIT = """
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - 1700000000) * 1000000 + tonumber(clock[2])
local tats = {}
local writes = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = (i - 1) * 4
  local interval = tonumber(ARGV[base + 2])
  local tolerance = tonumber(ARGV[base + 3])
  local cost = tonumber(ARGV[base + 4])
  local tat = tats[key]
  if tat == nil then
    local stored = redis.call('GET', key)
    tat = stored and tonumber(stored) or now
  end
  if tat < now then
    tat = now
  end
  local new_tat = tat + cost * interval
  local wait = new_tat - tolerance - now
  if wait >= 1 then
    return {i, string.format('%.3f', wait)}
  end
  if ARGV[base + 1] == 'acquire' then
    tats[key] = new_tat
    writes[key] = new_tat
  end
end
for key, tat in pairs(writes) do
  local ttl = math.ceil((tat - now) / 1000) + 1
  redis.call('SET', key, string.format('%.3f', tat), 'PX', ttl)
end
return {0, '0'}
"""

_MICRO = 1_000_000


class RedisRateLimits:
    """The :class:`chatcore.ports.RateLimits` on Redis (single node or Cluster)."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self._keys = conn.keys
        self._gcra = conn.client.register_script(_GCRA)
        self._admit = conn.client.register_script(_ADMIT)

    async def _run(self, mode: str, key: str, rate: Rate, cost: float) -> float:
        state = self._keys.rate(key)
        args: list[str | float] = [mode, rate.interval * _MICRO, rate.tolerance * _MICRO, cost]
        async with self.conn.guard(f"rate limit {mode}"):
            answer = await self.conn.batch.script(self._gcra, [state], args)
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        return float(text) / _MICRO

    async def acquire(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        validate_cost(rate, cost, prepaid=True)
        return await self._run("acquire", key, rate, cost)

    async def check(self, key: str, rate: Rate, cost: float = 1.0) -> float:
        validate_cost(rate, cost, prepaid=True)
        return await self._run("check", key, rate, cost)

    async def charge(self, key: str, rate: Rate, cost: float) -> None:
        validate_cost(rate, cost, prepaid=False)
        await self._run("charge", key, rate, cost)

    async def admit(self, steps: Sequence[Step]) -> Refused | None:
        for step in steps:
            validate_cost(step.rate, step.cost, prepaid=True)
        if self.conn.cluster:
            # The keys are in different slots: one step after the other (see the port).
            for index, step in enumerate(steps):
                mode = "acquire" if step.count else "check"
                wait = await self._run(mode, step.key, step.rate, step.cost)
                if wait:
                    return Refused(index, wait)
            return None
        keys = [self._keys.rate(step.key) for step in steps]
        args: list[str | float] = []
        for step in steps:
            mode = "acquire" if step.count else "check"
            args += [mode, step.rate.interval * _MICRO, step.rate.tolerance * _MICRO, step.cost]
        async with self.conn.guard("rate limit admit"):
            index, wait = await self.conn.batch.script(self._admit, keys, args)
        if int(index) == 0:
            return None
        text = wait.decode() if isinstance(wait, bytes) else str(wait)
        return Refused(int(index) - 1, float(text) / _MICRO)
