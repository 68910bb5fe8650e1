"""The event log on Redis Streams: one stream per session, ``chat:{<session_id>}``.

Each entry holds one event, encoded by :mod:`chatcore_adapters.codec`, in the field ``e``;
its stream id is the event's position. An append is one Lua script: compare the stream's
last id with the expected version, then ``XADD`` every event, so a batch is all-or-nothing
and two writers at the same version cannot both succeed (I3).

The first entry of a batch also carries ``n``, a random token of that append call. When a
connection drops after Redis ran the script but before the reply arrived, redis-py sends the
same script again; the script then finds its own token right after the expected version and
answers with the ids it already wrote instead of a conflict, so a retried append is applied
exactly once.

With a retention time, every append (in the same script) sets the stream's expiry to that time
from now: a session nobody writes to for that long is deleted by Redis itself.

Erasing a conversation's events rewrites the stream: ``XDEL`` only flags an entry inside its
node, whose bytes stay in memory and in every RDB snapshot taken afterwards. The erase script
copies the entries it keeps, with their ids, to a scratch key of the same slot, renames it over
the stream, moves the stream's last id back to where it was (``XSETID``, so the tombstone's
id still comes after every id a client has seen) and appends the tombstone, all in one step.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from chatcore.errors import ConcurrencyConflict, CorruptRecord, InvalidIdentifier
from chatcore.events import Event, Recorded
from chatcore.ids import parse_position
from chatcore.ports import AppendListener
from chatcore_adapters.codec import decode_records, encode_event
from chatcore_adapters.redis.append_batch import AppendBatcher
from chatcore_adapters.redis.connection import RedisConnection
from chatcore_adapters.redis.live import RedisLiveSubscription

log = logging.getLogger(__name__)

# KEYS[1] the stream. ARGV[1] the expected last id ('' for an empty stream), ARGV[2] the
# append's token, ARGV[3] the live channel, ARGV[4] the retention in ms ('0': none), ARGV[5..]
# the encoded events. Returns {1, id...} or {0, actual last id}. A successful append is
# published on the channel (live.py reads it).
_APPEND = """
local key = KEYS[1]
local expected = ARGV[1]
local token = ARGV[2]
local n = #ARGV - 4
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
local actual = ''
if #last > 0 then actual = last[1][1] end
if actual ~= expected then
  local start = '-'
  if expected ~= '' then start = '(' .. expected end
  local written = redis.call('XRANGE', key, start, '+', 'COUNT', n)
  if #written == n then
    local fields = written[1][2]
    if fields[3] == 'n' and fields[4] == token then
      local out = {1}
      for i = 1, n do out[i + 1] = written[i][1] end
      return out
    end
  end
  return {0, actual}
end
local out = {1}
local push = {expected}
for i = 1, n do
  local id
  if i == 1 then
    id = redis.call('XADD', key, '*', 'e', ARGV[5], 'n', token)
  else
    id = redis.call('XADD', key, '*', 'e', ARGV[i + 4])
  end
  out[i + 1] = id
  push[2 * i] = id
  push[2 * i + 1] = ARGV[i + 4]
end
if ARGV[4] ~= '0' then redis.call('PEXPIRE', key, ARGV[4]) end
redis.call('PUBLISH', ARGV[3], table.concat(push, '\\n'))
return out
"""

# KEYS[1] the stream, KEYS[2] a scratch key in its slot. ARGV[1] the expected last id, ARGV[2]
# the call's token, ARGV[3] the live channel, ARGV[4] the retention in ms ('0': none), ARGV[5]
# the number k of ids to erase, ARGV[6..5+k] those ids, then the encoded tombstone events.
# Returns {1, id...}, {0, actual last id}, or {-1} when nothing would be left.
_ERASE = """
local key, scratch = KEYS[1], KEYS[2]
local expected, token = ARGV[1], ARGV[2]
local k = tonumber(ARGV[5])
local first = 6 + k
local n = #ARGV - first + 1
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
local actual = ''
if #last > 0 then actual = last[1][1] end
if actual ~= expected then
  if expected ~= '' then
    local written = redis.call('XRANGE', key, '(' .. expected, '+', 'COUNT', n)
    if #written == n then
      local fields = written[1][2]
      if fields[3] == 'n' and fields[4] == token then
        local out = {1}
        for i = 1, n do out[i + 1] = written[i][1] end
        return out
      end
    end
  end
  return {0, actual}
