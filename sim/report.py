"""The benchmark report: ``report.json``, ``report.md`` and a plot with the faults marked.

Every figure is written next to its target from issue 9, with the scale that
was actually run, so a reader can tell a met target from a scaled-down one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from sim.faults import Mark

#: figure -> (target text, passes(value) or None when only informative)
TARGETS: dict[str, tuple[str, Any]] = {
    "stores": ("100", None),
    "skus": ("20,000", None),
    "duration_s": ("≥ 600", None),
    "events_per_s": ("≥ 1,000 sustained", lambda v: v >= 1000),
    "p99_lag_ms": ("< 1,000 (aim 250)", lambda v: v < 1000),
    "p99_pg_lag_ms": ("< 1,500", lambda v: v < 1500),
    "p99_store_side_lag_ms": ("(of the lag: recorded_at → the agent sent it)", None),
    "p99_centre_lag_ms": ("(of the lag: sent → applied centrally)", None),
    "p99_centre_pg_lag_ms": ("(of the Postgres lag: sent → committed)", None),
    "drain_backlog": ("5-minute outage of 20 stores", None),
    "drain_s": ("(the last backlog event applied: ledger `applied_at`)", None),
    "drain_per_s": ("≥ 3,000 (aim 10,000)", lambda v: v >= 3000),
    "drain_pg_s": ("(the last one committed: ledger `committed_at`)", None),
    "drain_pg_per_s": ("≥ 3,000 into PostgreSQL", lambda v: v >= 3000),
    "drain_peak_worker_rss_mb": ("bounded", None),
    "drain_cpu_idle_pct": ("(the box idle while it drained)", None),
    "drain_cpu_steal_pct": ("(CPU the host took: a busy host)", None),
    "drain_sent_s": ("(the agents had sent their backlog: ledger `sent_at`)", None),
    "drain_median_store_s": ("(half the cut stores applied)", None),
    "drain_view_s": ("(when `/api/sync` said so: a later look)", None),
    "drain_pg_view_s": ("(when `outlet_sync` said so: a later look)", None),
    "drain_view_trailed_s": ("(`/api/sync` still showed a backlog the ledger had applied)", None),
    "sync_answer_max_s": ("(the slowest `/api/sync` answer while it drained)", None),
    "drain_cpu_cores": ("(cores each part used while it drained)", None),
    "drain_worker_apply_pct": ("(the worker applying, % of the drain)", None),
    "drain_worker_flush_pct": ("(the worker waiting for its writes' acks)", None),
    "accuracy_final": ("100%", lambda v: v >= 1.0),
    "accuracy_in_run": ("≥ 99.9%", lambda v: v >= 0.999),
    "lost": ("0", lambda v: v == 0),
    "doubled": ("0", lambda v: v == 0),
}


#: a fault's figures that are there to look things up with, not to read
_FOR_LOOKUPS = frozenset({"restored_at", "backlog_last_seqs"})


def write_json(path: Path, figures: dict[str, Any]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(figures)
    path.write_bytes(line + b"\n")
    return line


def _nice(figures: dict[str, Any]) -> str:
    nice = figures.get("store_side_nice")
    return "n/a (no autogroups here)" if nice is None else str(nice)


def _shown(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _workers(n: Any) -> str:
    return "? workers" if n is None else f"{n} worker{'' if n == 1 else 's'}"


def write_markdown(
    path: Path,
    figures: dict[str, Any],
    checks: dict[str, bool],
    marks: list[Mark],
    plot_name: str,
) -> None:
    rows = ["| figure | measured | target | met |", "|---|---|---|---|"]
    for key, (target, ok) in TARGETS.items():
        value = figures.get(key)
        met = "" if ok is None or value is None else ("yes" if ok(value) else "**no**")
        shown = _shown(value)
        rows.append(f"| `{key}` | {shown} | {target} | {met} |")
    t0 = float(figures.get("wall_start", 0.0))
    fault_rows = ["| fault | at (s) | took (s) | detail |", "|---|---|---|---|"]
    for m in marks:
        extra = ", ".join(f"{k} {v}" for k, v in m.figures.items() if k not in _FOR_LOOKUPS)
        detail = " ".join(x for x in (m.detail, extra) if x)
        fault_rows.append(f"| {m.kind} | {m.start - t0:.0f} | {m.end - m.start:.1f} | {detail} |")
    check_rows = [f"- {'PASS' if ok else 'FAIL'} {name}" for name, ok in checks.items()]
    text = "\n".join(
        [
            "# Benchmark report (issue 9)",
            "",
            f"Scale run: {figures.get('stores')} stores x {figures.get('skus'):,} SKUs, "
            f"{figures.get('duration_s')} s of traffic offered at {figures.get('offered_rate')} "
            f"events/s, {figures.get('events'):,} events accepted; "
            f"{_workers(figures.get('workers'))} at the start; broker storage "
            f"{figures.get('storage', '?')}; the store side (simulator and agents) at "
            f"autogroup niceness {_nice(figures)}, the agents at niceness "
            f"{figures.get('agent_nice', 19)} inside it.",
            "",
            *rows,
            "",
            "Lag figures are over the steady window (no fault), from the ledger: "
            "`applied_at - recorded_at` (centre) and `committed_at - recorded_at` (Postgres). "
            "The centre's lag splits at `sent_at`, the Kafka timestamp of the record the "
            "outlet's forwarder sent: the store side (`sent_at - recorded_at`, one clock) "
            "and the centre (`applied_at - sent_at`); "
            f"whole-run p99 including outages: {figures.get('p99_lag_ms_whole_run')} ms / "
            f"{figures.get('p99_pg_lag_ms_whole_run')} ms.",
            "",
            "## Checks",
            "",
            *check_rows,
            "",
            "## Faults",
            "",
            *fault_rows,
            "",
            f"![throughput and lag]({plot_name})",
            "",
        ]
    )
    path.write_text(text)


def plot(
    path: Path, series: list[dict[str, Any]], marks: list[Mark], t0: float, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    xs = [p["t"] - t0 for p in series]
    ax1.plot(xs, [p["events_per_s"] for p in series], color="tab:blue", label="applied events/s")
    ax1.set_ylabel("events/s")
    ax1.legend(loc="upper left")
    ax2.plot(xs, [p["p99_ms"] for p in series], color="tab:orange", label="p99 lag → centre")
    ax2.plot(xs, [p["p99_pg_ms"] for p in series], color="tab:green", label="p99 lag → Postgres")
    ax2.set_yscale("symlog", linthresh=1000)
    ax2.set_ylabel("ms (per 5 s of apply time)")
    ax2.set_xlabel("seconds since traffic started")
    ax2.legend(loc="upper left")
    colors = ["tab:red", "tab:purple", "tab:brown", "tab:gray", "tab:olive", "tab:cyan", "k"]
    kinds = sorted({m.kind for m in marks})
    for m in marks:
        color = colors[kinds.index(m.kind) % len(colors)]
        for ax in (ax1, ax2):
            if m.end - m.start > 2:
                ax.axvspan(m.start - t0, m.end - t0, color=color, alpha=0.12)
            ax.axvline(m.start - t0, color=color, alpha=0.7, lw=1)
        ax1.annotate(
            m.kind, (m.start - t0, 1), xycoords=("data", "axes fraction"),
            rotation=90, va="top", ha="right", fontsize=7, color=color,
        )  # fmt: skip
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
