"""What a run shows: the targets with pass/miss, rich tables, the JSON and the PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from .._core._config import Config
from ._cells import MODES, CellResult
from ._runner import SLOW_DISK_MS, BenchRun, disk_regime
from ._workloads import WORKLOADS, ideal_rows_per_put


@attrs.frozen
class Target:
    """One row of the issue's targets table: ``measured`` against ``bound``."""

    name: str
    measured: float | None  # None: the run did not measure it (say so, never pass it)
    bound: float
    at_least: bool  # True: measured >= bound passes; False: measured <= bound passes
    unit: str = "x"

    @property
    def ok(self) -> bool:
        if self.measured is None or math.isnan(self.measured):
            return False
        return self.measured >= self.bound if self.at_least else self.measured <= self.bound

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "NOT MEASURED"
        return "PASS" if self.ok else "MISS"

    def describe_bound(self) -> str:
        sign = ">=" if self.at_least else "<="
        return f"{sign} {_num(self.bound)}{self.unit if self.unit == 'x' else ' ' + self.unit}"


def _of(found: object, name: str) -> float | None:
    """``found.name`` as a float, or None when the run did not measure ``found``."""
    return None if found is None else float(getattr(found, name))


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom <= 0:
        return None
    return top / bottom


def targets(run: BenchRun) -> list[Target]:
    """The performance issue's targets, each computed from figures of this one run."""
    lim = run.limits
    fsync64 = run.cell("fsync", "uniform", 64)
    fsync1 = run.cell("fsync", "uniform", 1)
    through64 = run.cell("store", "uniform", 64)
    zipf = run.cell("fsync", "zipf", 64)

    def limit(name: str, found: CellResult | None) -> float | None:
        return run.limit(name, found.cell if found is not None else None)

    floor = coalescing(run)
    recovered = min((r.records_per_s for r in run.recovery), default=None)
    return [
        Target("ack=fsync 64w throughput vs minimal group-commit loop",
               _ratio(_of(fsync64, "throughput_ops_s"),
                      limit("group_commit_64w_acks_s", fsync64)),
               0.6, True),
        Target(f"ack=fsync 64w throughput vs write-through ({run.store_kind})",
               _ratio(_of(fsync64, "throughput_ops_s"),
                      _of(through64, "throughput_ops_s")), 10, True),
        Target("ack=fsync p99 (64 writers) vs the minimal loop's own p99 (64 writers)",
               _ratio(_of(fsync64, "p99_ms"), limit("group_commit_64w_p99_ms", fsync64)),
               2, False),
        Target("ack=fsync p99 (1 writer) vs raw fdatasync p99",
               _ratio(_of(fsync1, "p99_ms"), limit("fdatasync_p99_ms", fsync1)), 3, False),
        Target("flush throughput vs raw batched upsert",
               _ratio(_of(run.flush, "rows_s"),
                      run.flush_paired_rows_s or lim.get("store_batch_rows_s")), 0.8, True),
        Target("store rows per put, Zipf(1.1) fsync 64w, vs a perfect coalescer's floor",
               _ratio(_of(zipf, "store_writes_per_op"),
                      None if floor is None else floor["ideal_rows_per_put_for_cell"]),
               1.1, False),
        Target("put_many (100 keys per call) vs 100 single puts, keys/s",
               _ratio(lim.get("put_many_100_keys_s"), lim.get("put_single_keys_s")), 5, True),
        Target("recovery (slowest size)", recovered, 300_000, True, "records/s"),
    ]


