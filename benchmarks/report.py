"""The readable tables of a benchmark run (from its JSON, so an old run can be shown again:
``python -m benchmarks --show benchmarks/results/suite.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _pct(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{100 * a / b:.0f}%"


Row = tuple[str, str, str, str, str, str]


def _pq(stats: dict[str, Any] | None) -> str:
    """``p50 / p99`` of a run's percentiles (ms)."""
    if not stats or not stats.get("samples"):
        return "-"
    return f"{stats['p50_ms']:.1f} / {stats['p99_ms']:.1f}"


def _ratios(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[float, float] | None:
    """p50 and p99 of ``a`` over those of ``b`` (None when either has no samples)."""
    if not a or not b or not a.get("samples") or not b.get("samples"):
        return None
    if not b["p50_ms"] or not b["p99_ms"]:
        return None
    return a["p50_ms"] / b["p50_ms"], a["p99_ms"] / b["p99_ms"]


def _times(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    ratios = _ratios(a, b)
    return "-" if ratios is None else f"{ratios[0]:.2f}x / {ratios[1]:.2f}x"


def _lat(run: dict[str, Any] | None) -> str:
    return _pq(run["latency"]) if run else "-"


def _server_cpu(run: dict[str, Any]) -> float:
    return float(
        sum(v for k, v in run["cpu_cores"].items() if not k.startswith(("client", "busy")))
    )


def _per_cpu(run: dict[str, Any] | None) -> float | None:
    if not run:
        return None
    cpu = _server_cpu(run)
    return round(run["tokens_per_s"] / cpu) if cpu else None


def _losses(run: dict[str, Any] | None) -> str:
    if not run:
        return "-"
    lost = run["missing_terminals"] + run["bad_replies"] + run["turn_timeouts"]
    dup = run["cursor_violations"] + run["duplicate_terminals"]
    return f"{lost} / {dup}"


def _kb(run: dict[str, Any]) -> float:
    """RSS per connection in kB (1,000 bytes), as the target is stated."""
    return float(run["rss_per_connection_kib"]) * 1.024


def _verdict(ok: bool | None, detail: str = "") -> str:
    if ok is None:
        return "-"
    return ("met" if ok else "MISSED") + (f" ({detail})" if detail else "")


def _every_run(runs: dict[str, list[dict[str, float]]]) -> list[Row]:
    """Figure 2's runs one by one, when there were several."""
    if len(runs.get("2_chatcore", ())) < 2:
        return []

    def listed(key: str) -> str:
        return ", ".join(f"{x['p50_ms']:.1f}/{x['p99_ms']:.1f}" for x in runs.get(key, ()))

    return [
        (
            "  every run, p50 / p99 ms (the median run above)",
            listed("2_chatcore"),
            listed("2_baseline_per_token"),
            "",
            "",
            "",
        )
    ]


def busy_passes(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The suffix of a run's keys and its label: the quiet pass, and the busy one when the run
    had ``--busy N``."""
    n = result.get("busy") or 0
    return [("", "")] + ([(f"_busy{n}", f", {n} busy processes")] if n else [])


def busy_latency_rows(result: dict[str, Any]) -> list[Row]:
    """Figure 2 under ``--busy N``: chatcore's p99 against the bare-bones' under the same load."""
    r, t = result["results"], result["targets"]
    rows: list[Row] = []
    for suffix, label in busy_passes(result)[1:]:
        c, b = r.get(f"2_chatcore{suffix}"), r.get(f"2_baseline_per_token{suffix}")
        if not c:
            continue
        limit = t.get("busy_latency_p99_ratio")
        ratios = _ratios(c["latency"], b["latency"] if b else None)
        ok = None if ratios is None or limit is None else ratios[1] <= limit
        rows.append(
            (
                f"  latency{label} ({_n(c['tokens_per_s'])} tok/s)",
                _lat(c),
                f"{_lat(b)} per-token" if b else "-",
                _times(c["latency"], b["latency"] if b else None),
                f"p99 <= {limit:g}x" if limit else "",
                _verdict(ok, f"p99 {ratios[1]:.2f}x" if ratios else ""),
            )
        )
        rows += _every_run(r.get(f"2_runs{suffix}", {}))
    return rows


# Figure 7's chatcore stacks: the key's name and the label of its rows.
FIRST_TOKEN_STACKS = (("redis", "on Redis"), ("sqlite", "embedded on SQLite"))


def first_token_summary(result: dict[str, Any]) -> list[Row]:
    """Figure 7 at the target's concurrency: chatcore's time to first token against the
    bare-bones' in the same run (the verdict for the quiet pass; a busy pass is shown)."""
    r, t = result["results"], result["targets"]
    n = t.get("ttft_target_sessions", 50)
    p50, p99 = t.get("ttft_p50_ratio"), t.get("ttft_p99_ratio")
    rows: list[Row] = []
    for suffix, busy in busy_passes(result):
        b = r.get(f"7_baseline_{n}{suffix}")
        for stack, label in FIRST_TOKEN_STACKS:
            c = r.get(f"7_{stack}_{n}{suffix}")
            if not c:
                continue
            ratios = _ratios(c.get("ttft"), b.get("ttft") if b else None)
            quiet = not suffix and p50 is not None and p99 is not None
            ok = None
            if quiet and ratios is not None:
                ok = ratios[0] <= p50 and ratios[1] <= p99
            first = f"7 time to first token p50 / p99 ms, {n} sessions, " if not rows else "  "
            rows.append(
                (
                    first + label + busy,
                    _pq(c.get("ttft")),
                    _pq(b.get("ttft")) if b else "-",
                    _times(c.get("ttft"), b.get("ttft") if b else None),
                    f"<= {p50:g}x / {p99:g}x" if quiet else "",
                    _verdict(ok),
                )
            )
    return rows


FIRST_TOKEN_HEADERS = (
    "figure 7", "sessions", "first token p50 / p99 ms", "bare-bones", "ratio",
    "ack p50 / p99 ms", "bare-bones", "ratio", "turns/s (bare-bones)",
)  # fmt: skip


def first_token_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Figure 7 at every concurrency, each chatcore stack against the bare-bones pipeline run
    at the same concurrency in the same pass."""
    r = result["results"]
    rows: list[tuple[str, ...]] = []
    for suffix, busy in busy_passes(result):
        for n in result["plan"].get("ttft_sessions", ()):
            b = r.get(f"7_baseline_{n}{suffix}") or {}
            for stack, label in FIRST_TOKEN_STACKS:
                c = r.get(f"7_{stack}_{n}{suffix}")
                if not c:
                    continue
                rows.append(
                    (
                        label + busy,
                        _n(n),
                        _pq(c.get("ttft")),
                        _pq(b.get("ttft")),
                        _times(c.get("ttft"), b.get("ttft")),
                        _pq(c.get("ack")),
                        _pq(b.get("ack")),
                        _times(c.get("ack"), b.get("ack")),
                        f"{_n(c['turns_per_s'])} ({_n(b.get('turns_per_s'))})",
                    )
                )
    return rows


def summary_rows(result: dict[str, Any]) -> list[Row]:
    r = result["results"]
    t = result["targets"]
    ms = result["plan"]["flush"] * 1000
    alts = [f * 1000 for f in result["plan"]["flush_alternatives"]]
    rows: list[Row] = []

    c1, b1, bt = r.get("1_chatcore"), r.get("1_baseline_batched"), r.get("1_baseline_per_token")
    if c1 and b1:
        ratio = c1["tokens_per_s"] / b1["tokens_per_s"]
        gap = f"{100 * ratio:.0f}% vs {100 * t['throughput_ratio']:.0f}%"
        rows.append(
            (
                f"1 saturated throughput, tokens/s (flush {ms:g} ms)",
                _n(c1["tokens_per_s"]),
                f"{_n(b1['tokens_per_s'])} batched",
                _pct(c1["tokens_per_s"], b1["tokens_per_s"]),
                f">= {100 * t['throughput_ratio']:.0f}%",
                _verdict(ratio >= t["throughput_ratio"], gap),
            )
        )
        pairs = r.get("1_pairs")
        if pairs and len(pairs["ratios"]) > 1:
            rows.append(
                (
                    f"  {len(pairs['ratios'])} pairs run one after the other (median shown)",
                    " ".join(_n(x) for x in pairs["chatcore_tokens_per_s"]),
                    " ".join(_n(x) for x in pairs["baseline_tokens_per_s"]),
                    " ".join(f"{100 * x:.0f}%" for x in pairs["ratios"]),
                    "",
                    "",
                )
            )
        for alt in alts:
            c1a = r.get(f"1_chatcore_flush_{alt:g}ms")
            if c1a:
                rows.append(
                    (
                        f"  same, flush {alt:g} ms",
                        _n(c1a["tokens_per_s"]),
                        "",
                        _pct(c1a["tokens_per_s"], b1["tokens_per_s"]),
                        "",
                        "",
                    )
                )
        c1l, b1l = r.get("1_chatcore_asyncio_loop"), r.get("1_baseline_batched_asyncio_loop")
        if c1l and b1l:
            rows.append(
                (
                    "  both on asyncio's own loop (no uvloop)",
                    _n(c1l["tokens_per_s"]),
                    f"{_n(b1l['tokens_per_s'])} batched",
                    _pct(c1l["tokens_per_s"], b1l["tokens_per_s"]),
                    "",
                    "",
                )
            )
        if bt:
            rows.append(
                (
                    "  vs bare-bones with one XADD per token",
                    "",
                    f"{_n(bt['tokens_per_s'])} per-token",
                    _pct(c1["tokens_per_s"], bt["tokens_per_s"]),
                    "",
                    "",
                )
            )
        rows.append(
            (
                "  tokens per server CPU-second",
                _n(_per_cpu(c1)),
                _n(_per_cpu(b1)),
                _pct(_per_cpu(c1), _per_cpu(b1)),
                "",
                "",
            )
        )

    c2, b2 = r.get("2_chatcore"), r.get("2_baseline_per_token")
    if c2:
        lat = c2["latency"]
        ok = lat["p50_ms"] <= t["latency_p50_ms"] and lat["p99_ms"] <= t["latency_p99_ms"]
        rows.append(
            (
                f"2 latency p50 / p99 ms, {_n(c2['tokens_per_s'])} tok/s (flush {ms:g} ms)",
                _lat(c2),
                f"{_lat(b2)} per-token" if b2 else "-",
                _times(c2["latency"], b2["latency"]) if b2 else "",
                f"{t['latency_p50_ms']:g} / {t['latency_p99_ms']:g}",
                _verdict(ok),
            )
        )
        rows += _every_run(r.get("2_runs", {}))
        for alt in alts:
            c2a = r.get(f"2_chatcore_flush_{alt:g}ms")
            if not c2a:
                continue
            lat = c2a["latency"]
            ok = lat["p50_ms"] <= t["latency_p50_ms"] and lat["p99_ms"] <= t["latency_p99_ms"]
            rows.append(
                (
                    f"  same, flush {alt:g} ms ({_n(c2a['tokens_per_s'])} tok/s)",
                    _lat(c2a),
                    "",
                    "",
                    "",
                    _verdict(ok),
                )
            )
        for run in (c2, *(r.get(f"2_chatcore_flush_{alt:g}ms") for alt in alts)):
            if run and run.get("latency_batching", {}).get("samples"):
                rows.append(
                    (
                        f"    of which batching / delivery p50 (flush {run['flush_ms']:g} ms)",
                        f"{run['latency_batching']['p50_ms']:.1f} / "
                        f"{run['latency_delivery']['p50_ms']:.1f}",
                        f"{b2['latency_batching']['p50_ms']:.1f} / "
                        f"{b2['latency_delivery']['p50_ms']:.1f}"
                        if b2 and b2.get("latency_batching", {}).get("samples")
                        else "",
                        "",
                        "",
                        "",
                    )
                )
    rows += busy_latency_rows(result)

    c3, b3 = r.get("3_chatcore"), r.get("3_baseline")
    if c3:
        limit = t.get("turns_ratio")
        ratio = c3["turns_per_s"] / b3["turns_per_s"] if b3 and b3["turns_per_s"] else None
        rows.append(
            (
                f"3 turns/s, {c3['sessions']} sessions, {c3['model']['tokens']} tokens/reply",
                _n(c3["turns_per_s"]),
                _n(b3["turns_per_s"]) if b3 else "-",
                _pct(c3["turns_per_s"], b3["turns_per_s"]) if b3 else "-",
                f">= {100 * limit:.0f}%" if limit else "",
                _verdict(
                    None if ratio is None or limit is None else ratio >= limit,
                    f"{100 * ratio:.0f}% vs {100 * limit:.0f}%" if ratio and limit else "",
                ),
            )
        )
        every = [x for x in r.values() if isinstance(x, dict) and "missing_terminals" in x]
        clean = all(_losses(x) == "0 / 0" for x in every)
        rows.append(
            (
                "  lost / duplicated (this run; all runs)",
                _losses(c3),
                _losses(b3),
                "",
                "0 / 0",
                _verdict(clean, "every load run" if clean else "see runs"),
            )
        )

    c4, b4 = r.get("4_chatcore"), r.get("4_baseline")
    if c4:
        rows.append(
            (
                f"4 {_n(c4['connections'])} idle WebSockets on one process: RSS/conn, KiB",
                _n(c4["rss_per_connection_kib"]),
                _n(b4["rss_per_connection_kib"]) if b4 else "-",
                "",
                f"<= {t['idle_rss_per_connection_kb']:g} kB",
                _verdict(_kb(c4) <= t["idle_rss_per_connection_kb"], f"{_kb(c4):.1f} kB"),
            )
        )
        rows.append(
            (
                "  Redis connections of that process, before -> after",
                f"{c4['redis_connections_before']} -> {c4['redis_connections_after']}",
                f"{b4['redis_connections_before']} -> {b4['redis_connections_after']}"
                if b4
                else "-",
                "",
                "constant",
                _verdict(c4["redis_connections_after"] <= max(8, c4["redis_connections_before"])),
            )
        )

    c5 = r.get("5_restore")
    if c5:
        cold = c5["cold_cache"]["median_ms"]
        rows.append(
            (
                f"5 restore {_n(c5['events'])} events, ms median: empty / warm cache",
                f"{cold:.1f} / {c5['warm_cache']['median_ms']:.1f}",
                f"{c5['cold_breakdown_gc_paused_median_ms']['xrange_10k_ms']:.1f} raw XRANGE",
                "",
                f"<= {t['restore_cold_median_ms']:g} (empty)",
                _verdict(cold <= t["restore_cold_median_ms"]),
            )
        )
    rows += sqlite_restore_rows(result)

    e1, e2, e3, e4 = (
        r.get("6_embedded_throughput"),
        r.get("6_embedded_latency"),
        r.get("6_embedded_turns"),
        r.get("6_embedded_idle"),
    )
    if e1:
        rows.append(
            (
                "6 embedded: saturated tokens/s",
                _n(e1["tokens_per_s"]),
                f"{_n(b1['tokens_per_s'])} batched" if b1 else "-",
                _pct(e1["tokens_per_s"], b1["tokens_per_s"]) if b1 else "-",
                "",
                "",
            )
        )
    if e2:
        rows.append((f"  latency p50 / p99 ms (flush {ms:g} ms)", _lat(e2), _lat(b2), "", "", ""))
        for alt in alts:
            e2a = r.get(f"6_embedded_latency_flush_{alt:g}ms")
            if e2a:
                rows.append(
                    (f"  latency p50 / p99 ms (flush {alt:g} ms)", _lat(e2a), "", "", "", "")
                )
    if e3:
        rows.append(
            (
                "  turns/s; lost / duplicated",
                f"{_n(e3['turns_per_s'])}; {_losses(e3)}",
                _n(b3["turns_per_s"]) if b3 else "-",
                "",
                "",
                "",
            )
        )
    if e4:
        rows.append(_idle_row(e4, t["idle_rss_per_connection_kb"]))
    rows += sqlite_embedded_rows(result)
    rows += first_token_summary(result)
    return rows


def sqlite_restore_rows(result: dict[str, Any]) -> list[Row]:
    """Figure 5 on SQLite: from an empty cache (the view deleted), on a database opened anew,
    and from a warm cache."""
    s5 = result["results"].get("5_restore_sqlite")
    if not s5:
        return []
    limit = result["targets"]["restore_cold_median_ms"]
    cold, again = s5["cold_cache"]["median_ms"], s5["cold_reopened"]["median_ms"]
    return [
        (
            "  on SQLite, ms median: empty / warm cache",
            f"{cold:.1f} / {s5['warm_cache']['median_ms']:.1f}",
            "",
            "",
            f"<= {limit:g} (empty)",
            _verdict(cold <= limit),
        ),
        (
            "  on SQLite, empty cache, database opened anew",
            f"{again:.1f}",
            "",
            "",
            f"<= {limit:g}",
            _verdict(again <= limit),
        ),
    ]


def sqlite_embedded_rows(result: dict[str, Any]) -> list[Row]:
    """Figure 6 on SQLite, each figure beside the embedded mode in memory of the same run."""
    r, t = result["results"], result["targets"]
    rows: list[Row] = []
    s1, e1 = r.get("6_sqlite_throughput"), r.get("6_embedded_throughput")
    if s1:
        limit = t.get("sqlite_throughput_ratio")
        ratio = s1["tokens_per_s"] / e1["tokens_per_s"] if e1 and e1["tokens_per_s"] else None
        rows.append(
            (
                "6 embedded on SQLite: saturated tokens/s",
                _n(s1["tokens_per_s"]),
                f"{_n(e1['tokens_per_s'])} memory" if e1 else "-",
                _pct(s1["tokens_per_s"], e1["tokens_per_s"]) if e1 else "-",
                f">= {100 * limit:.0f}% of memory" if limit else "",
                _verdict(None if ratio is None or limit is None else ratio >= limit),
            )
        )
    ms = result["plan"]["flush"] * 1000
    for flush in (ms, *(f * 1000 for f in result["plan"]["flush_alternatives"])):
        key = "latency" if flush == ms else f"latency_flush_{flush:g}ms"
        s2, e2 = r.get(f"6_sqlite_{key}"), r.get(f"6_embedded_{key}")
        if s2:
            rows.append(
                (
                    f"  latency p50 / p99 ms (flush {flush:g} ms)",
                    _lat(s2),
                    f"{_lat(e2)} memory" if e2 else "-",
                    _times(s2["latency"], e2["latency"]) if e2 else "",
                    "",
                    "",
                )
            )
    s3, e3 = r.get("6_sqlite_turns"), r.get("6_embedded_turns")
    if s3:
        rows.append(
            (
                "  turns/s; lost / duplicated",
                f"{_n(s3['turns_per_s'])}; {_losses(s3)}",
                f"{_n(e3['turns_per_s'])} memory" if e3 else "-",
                _pct(s3["turns_per_s"], e3["turns_per_s"]) if e3 else "",
                "",
                "",
            )
        )
    s4 = r.get("6_sqlite_idle")
    if s4:
        rows.append(_idle_row(s4, t["idle_rss_per_connection_kb"]))
    return rows


def _idle_row(run: dict[str, Any], limit: float) -> Row:
    """Figure 6's idle sockets on one embedded server, against the target per connection."""
    return (
        f"  idle: RSS per connection, KiB ({_n(run['connections'])} sockets)",
        _n(run["rss_per_connection_kib"]),
        "",
        "",
        f"<= {limit:g} kB",
        _verdict(_kb(run) <= limit, f"{_kb(run):.1f} kB"),
    )


def cluster_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Figure 8: the Cluster against one server (no bare-bones here: the ratio is to the single
    server), and each master's CPU."""
    r = result["results"]
    rows: list[tuple[str, ...]] = []
    for what, key in (("tokens/s", "throughput"), ("turns/s", "turns")):
        single, cluster = r.get(f"8_single_{key}"), r.get(f"8_cluster_{key}")
        if not single or not cluster:
            continue
        value = "tokens_per_s" if key == "throughput" else "turns_per_s"
        masters = ", ".join(
            f"{name.removeprefix('redis-')} {cores:.2f}"
            for name, cores in cluster["cpu_cores"].items()
            if name.startswith("redis-")
        )
        rows.append(
            (
                f"8 {what} on a 3-master Cluster",
                _n(cluster[value]),
                _n(single[value]),
                _pct(cluster[value], single[value]),
                f"redis {single['cpu_cores'].get('redis', 0):.2f} vs {masters}",
            )
        )
    return rows


def table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def run_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for key, run in result["results"].items():
        if not isinstance(run, dict) or "tokens_per_s" not in run:
            continue
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in run["cpu_cores"].items())
        flush = run.get("flush_ms")
        rows.append(
            (
                key,
                "-" if flush is None else f"{flush:g}",
                _n(run["tokens_per_s"]),
                _n(run["turns_per_s"]),
                _lat(run),
                _pq(run.get("ttft")),
                _losses(run),
                _n(run["reconnects"]),
                cpu,
                f"{run['loadavg_start'][0]:.2f} -> {run['loadavg_end'][0]:.2f}",
            )
        )
    return rows


RUN_HEADERS = (
    "run", "flush ms", "tokens/s", "turns/s", "p50/p99 ms", "1st token ms", "lost/dup",
    "reconnects", "CPU (cores)", "load",
)  # fmt: skip


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"chatcore benchmarks, {result['started_at']} ({result['seconds']} s"
        f"{', quick' if result['quick'] else ''})",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, {m['os']}, "
        f"Python {m['python']}, Redis {m['redis_server']}",
        f"load average (1 min) at start {result['loadavg_start'][0]}, "
        f"at end {result['loadavg_end'][0]}"
        + (
            f"; figures 2 and 7 also with {result['busy']} CPU-bound processes beside"
            if result.get("busy")
            else ""
        ),
        "",
        table(
            ("figure", "chatcore", "bare-bones", "ratio", "target", "verdict"),
            summary_rows(result),
        ),
    ]
    first = first_token_rows(result)
    if first:
        out += ["", table(FIRST_TOKEN_HEADERS, first)]
    clustered = cluster_rows(result)
    if clustered:
        out += [
            "",
            table(
                ("figure 8", "Cluster", "one server", "ratio", "Redis CPU (cores)"),
                clustered,
            ),
        ]
    runs = run_rows(result)
    if runs:
        out += [
            "",
            "load runs (CPU: cores used by each process over the window; load: 1-min loadavg)",
            table(
                RUN_HEADERS,
                runs,
            ),
        ]
    prof = result["results"].get("profile")
    if prof:
        out += ["", "where the busy time goes (cProfile, own time by layer, share of busy time):"]
        for figure, procs in prof.items():
            for name, summary in procs.items():
                if not isinstance(summary, dict) or "layers_share_of_busy" not in summary:
                    continue
                top = ", ".join(
                    f"{layer} {100 * share:.0f}%"
                    for layer, share in list(summary["layers_share_of_busy"].items())[:6]
                )
                out.append(f"  {figure} {name}: {top}")
    return "\n".join(out)
