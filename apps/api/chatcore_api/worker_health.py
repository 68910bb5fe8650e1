"""Reading worker heartbeats: ``chatcore worker --check`` (and anything else that asks "is
someone answering messages?").

A worker beats every ``heartbeat_interval`` seconds and its record expires ``heartbeat_ttl``
seconds after its last beat. In between, a record whose beat is older than ``stale_after``
(twice the interval by default: one beat missed) belongs to a worker that is *stale*: frozen,
cut off from Redis, or dying. It is listed, but does not count as live.

Ages are measured against this process's clock; hosts are expected to keep their clocks in
sync (NTP), as they must anyway for the timestamps of events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from chatcore.ports import Heartbeats, WorkerStatus


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    status: WorkerStatus
    age: float  # seconds since the worker's last beat
    stale: bool

    @property
    def live(self) -> bool:
        """Beating on time and taking work."""
        return not self.stale and self.status.state == "running"

    @property
    def state(self) -> str:
        return "stale" if self.stale else self.status.state


def assess(
    statuses: Sequence[WorkerStatus], *, now: datetime, stale_after: float
) -> list[WorkerHealth]:
    """Each worker's health, ordered by host and worker id."""
    out = []
    for status in statuses:
        age = max(0.0, (now - status.beat_at).total_seconds())
        out.append(WorkerHealth(status, age, age > stale_after))
    return sorted(out, key=lambda h: (h.status.host, h.status.worker_id))


async def read_health(
    heartbeats: Heartbeats, *, now: datetime, stale_after: float
) -> list[WorkerHealth]:
    return assess(await heartbeats.workers(), now=now, stale_after=stale_after)


def exit_code(health: Sequence[WorkerHealth]) -> int:
    """0 when at least one worker is live, else 1."""
    return 0 if any(h.live for h in health) else 1


_COLUMNS = ("WORKER", "HOST", "PID", "STATE", "IN-FLIGHT", "LAST BEAT", "COMPLETED", "FAILED")


Shard = tuple[str, int, int]  # a queue stream, its waiting and its pending entries


def render_table(health: Sequence[WorkerHealth], shards: Sequence[Shard] = ()) -> str:
    """A plain-text table, one worker per line, a line per queue shard, a summary line."""
    rows = [
        (
            h.status.worker_id,
            h.status.host or "-",
            str(h.status.pid or "-"),
            h.state,
            str(len(h.status.in_flight)),
            f"{h.age:.1f}s ago",
            str(h.status.completed),
            str(h.status.failed),
        )
        for h in health
    ]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for stream, waiting, pending in shards:
        lines.append(f"queue {stream}: {waiting} waiting, {pending} being answered")
    live = sum(1 for h in health if h.live)
    stale = sum(1 for h in health if h.stale)
    lines.append(f"{live} live, {stale} stale, {len(health)} listed")
    return "\n".join(lines)


def render_json(health: Sequence[WorkerHealth], shards: Sequence[Shard] = ()) -> str:
    return orjson.dumps(
        {
            "live": sum(1 for h in health if h.live),
            "queue": [
                {"stream": stream, "waiting": waiting, "pending": pending}
                for stream, waiting, pending in shards
            ],
            "workers": [
                {
                    **h.status.model_dump(mode="json"),
                    "state": h.state,
                    "last_beat_age": round(h.age, 3),
                }
                for h in health
            ],
        }
    ).decode()
