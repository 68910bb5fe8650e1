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

from redis.exceptions import NoScriptError

from chatcore.errors import ConcurrencyConflict, CorruptRecord, InvalidIdentifier
from chatcore.events import Event, Recorded
from chatcore.ids import parse_position
from chatcore.ports import AppendListener
from chatcore_adapters.codec import decode_records, encode_event
from chatcore_adapters.redis.batching import Batcher
from chatcore_adapters.redis.connection import RedisConnection
from chatcore_adapters.redis.live import RedisLiveSubscription

log = logging.getLogger(__name__)

# KEYS[1] the stream, and KEYS[2] a work queue's stream when the append also queues work
# (RedisIntake; a single server only: the two keys are in different slots). ARGV[1] the
# expected last id ('' for an empty stream), ARGV[2] the append's token, ARGV[3] the live
# channel, ARGV[4] the retention in ms ('0': none), ARGV[5..] the encoded events, then, with
# KEYS[2], the work item. Returns {1, id...} or {0, actual last id}; a call that finds its own
# token already written (a retry) answers with those ids and queues nothing again. A
# successful append is published on the channel (live.py reads it; PUBLISH_COMMAND is PUBLISH
# on a single server, SPUBLISH on a Cluster; with durable writes the store publishes once the
# write is replicated).
_APPEND = """
local key = KEYS[1]
local expected = ARGV[1]
local token = ARGV[2]
local n = #ARGV - 4 - (#KEYS - 1)
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
if #KEYS > 1 then redis.call('XADD', KEYS[2], '*', 'i', ARGV[#ARGV]) end
redis.call('PUBLISH_COMMAND', ARGV[3], table.concat(push, '\\n'))
return out
"""

_PUBLISH_LINE = "redis.call('PUBLISH_COMMAND', ARGV[3], table.concat(push, '\\n'))\n"
assert _PUBLISH_LINE in _APPEND

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
redis.call('PUBLISH_COMMAND', ARGV[3], table.concat(push, '\\n'))
return out
"""

# KEYS[1] the stream. ARGV[1] the live channel, ARGV[2] the encoded farewell ('' for none).
# The farewell is added (for an id after every other), published, and deleted with the rest.
# Returns {1, last id, farewell id} ({1} without a farewell), or {0} when there was no stream.
_DELETE = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return {0} end
local out = {1}
if ARGV[2] ~= '' then
  local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[2])
  redis.call('PUBLISH_COMMAND', ARGV[1], last[1][1] .. '\\n' .. id .. '\\n' .. ARGV[2])
  out = {1, last[1][1], id}
end
redis.call('DEL', KEYS[1])
return out
"""