def coalescing(run: BenchRun) -> dict[str, float] | None:
    """For the Zipf ack=fsync 64w cell: measured rows/put against what a perfect coalescer
    would reach flushing every ``flush_interval`` (0.5 s) or once per batch the cache sent.

    The target's floor is the one for the cell as it ran: whole windows of the interval and
    the partial last one, since the cell's rows are counted after its final flush (a 1.2 s
    cell is 2.4 windows; the steady-state floor leaves the last 0.4 out and reads ≈4% low).
    """
    zipf = run.cell("fsync", "zipf", 64)
    if zipf is None or not zipf.puts:
        return None
    defaults = Config()
    interval = defaults.flush_interval
    rate = zipf.puts / zipf.seconds
    per_window = rate * interval
    whole = math.floor(zipf.seconds / interval)
    last = rate * (zipf.seconds - whole * interval)
    workload = WORKLOADS["zipf"]
    cell_rows = (whole * ideal_rows_per_put(workload, per_window) * per_window
                 + ideal_rows_per_put(workload, last) * last)
    # Each shard batches its own keys: while one shard fills a batch, every shard takes puts.
    per_batch = (defaults.shards / zipf.store_transactions_per_op
                 if zipf.store_transactions_per_op else 0.0)
    found: dict[str, float] = {
        "measured_rows_per_put": zipf.store_writes_per_op,
        "flush_interval_s": interval,
        "cell_seconds": zipf.seconds,
        "puts_per_flush_interval": per_window,
        "ideal_rows_per_put_per_flush_interval": ideal_rows_per_put(workload, per_window),
        "ideal_rows_per_put_for_cell": cell_rows / zipf.puts,
        "puts_per_store_batch": per_batch,
        "ideal_rows_per_put_per_store_batch": ideal_rows_per_put(workload, per_batch),
    }
    replayed = run.coalescing_replay
    if replayed is not None:
        found.update(
            replay_rows_per_put=replayed.rows_per_put,
            replay_floor_rows_per_put=replayed.floor_rows_per_put,
            replay_batches_per_put=replayed.batches / replayed.puts,
        )
    return found


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.01:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _shown(t: Target) -> str:
    """``t.measured`` rounded toward failing, so the figure shown never contradicts the
    verdict (0.7996 against ">= 0.8" shows as 0.799, not 0.80)."""
    assert t.measured is not None
    if t.measured >= 100:
        return _num(t.measured)
    scaled = t.measured * 1000
    shown = (math.floor(scaled) if t.at_least else math.ceil(scaled)) / 1000
    return f"{shown:.3f}"


