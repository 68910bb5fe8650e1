"""The benchmark suite's own pieces that need no benchmark run: percentiles, the report's
verdicts from a made-up result, the load client's first-token and ack timing, and the
CPU-bound processes of ``--busy``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from benchmarks import report, tokens
from benchmarks.client import Counts, Options, Session, Window
from benchmarks.procs import busy_processes, cpu_seconds, wait_until
from benchmarks.stack import percentiles
from benchmarks.suite import QUICK, TARGETS, Runner

# --- percentiles --------------------------------------------------------------------------------


def test_percentiles_are_read_from_the_sorted_samples_in_milliseconds() -> None:
    samples = [n * 1000 for n in range(100, 0, -1)]  # 1..100 ms, in any order
    got = percentiles(samples)
    assert got["samples"] == 100
    assert (got["p50_ms"], got["p90_ms"], got["p99_ms"], got["max_ms"]) == (51, 91, 100, 100)
    assert got["mean_ms"] == 50.5
    assert percentiles([]) == {"samples": 0}


# --- the report ---------------------------------------------------------------------------------


def pct(p50: float, p99: float) -> dict[str, Any]:
    return {"samples": 100, "p50_ms": p50, "p90_ms": p99, "p99_ms": p99, "max_ms": p99}


def run(
    *,
    tokens_per_s: int = 1000,
    turns_per_s: float = 50.0,
    latency: tuple[float, float] | None = None,
    ttft: tuple[float, float] | None = None,
    ack: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A load run's result with what the report reads."""
    return {
        "tokens_per_s": tokens_per_s,
        "turns_per_s": turns_per_s,
        "sessions": 100,
        "model": {"tokens": 20, "delay": 0.0},
        "flush_ms": 15,
        "latency": pct(*latency) if latency else {"samples": 0},
        "ttft": pct(*ttft) if ttft else {"samples": 0},
        "ack": pct(*ack) if ack else {"samples": 0},
        "cpu_cores": {"api1": 0.5, "client1": 0.1, "busy1": 1.0},
        "missing_terminals": 0,
        "bad_replies": 0,
        "turn_timeouts": 0,
        "cursor_violations": 0,
        "duplicate_terminals": 0,
        "reconnects": 0,
        "loadavg_start": [1.0, 1.0, 1.0],
        "loadavg_end": [1.5, 1.0, 1.0],
    }


def restore(cold: float) -> dict[str, Any]:
    return {"median_ms": cold, "p95_ms": cold, "min_ms": cold, "runs": 5}


def made_up(**overrides: Any) -> dict[str, Any]:
    """A whole run's result: figures 2, 3, 5, 6 and 7, quiet and with 2 busy processes."""
    results: dict[str, Any] = {
        "2_chatcore": run(latency=(1.5, 8.0)),
        "2_baseline_per_token": run(latency=(1.0, 4.0)),
        "2_chatcore_busy2": run(latency=(3.0, 9.0)),  # p99 2.25x: over 2x
        "2_baseline_per_token_busy2": run(latency=(2.0, 4.0)),
        "3_chatcore": run(turns_per_s=60.0),  # 60% of the bare-bones: met
        "3_baseline": run(turns_per_s=100.0),
        "5_restore": {
            "events": 10_002,
            "cold_cache": restore(100.0),
            "warm_cache": restore(8.0),
            "cold_breakdown_gc_paused_median_ms": {"xrange_10k_ms": 12.0},
        },
        "5_restore_sqlite": {
            "events": 10_002,
            "cold_cache": restore(151.0),  # over 150 ms
            "cold_reopened": restore(120.0),
            "warm_cache": restore(5.0),
        },
        "6_embedded_throughput": run(tokens_per_s=1000),
        "6_sqlite_throughput": run(tokens_per_s=790),  # 79% of memory's: missed
        "6_embedded_latency": run(latency=(2.0, 10.0)),
        "6_sqlite_latency": run(latency=(2.0, 12.0)),
        "6_embedded_turns": run(turns_per_s=200.0),
        "6_sqlite_turns": run(turns_per_s=180.0),
    }
    for suffix in ("", "_busy2"):
        for n in (1, 50, 200):
            results[f"7_baseline_{n}{suffix}"] = run(ttft=(2.0, 4.0), ack=(1.0, 2.0))
            results[f"7_redis_{n}{suffix}"] = run(ttft=(3.0, 8.0), ack=(2.0, 4.0))  # 1.5x / 2x
            results[f"7_sqlite_{n}{suffix}"] = run(ttft=(3.2, 8.0), ack=(2.0, 4.0))  # 1.6x
    result = {
        "started_at": "2026-12-07T20:00:00+00:00",
        "seconds": 100,
        "quick": True,
        "busy": 2,
        "machine": {
            "cpu": "test",
            "cores": 2,
            "ram_gib": 1.0,
            "os": "test",
            "python": "3.11",
            "redis_server": "7",
        },
        "loadavg_start": [1.0, 1.0, 1.0],
        "loadavg_end": [1.0, 1.0, 1.0],
        "plan": json.loads(json.dumps(dataclasses.asdict(QUICK))),  # as saved: lists
        "targets": dict(TARGETS),
        "results": results,
    }
    result.update(overrides)
    return result


