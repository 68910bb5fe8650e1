"""Where every piece of chatcore state lives in Redis.

All keys of one session share a hash tag (``{<session_id>}``), so in a Redis Cluster they sit
in one slot and a Lua script may touch them together. The work queue's keys share the tag of
the queue's name. An optional prefix (tests use it to isolate themselves on one server) is
put in front of every key, outside the hash tag.

Nothing reaches a key without validation: session ids must pass
:func:`chatcore.ids.validate_session_id`, lease keys, limit keys and names a narrow pattern.
"""

from __future__ import annotations

import re

from redis.crc import key_slot

from chatcore.errors import InvalidIdentifier
from chatcore.gcra import validate_limit_key
from chatcore.ids import validate_session_id

SLOTS = 16384  # the hash slots of a Redis Cluster

# A prefix or queue name: short, and free of '{', '}', spaces and glob characters.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")
# The reply lease key the core builds: ``reply:<session id>:<message id>``.
_REPLY_LEASE = re.compile(r"^reply:([A-Za-z0-9_-]{16,64}):([A-Za-z0-9_.:-]{1,80})$")
# Any other lease key.
_LEASE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _checked_name(kind: str, value: str, *, allow_empty: bool) -> str:
    if _NAME.fullmatch(value) is None or (not value and not allow_empty):
        raise ValueError(f"invalid Redis {kind} {value!r}: use at most 64 of [A-Za-z0-9_.:-]")
    return value


class KeySpace:
    """Builds the keys of one deployment (``prefix`` + the fixed layout)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "") -> None:
        self.prefix = _checked_name("key prefix", prefix, allow_empty=True)

    def events(self, session_id: str) -> str:
        """The session's event log: ``chat:{<session_id>}``."""
        return f"{self.prefix}chat:{{{validate_session_id(session_id)}}}"

    def rewrite(self, session_id: str) -> str:
        """Scratch space for rewriting the session's log (erasing a conversation), in its
        slot: ``chat:{<session_id>}:rewrite``. It exists only inside one script."""
        return f"{self.events(session_id)}:rewrite"

    def import_staging(self, session_id: str) -> str:
        """Where an import (``chatcore import``) builds the session's log before it becomes
        the log, in its slot: ``chat:{<session_id>}:import`` (expires if left behind)."""
        return f"{self.events(session_id)}:import"

    def import_work(self, session_id: str) -> str:
        """On a Cluster, the work an import still has to queue for the session, in its slot:
        ``chat:{<session_id>}:import:work`` (see ``redis/archive.py``)."""
        return f"{self.events(session_id)}:import:work"

    @property
    def events_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every session's log (and nothing else: the keys
        beside a log end after its ``}``)."""
        return f"{self.prefix}chat:{{*}}"

    def session_of(self, key: str) -> str | None:
        """The session whose log ``key`` is, or ``None`` for any other key."""
        head = f"{self.prefix}chat:{{"
        if not (key.startswith(head) and key.endswith("}")):
            return None
        session_id = key[len(head) : -1]
        try:
            return validate_session_id(session_id)
        except InvalidIdentifier:
            return None

    def live(self, session_id: str) -> str:
        """The pub/sub channel of the session's appends: ``live:{<session_id>}``."""
        return f"{self.prefix}live:{{{validate_session_id(session_id)}}}"

    @property
    def live_prefix(self) -> str:
        """What every live channel name starts with (the session id follows, then ``}``)."""
        return f"{self.prefix}live:{{"

    def view(self, session_id: str) -> str:
        """The session's cached view: ``session:{<session_id>}``."""
        return f"{self.prefix}session:{{{validate_session_id(session_id)}}}"

    def lease(self, key: str) -> str:
        """A lease. ``reply:<sid>:<msg>`` becomes ``lease:{<sid>}:<msg>`` (the session's slot);
        any other safe key ``lease:{<key>}``; anything else is refused."""
        match = _REPLY_LEASE.fullmatch(key)
        if match is not None:
            return f"{self.prefix}lease:{{{match.group(1)}}}:reply:{match.group(2)}"
        if _LEASE.fullmatch(key) is None:
            raise InvalidIdentifier("lease key", key)
        return f"{self.prefix}lease:{{{key}}}"

    def rate(self, key: str) -> str:
        """A rate limit's state: ``rate:{<key>}`` (its own slot; the key is validated)."""
        return f"{self.prefix}rate:{{{validate_limit_key(key)}}}"

    def queue(self, name: str) -> QueueKeys:
        return QueueKeys(self.prefix, _checked_name("queue name", name, allow_empty=False))

    def queue_shards(self, name: str, shards: int) -> list[QueueKeys]:
        """The keys of a queue of ``shards`` streams. One shard is the plain queue
        (``{<name>}``); with more, shard ``n``'s tag is ``<name>:<n>`` followed by the first
        suffix that puts it in the ``n``-th of ``shards`` equal parts of the slot space. A
        Cluster whose masters split the slots evenly (what ``redis-cli --cluster create``
        does) then gives every master its share of the shards."""
        name = _checked_name("queue name", name, allow_empty=False)
        if shards == 1:
            return [QueueKeys(self.prefix, name)]
        out = []
        for n in range(shards):
            low, high = n * SLOTS // shards, (n + 1) * SLOTS // shards
            suffix = 0
            while not low <= key_slot(f"{name}:{n}.{suffix}".encode()) < high:
                suffix += 1
            out.append(QueueKeys(self.prefix, f"{name}:{n}.{suffix}"))
        return out


class QueueKeys:
    """The keys of one work queue, all in the slot of ``{<name>}``."""

    __slots__ = ("dead", "intents", "stream")

    def __init__(self, prefix: str, name: str) -> None:
        base = f"{prefix}{{{name}}}"
        self.stream = base
        self.dead = f"{base}:dead"
        self.intents = f"{base}:intents"
