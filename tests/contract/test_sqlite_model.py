"""A stateful property: the SQLite event store behaves exactly like the in-memory one, its
model, under any sequence of appends (right, stale, missing, malformed or future versions;
several at one version at once), reads, tails, clock jumps and restarts of the process.

Both stores share one clock, so they must hand out the very same positions; every answer,
every conflict and every live push must be equal, and so must every log after every step.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chatcore.errors import ConcurrencyConflict
from chatcore.events import Event, Recorded
from chatcore.ids import parse_position
from chatcore.ports import Appended, EventStore, LiveSubscription
from chatcore_adapters.memory import MemoryEventStore
from chatcore_adapters.sqlite import SqliteDatabase, SqliteEventStore
from tests.support.factories import ManualClock, delta, message, opening, session_id

VERSIONS = ["current", "none", "stale", "malformed", "future"]
CURSORS = ["none", "known", "between", "future", "zero"]


def _outcome(result: list[Recorded] | BaseException) -> Any:
    if isinstance(result, ConcurrencyConflict):
        return ("conflict", result.expected, result.actual)
    if isinstance(result, BaseException):
        raise result
    return ("ok", result)


def test_the_sqlite_store_answers_like_the_memory_store(tmp_path: Path) -> None:
    files = itertools.count()

    class SqliteAgainstMemory(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.runner = asyncio.Runner()
            self.clock = ManualClock()
            self.path = tmp_path / f"model-{next(files)}.db"
            self.model = MemoryEventStore(self.clock)
            self.sids = [session_id() for _ in range(3)]
            self.counter = 0
            self.model_pushes: list[Appended] = []
            self.real_pushes: list[Appended] = []
            self.model_sub = self.follow(self.model, self.model_pushes)
            self.db, self.real, self.real_sub = self.open()

        def run(self, coro: Any) -> Any:
            return self.runner.run(coro)

        def follow(self, store: EventStore, into: list[Appended]) -> LiveSubscription:
            sub = store.subscribe(into.append)
            for sid in self.sids:
                self.run(sub.follow(sid))
            return sub

        def open(self) -> tuple[SqliteDatabase, SqliteEventStore, LiveSubscription]:
            db = SqliteDatabase.open(self.path)
            real = SqliteEventStore(db, self.clock)
            return db, real, self.follow(real, self.real_pushes)

        def both(self, call: Any) -> tuple[Any, Any]:
            """``call(store)`` on the model and on SQLite: the model's answer, SQLite's."""

            async def on(store: EventStore) -> Any:
                try:
                    return await call(store)
                except ConcurrencyConflict as exc:
                    return exc

            return self.run(on(self.model)), self.run(on(self.real))

        def positions(self, index: int) -> list[str]:
            return [r.position for r in self.run(self.model.read(self.sids[index]))]

        def events(self, size: int) -> list[Event]:
            out: list[Event] = []
            for _ in range(size):
                self.counter += 1
                out.append(delta(self.counter) if self.counter % 3 else message(self.counter))
            return out

        def version(self, index: int, kind: str, pick: int) -> str | None:
            known = self.positions(index)
            if kind == "current":
                return known[-1] if known else None
            if kind == "stale" and known:
                return known[pick % len(known)]
            if kind == "malformed":
                return "01-0"
            if kind == "future":
                return "99999999999999-0"
            return None

        def cursor(self, index: int, kind: str, pick: int) -> str | None:
            known = self.positions(index)
            if kind == "known" and known:
                return known[pick % len(known)]
            if kind == "between" and known:
                ms, seq = parse_position(known[pick % len(known)])
                return f"{ms}-{seq + 1 + pick}"
            if kind == "future":
                return f"{2**64 - 1}-0"
            if kind == "zero":
                return "0-0"
            return None

        @rule(
            index=st.integers(0, 2),
            kind=st.sampled_from(VERSIONS),
            pick=st.integers(0, 50),
            size=st.integers(1, 4),
        )
        def append(self, index: int, kind: str, pick: int, size: int) -> None:
            sid = self.sids[index]
            expected = self.version(index, kind, pick)
            if expected is None and not self.positions(index):
                batch: list[Event] = [*opening(sid), *self.events(size - 1)]
            else:
                batch = self.events(size)
            model, real = self.both(lambda s: s.append(sid, batch, expected_version=expected))
            assert _outcome(real) == _outcome(model)

        @rule(index=st.integers(0, 2), writers=st.integers(2, 5))
        def appends_at_one_version_at_once(self, index: int, writers: int) -> None:
            sid = self.sids[index]
            expected = self.version(index, "current", 0)
            batches = [self.events(1) for _ in range(writers)]
            if expected is None:
                batches = [[*opening(sid), *b] for b in batches]

            async def race(store: EventStore) -> list[Any]:
                return await asyncio.gather(
                    *(store.append(sid, b, expected_version=expected) for b in batches),
                    return_exceptions=True,
                )

            model, real = self.both(race)
            assert [_outcome(r) for r in real] == [_outcome(m) for m in model]

        @rule(
            index=st.integers(0, 2),
            kind=st.sampled_from(CURSORS),
            pick=st.integers(0, 50),
            # (A negative limit is no limit the port defines; the memory store slices with it.)
            limit=st.none() | st.integers(0, 6),
        )
        def read(self, index: int, kind: str, pick: int, limit: int | None) -> None:
            sid, after = self.sids[index], self.cursor(index, kind, pick)
            model, real = self.both(lambda s: s.read(sid, after=after, limit=limit))
            assert real == model

        @rule(ms=st.integers(-5_000, 5_000))
        def clock_moves(self, ms: int) -> None:
            self.clock.advance(ms / 1000)

        @precondition(lambda self: self.counter > 0)
        @rule()
        def restart(self) -> None:
            """The process stops and another one opens the file."""
            self.drain()
            self.run(self.real_sub.close())
            self.run(self.db.close())
            self.db, self.real, self.real_sub = self.open()

        def drain(self) -> None:
            # (pushes are handed over with each commit: by now all have arrived)
            assert self.real_pushes == self.model_pushes
            self.real_pushes.clear()
            self.model_pushes.clear()

        @invariant()
        def same_logs_and_same_pushes(self) -> None:
            self.drain()
            for sid in self.sids:
                model, real = self.both(lambda s, sid=sid: s.read(sid))
                assert real == model
                model, real = self.both(lambda s, sid=sid: s.last_position(sid))
                assert real == model

        def teardown(self) -> None:
            self.run(self.real_sub.close())
            self.run(self.model_sub.close())
            self.run(self.db.close())
            self.runner.close()

    run_state_machine_as_test(
        SqliteAgainstMemory,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