def row(rows: list[report.Row], label: str) -> report.Row:
    """The one row whose label is ``label``, or else starts with it."""
    exact = [r for r in rows if r[0].strip() == label]
    (found,) = exact or [r for r in rows if r[0].strip().startswith(label)]
    return found


def test_the_report_judges_each_target_as_a_ratio_to_its_own_baseline() -> None:
    rows = report.summary_rows(made_up())
    assert row(rows, "3 turns/s")[5] == "met (60% vs 60%)"
    busy = row(rows, "latency, 2 busy processes")
    assert busy[3] == "1.50x / 2.25x"
    assert busy[5].startswith("MISSED")
    assert row(rows, "on SQLite, ms median")[5] == "MISSED"
    assert row(rows, "on SQLite, empty cache, database opened anew")[5] == "met"
    assert row(rows, "6 embedded on SQLite")[3:] == ("79%", ">= 80% of memory", "MISSED")
    redis = row(rows, "7 time to first token p50 / p99 ms, 50 sessions, on Redis")
    assert redis[3:] == ("1.50x / 2.00x", "<= 1.5x / 2x", "met")
    assert row(rows, "embedded on SQLite")[5] == "MISSED"
    # The busy pass is shown beside its own bare-bones run, without a verdict.
    assert row(rows, "on Redis, 2 busy processes")[3:] == ("1.50x / 2.00x", "", "-")


def test_figure_7_is_tabled_at_every_concurrency_quiet_and_busy() -> None:
    rows = report.first_token_rows(made_up())
    assert [(r[0], r[1]) for r in rows[:2]] == [("on Redis", "1"), ("embedded on SQLite", "1")]
    assert len(rows) == 12
    assert rows[-1][0] == "embedded on SQLite, 2 busy processes"
    assert rows[-1][7] == "2.00x / 2.00x"  # ack against the bare-bones' under the same load
    text = report.render(made_up())
    assert "figure 7" in text
    assert "figures 2 and 7 also with 2 CPU-bound processes beside" in text


def test_a_table_with_no_rows_renders_its_headers() -> None:
    """``--only 8`` leaves the figures' summary table empty; it used to crash the report."""
    assert report.table(("figure", "chatcore"), []).splitlines() == [
        "figure  chatcore",
        "------  --------",
    ]


def test_a_result_saved_before_these_figures_still_renders() -> None:
    old = made_up(busy=None, targets={k: TARGETS[k] for k in list(TARGETS)[:3]})
    old["targets"].update(
        idle_rss_per_connection_kb=50.0, restore_cold_median_ms=150.0, latency_p99_ms=10.0
    )
    for key in [k for k in old["results"] if k.startswith(("7_", "6_sqlite", "5_restore_sq"))]:
        del old["results"][key]
    for value in old["results"].values():
        value.pop("ttft", None)
    rows = report.summary_rows(old)
    assert row(rows, "3 turns/s")[4:] == ("", "-")
    assert "figure 7" not in report.render(old)


# --- the load client's timing -------------------------------------------------------------------