def tables(run: BenchRun) -> list[Table]:
    """The limits, the cells (with ratios), the other figures and the targets."""
    lim = run.limits
    limits = Table(title=f"Limits of this machine, measured in this run ({run.scale} run; "
                         f"{disk_regime(run)} disk: fdatasync p50 "
                         f"{_num(lim.get('fdatasync_p50_ms'))} ms)")
    limits.add_column("limit")
    limits.add_column("figure", justify="right")
    rows = [
        ("raw fdatasync p50 / p99", f"{_num(lim.get('fdatasync_p50_ms'))} / "
         f"{_num(lim.get('fdatasync_p99_ms'))} ms"),
        ("raw fdatasync rate", f"{_num(lim.get('fdatasync_per_s'))} /s"),
        ("trio request/reply round trip", f"{_num(lim.get('trio_round_trip_s'))} /s"),
        ("minimal group commit, 64 writers", _loop(lim, 64)),
        ("minimal group commit, 1 writer", _loop(lim, 1)),
        ("journal alone, 64 writers", f"{_num(lim.get('journal_alone_64w_acks_s'))} acks/s"),
        (f"{run.store_kind} batched upsert (512/tx)",
         f"{_num(lim.get('store_batch_rows_s'))} rows/s"),
        (f"{run.store_kind} one upsert per tx", f"{_num(lim.get('store_one_row_tx_s'))} tx/s"),
    ]
    for name, unit in (("fdatasync_p50_ms", "ms"), ("group_commit_64w_acks_s", "acks/s"),
                       ("trio_round_trip_s", "/s")):
        paired = [v[name] for v in run.paired.values() if name in v]
        if paired:
            rows.append((f"  {name} before each paired cell (min-max)",
                         f"{_num(min(paired))}-{_num(max(paired))} {unit}"))
    for row in rows:
        limits.add_row(*row)

    cells = Table(title=f"Side by side on {run.store} ({run.cell_seconds:g} s per cell, "
                        f"seed {run.seed})")
    cells.caption = (
        "xWT: ops/s over write-through's in the same cell; xGC: over the minimal group commit "
        "with as many writers (fsync cells: measured right before the cell, as is their "
        "fdatasync p50 and memory cells' round trip); latencies are per put, call to return; "
        "p99/sync: p99 over raw fdatasync p50; rows/put: rows the store wrote per acked put, "
        "final flush included"
    )
    cells.add_column("mode")
    cells.add_column("workload/writers/value")
    for name in ("ops/s", "xWT", "xGC", "p50 ms", "p99 ms", "p99.9 ms", "p99/sync",
                 "rows/put", "flush rows/s", "RSS MiB"):
        cells.add_column(name, justify="right")
    for c in run.cells:
        through = run.cell("store", c.cell.workload, c.cell.writers, c.cell.value_bytes)
        group = run.limit(f"group_commit_{c.cell.writers}w_acks_s", c.cell)
        sync_p50 = run.limit("fdatasync_p50_ms", c.cell)
        cells.add_row(
            c.cell.mode, c.cell.label, _num(c.throughput_ops_s),
            _num(_ratio(c.throughput_ops_s, _of(through, "throughput_ops_s"))),
            _num(_ratio(c.throughput_ops_s, group)),
            _num(c.p50_ms), _num(c.p99_ms), _num(c.p999_ms), _num(_ratio(c.p99_ms, sync_p50)),
            _num(c.store_writes_per_op), _num(c.flush_rows_s), _num(c.peak_rss_mib),
        )

    other = Table(title="Recovery, flush and memory")
    other.add_column("figure")
    other.add_column("value", justify="right")
    for r in run.recovery:
        other.add_row(f"recovery, {r.records:,} unflushed records (open + replay)",
                      f"{_num(r.records_per_s)} records/s ({r.seconds:.2f} s)")
        other.add_row("  the same per second of CPU time (what load does not change)",
                      f"{_num(r.records_per_cpu_s)} records/s ({r.cpu_seconds:.2f} s)")
    if run.flush is not None:
        f = run.flush
        other.add_row(f"cache start on {f.rows:,} journaled records", f"{f.start_seconds:.2f} s")
        other.add_row(f"flush of {f.rows:,} dirty keys", f"{_num(f.rows_s)} rows/s")
        other.add_row("  the store's raw batched upsert just before it",
                      f"{_num(run.flush_paired_rows_s)} rows/s")
    floor = coalescing(run)
    if floor is not None:
        other.add_row(
            "Zipf(1.1) fsync 64w: a perfect coalescer's rows/put, flushing every "
            f"{floor['flush_interval_s']:g} s ({_num(floor['puts_per_flush_interval'])} puts)",
            _num(floor["ideal_rows_per_put_per_flush_interval"]))
        other.add_row(
            f"  ... over this cell's {floor['cell_seconds']:.2f} s, its final flush included "
            "(the target's floor)", _num(floor["ideal_rows_per_put_for_cell"]))
        other.add_row(
            "  ... flushing as often as each shard did "
            f"({_num(floor['puts_per_store_batch'])} puts between a shard's batches)",
            _num(floor["ideal_rows_per_put_per_store_batch"]))
        if "replay_rows_per_put" in floor:
            other.add_row(
                "  the cell's rate and length replayed through the shard cores (fake clock): "
                "rows/put vs the floor over that trace",
                f"{floor['replay_rows_per_put']:.3f} vs {floor['replay_floor_rows_per_put']:.3f}")
    other.add_row(f"memory per million clean keys ({run.memory_value_bytes} B values)",
                  f"{_num(run.memory_per_million_keys_mib)} MiB")

    goals = Table(title="Targets (ratios from this one run)")
    goals.add_column("target")
    goals.add_column("measured", justify="right")
    goals.add_column("bound", justify="right")
    goals.add_column("verdict")
    for t in targets(run):
        colour = "green" if t.ok else "red"
        unit = "x" if t.unit == "x" else f" {t.unit}"
        measured = "-" if t.measured is None else f"{_shown(t)}{unit}"
        goals.add_row(t.name, measured, t.describe_bound(), f"[{colour}]{t.verdict}[/]")
    return [limits, cells, other, goals]


def _loop(lim: dict[str, float], writers: int) -> str:
    return (f"{_num(lim.get(f'group_commit_{writers}w_acks_s'))} acks/s, p50/p99 "
            f"{_num(lim.get(f'group_commit_{writers}w_p50_ms'))}/"
            f"{_num(lim.get(f'group_commit_{writers}w_p99_ms'))} ms")