end
local gone = {}
for i = 6, 5 + k do gone[ARGV[i]] = true end
redis.call('DEL', scratch)
local kept = 0
local start = '-'
while true do
  local page = redis.call('XRANGE', key, start, '+', 'COUNT', 500)
  for _, entry in ipairs(page) do
    if not gone[entry[1]] then
      redis.call('XADD', scratch, entry[1], unpack(entry[2]))
      kept = kept + 1
    end
  end
  if #page < 500 then break end
  start = '(' .. page[#page][1]
end
if kept == 0 then return {-1} end
redis.call('RENAME', scratch, key)
redis.call('XSETID', key, expected)
local out = {1}
local push = {expected}
for i = 1, n do
  local id
  if i == 1 then
    id = redis.call('XADD', key, '*', 'e', ARGV[first], 'n', token)
  else
    id = redis.call('XADD', key, '*', 'e', ARGV[first + i - 1])
  end
  out[i + 1] = id
  push[2 * i] = id
  push[2 * i + 1] = ARGV[first + i - 1]
end
if ARGV[4] ~= '0' then redis.call('PEXPIRE', key, ARGV[4]) end
redis.call('PUBLISH', ARGV[3], table.concat(push, '\\n'))
return out
"""

# KEYS[1] the stream. ARGV[1] the live channel, ARGV[2] the encoded farewell ('' for none).
# The farewell is added (for an id after every other), published, and deleted with the rest.
# Returns 1, or 0 when there was no stream.
_DELETE = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return 0 end
if ARGV[2] ~= '' then
  local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[2])
  redis.call('PUBLISH', ARGV[1], last[1][1] .. '\\n' .. id .. '\\n' .. ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
"""

_FIELD = b"e"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(entries: Iterable[Any]) -> list[Recorded]:
    pairs: list[tuple[str, bytes]] = []
    for entry_id, fields in entries:
        raw = fields.get(_FIELD) if fields else None
        if raw is None:
            raise CorruptRecord(f"stream entry {_text(entry_id)} has no event")
        pairs.append((_text(entry_id), raw))
    return decode_records(pairs)


def _valid_position(value: str) -> bool:
    try:
        parse_position(value)
    except InvalidIdentifier:
        return False
    return True


class RedisEventStore:
    """The :class:`chatcore.ports.EventStore` on Redis (single node or Cluster)."""

    def __init__(
        self,
        conn: RedisConnection,
        *,
        page_size: int = 1000,
        retention: float | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if retention is not None and retention <= 0:
            raise ValueError("retention must be positive")
        self.conn = conn
        self.page_size = page_size
        self.retention = retention
        self._ttl_ms = str(max(1, int(retention * 1000))) if retention is not None else "0"
        self._keys = conn.keys
        self._append_script = conn.client.register_script(_APPEND)
        self._erase_script = conn.client.register_script(_ERASE)
        self._delete_script = conn.client.register_script(_DELETE)
        # An append's retry token only has to differ from every other append's: a random
        # base per store and a counter (no system call per append).
        self._token_base = secrets.token_hex(6) + "."
        self._tokens = itertools.count()
        # Single node: appends that queue up behind others share a round trip (group commit).
        # (A Cluster pipeline would split them by node anyway; there each goes on its own.)
        self._batcher = None if conn.cluster else AppendBatcher(conn, self._append_script)

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        key = self._keys.events(session_id)
        if not events:
            raise ValueError("nothing to append")
        if expected_version is not None and not _valid_position(expected_version):
            # Not a position of any log, so never the last one of this log.
            raise ConcurrencyConflict(
                session_id, expected_version, await self.last_position(session_id)
            )
        args: list[bytes | str] = [
            expected_version or "",
            self._token(),
            self._keys.live(session_id),
            self._ttl_ms,
        ]
        args += map(encode_event, events)
        async with self.conn.guard("append"):
            if self._batcher is None:
                reply = await self._append_script(keys=[key], args=args)
            else:
                reply = await self._batcher.call(key, args)
        if reply[0] != 1:
            actual = _text(reply[1]) or None
            raise ConcurrencyConflict(session_id, expected_version, actual)
        return [
            Recorded(position=_text(entry_id), event=event)
            for entry_id, event in zip(reply[1:], events, strict=True)
        ]

    def _token(self) -> str:
        return f"{self._token_base}{next(self._tokens)}"

    async def erase(
        self,
        session_id: str,
        positions: Sequence[str],
        *,
        tombstone: Sequence[Event],
        expected_version: str,
    ) -> list[Recorded]:
        key = self._keys.events(session_id)
        if not tombstone:
            raise ValueError("an erase appends at least one event")
        gone = [p for p in positions if _valid_position(p)]
        if not _valid_position(expected_version):
            raise ConcurrencyConflict(
                session_id, expected_version, await self.last_position(session_id)
            )
        args: list[bytes | str] = [
            expected_version,
            self._token(),
            self._keys.live(session_id),
            self._ttl_ms,
            str(len(gone)),
            *gone,
            *map(encode_event, tombstone),
        ]
        async with self.conn.guard("erase"):
            reply = await self._erase_script(keys=[key, self._keys.rewrite(session_id)], args=args)
        if reply[0] == -1:
            raise ValueError("erasing every event of a log is refused; delete the session")
        if reply[0] != 1:
            raise ConcurrencyConflict(session_id, expected_version, _text(reply[1]) or None)
        return [
            Recorded(position=_text(entry_id), event=event)
            for entry_id, event in zip(reply[1:], tombstone, strict=True)
        ]

    async def delete_session(self, session_id: str, *, farewell: Event | None = None) -> bool:
        key = self._keys.events(session_id)
        args: list[bytes | str] = [
            self._keys.live(session_id),
            encode_event(farewell) if farewell is not None else b"",
        ]
        async with self.conn.guard("delete session"):
            deleted = await self._delete_script(keys=[key], args=args)
        return bool(deleted)

    def subscribe(self, listener: AppendListener) -> RedisLiveSubscription:
        return RedisLiveSubscription(self.conn, listener)

    async def read(
        self, session_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[Recorded]:
        key = self._keys.events(session_id)
        if after is not None:
            parse_position(after)
        if limit is not None and limit <= 0:
            return []
        start = "-" if after is None else f"({after}"
        out: list[Recorded] = []
        async with self.conn.guard("read"):
            while True:
                want = self.page_size if limit is None else min(self.page_size, limit - len(out))
                page: Any = await self.conn.client.xrange(key, start, "+", count=want)
                if page:
                    out.extend(_decode(page))
                if len(page) < want or (limit is not None and len(out) >= limit):
                    return out
                start = f"({_text(page[-1][0])}"

    async def last_position(self, session_id: str) -> str | None:
        key = self._keys.events(session_id)
        async with self.conn.guard("last_position"):
            newest: Any = await self.conn.client.xrevrange(key, "+", "-", count=1)
        return _text(newest[0][0]) if newest else None
