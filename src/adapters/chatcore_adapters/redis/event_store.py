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
# append's token, ARGV[3] the live channel, ARGV[4..] the encoded events. Returns {1, id...}
# or {0, actual last id}. A successful append is published on the channel (live.py reads it;
# PUBLISH_COMMAND is PUBLISH on a single server, SPUBLISH on a Cluster).
_APPEND = """
local key = KEYS[1]
local expected = ARGV[1]
local token = ARGV[2]
local n = #ARGV - 3
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
    id = redis.call('XADD', key, '*', 'e', ARGV[4], 'n', token)
  else
    id = redis.call('XADD', key, '*', 'e', ARGV[i + 3])
  end
  out[i + 1] = id
  push[2 * i] = id
  push[2 * i + 1] = ARGV[i + 3]
end
redis.call('PUBLISH_COMMAND', ARGV[3], table.concat(push, '\\n'))
return out
"""

_PUBLISH_LINE = "redis.call('PUBLISH_COMMAND', ARGV[3], table.concat(push, '\\n'))\n"
assert _PUBLISH_LINE in _APPEND

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
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.conn = conn
        self.page_size = page_size
        self._keys = conn.keys
        # A Cluster's push goes to the shard of the session's slot only (SPUBLISH), not to
        # every node (PUBLISH is broadcast across a Cluster).
        self._publish_command = "SPUBLISH" if conn.cluster else "PUBLISH"
        self._durable = conn.settings.wait_replicas > 0
        script = _APPEND.replace("PUBLISH_COMMAND", self._publish_command)
        if self._durable:
            # Published only once replicated, by the batcher (see append_batch.py).
            script = script.replace(_PUBLISH_LINE.replace("PUBLISH_COMMAND", "SPUBLISH"), "")
            script = script.replace(_PUBLISH_LINE.replace("PUBLISH_COMMAND", "PUBLISH"), "")
        self._append_script = conn.client.register_script(script)
        # An append's retry token only has to differ from every other append's: a random
        # base per store and a counter (no system call per append).
        self._token_base = secrets.token_hex(6) + "."
        self._tokens = itertools.count()
        # Appends that queue up behind others share a round trip (group commit); on a Cluster
        # a batch is split by node and each node's share goes out as one pipeline.
        self._batcher = AppendBatcher(
            conn, self._append_script, publish=self._publish if self._durable else None
        )

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
            f"{self._token_base}{next(self._tokens)}",
            self._keys.live(session_id),
        ]
        args += map(encode_event, events)
        async with self.conn.guard("append"):
            reply = await self._batcher.call(key, args)
        if reply[0] != 1:
            actual = _text(reply[1]) or None
            raise ConcurrencyConflict(session_id, expected_version, actual)
        return [
            Recorded(position=_text(entry_id), event=event)
            for entry_id, event in zip(reply[1:], events, strict=True)
        ]

    async def _publish(self, done: list[tuple[list[bytes | str], Any]]) -> None:
        """Durable mode: the pushes of appends that were replicated, as the script would have
        sent them (the previous last id, then each entry's id and event, one per line)."""
        pipe = self.conn.client.pipeline(transaction=False)
        for args, reply in done:
            lines: list[bytes] = [_bytes(args[0])]
            for entry_id, encoded in zip(reply[1:], args[3:], strict=True):
                lines += [_bytes(entry_id), _bytes(encoded)]
            pipe.execute_command(self._publish_command, args[2], b"\n".join(lines))
        await pipe.execute(raise_on_error=False)

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