class ScriptedServer:
    """A socket answering each ``send`` as a server does, each frame after a delay: the
    message's event and its ack at 5 ms, a delta of an OLDER reply at 10 ms (which must not
    count as this message's first token), the reply's start and first delta at 20 ms, the
    rest and its end at 25 ms."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.position = 0

    def event(self, event: dict[str, Any]) -> dict[str, Any]:
        self.position += 1
        return {"type": "event", "cursor": f"1-{self.position}", "event": event}

    async def send(self, raw: str) -> None:
        frame = json.loads(raw)
        cmid = frame["client_message_id"]
        mid, rid = f"msg-{cmid}", f"rep-{cmid}"
        submitted = {"type": "message_submitted", "message_id": mid, "client_message_id": cmid}
        ack = {"type": "ack", "for_type": "send", "client_message_id": cmid, "message_id": mid}
        stray = {"type": "reply_delta", "reply_id": "rep-older", "text": tokens.stamp()}
        started = {"type": "reply_started", "reply_id": rid, "in_reply_to": mid}
        delta = {"type": "reply_delta", "reply_id": rid, "text": tokens.stamp()}
        done = {"type": "reply_completed", "reply_id": rid, "in_reply_to": mid}
        script = [
            (0.005, [self.event(submitted), ack]),
            (0.010, [self.event(stray)]),
            (0.020, [self.event(started), self.event(delta)]),
            (0.025, [self.event(delta), self.event(done)]),
        ]
        loop = asyncio.get_running_loop()
        for delay, frames in script:
            loop.call_later(delay, self.deliver, frames)

    def deliver(self, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            self.session._on_frame(frame, time.monotonic())


async def test_first_token_and_ack_are_timed_from_the_send_for_the_message_s_own_reply() -> None:
    opts = Options(
        target="baseline", ports=[1], sessions=1, mode="turns", tokens=2, latency=False,
        connect_concurrency=1, turn_timeout=5.0, think=(0.0, 0.0), report_replies=False, seed=1,
    )  # fmt: skip
    counts, window = Counts(), Window()
    window.start, window.end = 0.0, float("inf")
    session = Session(0, opts, counts, window)
    session.ws = ScriptedServer(session)  # type: ignore[assignment]
    await session.turns(stop_sending=time.monotonic() + 0.12)
    assert counts.sent >= 2
    assert counts.completed == counts.sent
    assert len(counts.ttft_us) == len(counts.ack_us) == counts.sent
    # Timer callbacks may run a clock tick early: a little slack below the scripted delays.
    assert all(4_000 <= us < 10_000 for us in counts.ack_us), counts.ack_us
    assert all(19_000 <= us < 60_000 for us in counts.ttft_us), counts.ttft_us
    # A turn lasts from the send to its terminal event, which comes after the first token.
    assert len(counts.turn_us) == counts.sent
    assert all(t >= f for t, f in zip(counts.turn_us, counts.ttft_us, strict=True))


async def test_frames_outside_the_window_are_not_timed() -> None:
    opts = Options(
        target="baseline", ports=[1], sessions=1, mode="turns", tokens=2, latency=False,
        connect_concurrency=1, turn_timeout=5.0, think=(0.0, 0.0), report_replies=False, seed=1,
    )  # fmt: skip
    counts = Counts()
    session = Session(0, opts, counts, Window())  # a window that never opens
    session.ws = ScriptedServer(session)  # type: ignore[assignment]
    await session.turns(stop_sending=time.monotonic() + 0.05)
    assert counts.completed >= 1
    assert counts.ttft_us == counts.ack_us == counts.turn_us == []


# --- --busy -------------------------------------------------------------------------------------


def test_busy_processes_spin_while_the_block_runs_and_are_gone_after_it(tmp_path: Path) -> None:
    runner = Runner(QUICK, tmp_path, None, busy=2)
    with runner.busy_load() as suffix:
        assert suffix == "_busy2"
        pids = dict(runner.beside)
        assert sorted(pids) == ["busy1", "busy2"]
        wait_until(
            lambda: all((cpu_seconds(p) or 0.0) >= 0.05 for p in pids.values()),
            30,
            "the busy processes to use CPU",
        )
    assert runner.beside == {}
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists()


def test_busy_processes_are_stopped_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), busy_processes(1) as pids:
        raise RuntimeError("a figure failed")
    assert not Path(f"/proc/{pids[0]}").exists()
