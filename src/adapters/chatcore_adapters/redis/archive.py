"""Moving sessions out of and into Redis (see :mod:`chatcore_adapters.archive`).

**Listing** is a ``SCAN`` of the logs' keys (``chat:{<sid>}``, streams only), on a Cluster over
every master. A session is read with one ``XRANGE`` (one atomic command: the log as of one
moment). A ``SCAN`` may name a key twice; the listing says each session once.

**Importing** a session keeps every position: its events are added with ``XADD`` and their own
ids to a staging stream in the session's slot (``chat:{<sid>}:import``, pages of
:data:`STAGE_PAGE` per round trip, with an expiry in case the import stops half way), then one
script checks that the log does not exist, renames the staging stream over it (a stream's last
id is that of its newest entry, so the next append's id comes after every imported one), sets
its expiry, deletes the session's cached view, and queues the session's work. Every key of the
script carries the session's hash tag, so it runs on a Cluster too.

The work queue is in another slot. On one server the script queues the work itself (every
key lives on the server), so a session and its work are written together. On a Cluster the
script leaves the work items in ``chat:{<sid>}:import:work``, and the import queues them and
then deletes that key: an import that stops in between finds the key when it is run again,
queues what is left and reports the session as resumed instead of refusing it as existing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from chatcore.errors import StoreUnavailable
from chatcore.ports import WorkItem
from chatcore_adapters.archive import Entry, SessionLog, Written
from chatcore_adapters.redis.event_store import RedisEventStore
from chatcore_adapters.redis.queue import RedisWorkQueue, encode_item

# Events added to a staging stream per round trip.
STAGE_PAGE = 1000
# How long a staging stream left behind by an import that stopped is kept.
STAGE_TTL_MS = 3_600_000
_SCAN_COUNT = 1000

# KEYS[1] the log, KEYS[2] its staging stream, KEYS[3] its cached view, KEYS[4] the work left
# to queue, and on one server KEYS[5] the work queue shard's stream. ARGV[1] the number of
# entries staged, ARGV[2] the log's expiry (Unix ms, '0': none), ARGV[3..] the encoded work
# items. Returns {1} (imported), {0} (the log exists), {2, work} (the log exists and an earlier
# import left this work to queue), {-1} (the staging stream is not what was staged).
_IMPORT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  local left = redis.call('GET', KEYS[4])
  if left then return {2, left} end
  return {0}
end
if redis.call('XLEN', KEYS[2]) ~= tonumber(ARGV[1]) then return {-1} end
redis.call('RENAME', KEYS[2], KEYS[1])
if ARGV[2] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[3])
if #ARGV > 2 then
  if #KEYS > 4 then
    for i = 3, #ARGV do redis.call('XADD', KEYS[5], '*', 'i', ARGV[i]) end
  else
    redis.call('SET', KEYS[4], table.concat(ARGV, '\\n', 3))
    if ARGV[2] ~= '0' then redis.call('PEXPIREAT', KEYS[4], ARGV[2]) end
  end
end
return {1}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisLogArchive:
    """The :class:`~chatcore_adapters.archive.LogSource` and
    :class:`~chatcore_adapters.archive.LogImport` of a :class:`RedisEventStore` and the
    :class:`RedisWorkQueue` of the same deployment."""

    def __init__(self, store: RedisEventStore, queue: RedisWorkQueue) -> None:
        if store.conn is not queue.conn:
            raise ValueError("the store and the queue must share one connection")
        self.store, self.queue, self.conn = store, queue, store.conn
        self._import = self.conn.client.register_script(_IMPORT)

    # --- reading ------------------------------------------------------------------------------

    async def session_ids(self) -> AsyncIterator[str]:
        keys = self.conn.keys
        seen: set[str] = set()
        async for key in self._scan(keys.events_pattern):
            session_id = keys.session_of(_text(key))
            if session_id is not None and session_id not in seen:
                seen.add(session_id)
                yield session_id

    async def _scan(self, pattern: str) -> AsyncIterator[bytes | str]:
        client: Any = self.conn.client
        if not self.conn.cluster:
            cursor = 0
            while True:
                async with self.conn.guard("export scan"):
                    cursor, found = await client.scan(
                        cursor=cursor, match=pattern, count=_SCAN_COUNT, _type="STREAM"
                    )
                for key in found:
                    yield key
                if int(cursor) == 0:
                    return
        await self.conn.initialized()
        for node in client.get_primaries():
            cursor = 0
            while True:
                async with self.conn.guard("export scan"):
                    cursors, found = await client.scan(
                        cursor=cursor,
                        match=pattern,
                        count=_SCAN_COUNT,
                        _type="STREAM",
                        target_nodes=node,
                    )
                for key in found:
                    yield key
                cursor = int(cursors[node.name])
                if cursor == 0:
                    break

    async def read_log(self, session_id: str) -> list[Entry]:
        key = self.conn.keys.events(session_id)
        async with self.conn.guard("export read"):
            entries: Any = await self.conn.client.xrange(key, "-", "+")
        out: list[Entry] = []
        for entry_id, fields in entries:
            raw = fields.get(b"e") if fields else None
            # (an entry without an event is written by nothing; the check of the log names it)
            out.append((_text(entry_id), raw if isinstance(raw, bytes) else b""))
        return out

    # --- writing ------------------------------------------------------------------------------

    async def import_log(
        self, log: SessionLog, *, work: Sequence[WorkItem], expire_at_ms: int | None
    ) -> Written:
        keys = self.conn.keys
        session_id = log.session_id
        staging = keys.import_staging(session_id)
        await self._stage(staging, log.entries)
        script_keys = [
            keys.events(session_id),
            staging,
            keys.view(session_id),
            keys.import_work(session_id),
        ]
        if not self.conn.cluster:
            script_keys.append(self.queue.shard_of(session_id).keys.stream)
        args: list[bytes | str] = [
            str(len(log.entries)),
            "0" if expire_at_ms is None else str(expire_at_ms),
            *map(encode_item, work),
        ]
        async with self.conn.guard("import session"):
            reply = await self.store.run_script(self._import, script_keys, args, "import session")
        if reply[0] == -1:
            raise StoreUnavailable(
                f"the staged log of session {session_id} changed while it was imported "
                "(another import of it at the same time?); nothing was written for it"
            )
        if reply[0] == 0:
            return Written.EXISTS
        if reply[0] == 2:
            left = [WorkItem.model_validate_json(raw) for raw in bytes(reply[1]).split(b"\n")]
            await self._queue(session_id, left)
            return Written.RESUMED
        if self.conn.cluster and work:
            await self._queue(session_id, work)
        return Written.IMPORTED

    async def _stage(self, staging: str, entries: Sequence[Entry]) -> None:
        """Write ``entries`` with their ids to a new staging stream, a page per round trip."""
        for start in range(0, len(entries), STAGE_PAGE):
            pipe: Any = self.conn.client.pipeline(transaction=False)
            if start == 0:
                pipe.execute_command("DEL", staging)
            for position, raw in entries[start : start + STAGE_PAGE]:
                pipe.execute_command("XADD", staging, position, "e", raw)
            pipe.execute_command("PEXPIRE", staging, STAGE_TTL_MS)
            async with self.conn.guard("import stage"):
                await pipe.execute()

    async def _queue(self, session_id: str, work: Sequence[WorkItem]) -> None:
        """Queue the work a Cluster's import script left behind, then forget it."""
        for item in work:
            await self.queue.enqueue(item)
        async with self.conn.guard("import queued"):
            await self.conn.client.delete(self.conn.keys.import_work(session_id))