def print_report(run: BenchRun, console: Console) -> None:
    for table in tables(run):
        console.print(table)
    console.print(f"{run.scale} run took {run.wall_seconds:.1f} s; load average at start "
                  f"{run.machine.get('load_average_at_start')}; {disk_regime(run)}-disk regime "
                  f"(fdatasync p50 {_num(run.limits.get('fdatasync_p50_ms'))} ms; slow from "
                  f"{SLOW_DISK_MS:g} ms)")


def to_json(run: BenchRun) -> dict[str, Any]:
    """Plain data: per mode and workload the throughput, latency and coalescing; the limits."""
    return {
        "store": run.store,
        "store_kind": run.store_kind,
        "scale": run.scale,
        "seed": run.seed,
        "cell_seconds": run.cell_seconds,
        "wall_seconds": run.wall_seconds,
        "machine": run.machine,
        "disk_regime": disk_regime(run),
        "limits": run.limits,
        "runs": [
            {
                "mode": c.cell.mode, "workload": c.cell.workload, "writers": c.cell.writers,
                "value_bytes": c.cell.value_bytes,
                "paired_limits": run.paired.get(c.cell, {}),
                **attrs.asdict(c, filter=lambda a, _: a.name != "cell"),
            }
            for c in run.cells
        ],
        "recovery": [
            {"records": r.records, "seconds": r.seconds, "records_per_s": r.records_per_s,
             "cpu_seconds": r.cpu_seconds, "records_per_cpu_s": r.records_per_cpu_s}
            for r in run.recovery
        ],
        "flush": None if run.flush is None else {
            "rows": run.flush.rows, "start_seconds": run.flush.start_seconds,
            "flush_seconds": run.flush.flush_seconds, "rows_s": run.flush.rows_s,
            "paired_store_batch_rows_s": run.flush_paired_rows_s,
        },
        "memory_per_million_keys_mib": run.memory_per_million_keys_mib,
        "coalescing": coalescing(run),
        "memory_value_bytes": run.memory_value_bytes,
        "targets": [
            {"name": t.name, "measured": t.measured, "bound": t.bound,
             "at_least": t.at_least, "unit": t.unit, "verdict": t.verdict}
            for t in targets(run)
        ],
    }


def write_json(run: BenchRun, path: Path) -> None:
    path.write_text(json.dumps(to_json(run), indent=2) + "\n")


def write_plot(run: BenchRun, path: Path) -> None:
    """Throughput (log scale) and p50/p99 ack latency per mode, one group of bars per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(c.cell.label for c in run.cells))
    modes = [m for m in MODES if any(c.cell.mode == m for c in run.cells)]
    width = 0.8 / max(1, len(modes))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 1.2 * len(labels)), 8))
    for i, mode in enumerate(modes):
        xs, tput, p50, p99 = [], [], [], []
        for j, label in enumerate(labels):
            found = next((c for c in run.cells if c.cell.mode == mode and c.cell.label == label),
                         None)
            if found is not None:
                xs.append(j + (i - (len(modes) - 1) / 2) * width)
                tput.append(found.throughput_ops_s)
                p50.append(max(found.p50_ms, 1e-3))
                p99.append(max(found.p99_ms, 1e-3))
        top.bar(xs, tput, width, label=f"ack={mode}")
        bottom.bar(xs, p99, width, label=f"ack={mode} p99", alpha=0.5)
        bottom.scatter(xs, p50, marker="_", s=200, color="black")
    for ax, ylabel in ((top, "ops/s"), (bottom, "ack latency ms (bar p99, tick p50)")):
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
    for name in ("group_commit_64w_acks_s", "trio_round_trip_s"):
        if name in run.limits:
            top.axhline(run.limits[name], linestyle="--", linewidth=0.8, color="grey")
            top.annotate(name, (0, run.limits[name]), fontsize="x-small", color="grey")
    if "fdatasync_p50_ms" in run.limits:
        bottom.axhline(run.limits["fdatasync_p50_ms"], linestyle="--", linewidth=0.8,
                       color="grey")
        bottom.annotate("fdatasync p50", (0, run.limits["fdatasync_p50_ms"]),
                        fontsize="x-small", color="grey")
    top.set_title(f"writebehind bench on {run.store_kind} ({run.scale} run, seed {run.seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