_FIELD = b"e"


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


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
        # A Cluster's push goes to the shard of the session's slot only (SPUBLISH), not to
        # every node (PUBLISH is broadcast across a Cluster).
        self._publish_command = "SPUBLISH" if conn.cluster else "PUBLISH"
        self._durable = conn.settings.wait_replicas > 0
        self._append_script = self._register(_APPEND)
        self._erase_script = self._register(_ERASE)
        self._delete_script = self._register(_DELETE)
        # An append's retry token only has to differ from every other append's: a random
        # base per store and a counter (no system call per append).
        self._token_base = secrets.token_hex(6) + "."
        self._tokens = itertools.count()
        # Appends that queue up behind others share a round trip (group commit); on a Cluster
        # a batch is split by node and each node's share goes out as one pipeline.
        self._batcher = Batcher(
            conn, durable=True, publish=self._publish if self._durable else None
        )

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_version: str | None
    ) -> list[Recorded]:
        return await self.append_and_queue(session_id, events, expected_version=expected_version)

    async def append_and_queue(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_version: str | None,
        queue: tuple[str, bytes] | None = None,
    ) -> list[Recorded]:
        """:meth:`append`; with ``queue`` (a work queue's stream key and an encoded item),
        the item is added to that stream by the same script (single server only)."""
        key = self._keys.events(session_id)
        if not events:
            raise ValueError("nothing to append")
        if queue is not None and self.conn.cluster:
            raise ValueError("an append cannot queue work on a Redis Cluster (other slots)")
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
        keys = [key]
        if queue is not None:
            keys.append(queue[0])
            args.append(queue[1])
        async with self.conn.guard("append"):
            reply = await self._batcher.script(self._append_script, keys, args)
        if reply[0] != 1:
            actual = _text(reply[1]) or None
            raise ConcurrencyConflict(session_id, expected_version, actual)
        return [
            Recorded(position=_text(entry_id), event=event)
            for entry_id, event in zip(reply[1:], events, strict=True)
        ]

    async def _publish(self, done: list[tuple[Sequence[Any], Any]]) -> None:
        """Durable mode: the pushes of appends that were replicated, as the script would have
        sent them (the previous last id, then each entry's id and event, one per line)."""
        pipe = self.conn.client.pipeline(transaction=False)
        for args, reply in done:
            lines: list[bytes] = [_bytes(args[0])]
            events = args[4 : 4 + len(reply) - 1]  # (a queued work item follows them)
            for entry_id, encoded in zip(reply[1:], events, strict=True):
                lines += [_bytes(entry_id), _bytes(encoded)]
            pipe.execute_command(self._publish_command, args[2], b"\n".join(lines))
        await pipe.execute(raise_on_error=False)

    def _token(self) -> str:
        return f"{self._token_base}{next(self._tokens)}"

    def _register(self, script: str) -> Any:
        """A script with its push sent the deployment's way: SPUBLISH on a Cluster, and with
        durable writes not from the script at all (the store pushes once replicated)."""
        script = script.replace("PUBLISH_COMMAND", self._publish_command)
        if self._durable:
            script = script.replace(_PUBLISH_LINE.replace("PUBLISH_COMMAND", "SPUBLISH"), "")
            script = script.replace(_PUBLISH_LINE.replace("PUBLISH_COMMAND", "PUBLISH"), "")
            farewell = f"  redis.call('{self._publish_command}', ARGV[1], "
            script = "\n".join(line for line in script.split("\n") if not line.startswith(farewell))
        return self.conn.client.register_script(script)

    async def run_script(
        self, script: Any, keys: list[str], args: list[bytes | str], what: str
    ) -> Any:
        """Run a script that rewrites a log (an erase, a deletion, an import); with durable
        writes, followed by a WAIT on the same connection, failing with ``NotReplicated`` when
        too few replicas have it in time."""
        if not self._durable:
            return await script(keys=keys, args=args)
        await self.conn.initialized()
        for attempt in range(2):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            self.conn.add_wait(pipe, keys[0])
            try:
                reply, waited = await pipe.execute(raise_on_error=False)
            except Exception:
                await self.conn.refresh_slots()
                raise
            if isinstance(reply, NoScriptError) and attempt == 0:
                await self.conn.client.script_load(script.script)
                continue
            if isinstance(reply, BaseException):
                await self.conn.refresh_slots()
                raise reply
            if reply[0] == 1:
                problem = self.conn.check_wait(waited, what)
                if problem is not None:
                    raise problem
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _push(self, channel: str, lines: list[bytes]) -> None:
        """Durable mode: publish what a script left unpublished, once replicated."""
        try:
            await self.conn.client.execute_command(
                self._publish_command, channel, b"\n".join(lines)
            )
        except Exception:  # (subscribers find the gap at the next push)
            log.warning("could not publish a replicated rewrite", exc_info=True)

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
            reply = await self.run_script(
                self._erase_script, [key, self._keys.rewrite(session_id)], args, "erase"
            )
        if reply[0] == -1:
            raise ValueError("erasing every event of a log is refused; delete the session")
        if reply[0] != 1:
            raise ConcurrencyConflict(session_id, expected_version, _text(reply[1]) or None)
        if self._durable:
            lines = [_bytes(expected_version)]
            encoded = args[len(args) - len(tombstone) :]
            for entry_id, raw in zip(reply[1:], encoded, strict=True):
                lines += [_bytes(entry_id), _bytes(raw)]
            await self._push(self._keys.live(session_id), lines)
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
            reply = await self.run_script(self._delete_script, [key], args, "delete session")
        if self._durable and len(reply) == 3:
            await self._push(
                self._keys.live(session_id), [_bytes(reply[1]), _bytes(reply[2]), _bytes(args[1])]
            )
        return bool(reply[0] == 1)

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
                page: Any = await self.conn.batch.command(
                    "XRANGE", key, start, "+", "COUNT", want, key=key
                )
                if page:
                    out.extend(_decode(page))
                if len(page) < want or (limit is not None and len(out) >= limit):
                    return out
                start = f"({_text(page[-1][0])}"

    async def last_position(self, session_id: str) -> str | None:
        key = self._keys.events(session_id)
        async with self.conn.guard("last_position"):
            newest: Any = await self.conn.batch.command(
                "XREVRANGE", key, "+", "-", "COUNT", 1, key=key
            )
        return _text(newest[0][0]) if newest else None
