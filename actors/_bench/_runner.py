"""One benchmark run: limits, the cell matrix, recovery, flush and memory, in one process.

Every step writes on the same store (a fresh table each) and the same file system, one after
another, so a noisy neighbour slows the limits and the cache alike and the ratios hold.
"""

from __future__ import annotations

import os
import platform
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from . import _limits, _many
from ._cells import Cell, CellResult, matrix, run_cell
from ._coalescing import Replay, ReplayResult, replay
from ._recovery import (
    FlushResult,
    RecoveryResult,
    memory_per_million,
    time_flush,
    time_recovery,
    write_journal,
)
from ._stores import StoreTarget


@attrs.frozen
class Sizes:
    """How long and how big each step is, for one of the three scales."""

    name: str
    cell_seconds: float
    probe_seconds: float
    journal_records: int  # for the journal-alone group-commit figure
    recovery_records: tuple[int, ...]
    flush_records: int
    memory_keys: int

    @classmethod
    def for_scale(cls, quick: bool, tiny: bool) -> Sizes:
        if tiny:  # for the test suite: checks the plumbing, not the machine
            return cls("tiny", 0.15, 0.1, 300, (2_000,), 2_000, 2_000)
        if quick:
            return cls("quick", 1.2, 0.5, 5_000, (100_000,), 100_000, 20_000)
        return cls("full", 3.0, 1.5, 20_000, (100_000, 1_000_000), 100_000, 200_000)


@attrs.define
class BenchRun:
    """Everything one run measured (what the table, the JSON and the plot are made from)."""

    store: str
    store_kind: str
    scale: str
    seed: int
    cell_seconds: float
    machine: dict[str, Any] = attrs.field(factory=dict)
    limits: dict[str, float] = attrs.field(factory=dict)
    cells: list[CellResult] = attrs.field(factory=list)
    # Limits measured right before a cell (fsync cells), compared with it in preference.
    paired: dict[Cell, dict[str, float]] = attrs.field(factory=dict)
    recovery: list[RecoveryResult] = attrs.field(factory=list)
    flush: FlushResult | None = None
    flush_paired_rows_s: float | None = None  # the store's raw batched rate just before it
    # The Zipf fsync 64w cell's rate and length replayed through the shard cores (a count).
    coalescing_replay: ReplayResult | None = None
    memory_per_million_keys_mib: float = 0.0
    memory_value_bytes: int = 100
    wall_seconds: float = 0.0

    def limit(self, name: str, cell: Cell | None = None) -> float | None:
        """A limit: the one measured right before ``cell`` if there is one, else the run's."""
        if cell is not None and name in self.paired.get(cell, {}):
            return self.paired[cell][name]
        return self.limits.get(name)

    def cell(self, mode: str, workload: str, writers: int, value_bytes: int = 100
             ) -> CellResult | None:
        wanted = Cell(mode, workload, writers, value_bytes)
        return next((c for c in self.cells if c.cell == wanted), None)


Step = tuple[str, Callable[[], Any]]


def machine_facts(directory: Path, target: StoreTarget) -> dict[str, Any]:
    """What the figures were measured on."""
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "trio": trio.__version__,
        "sqlite": sqlite3.sqlite_version,
        "filesystem": _filesystem(directory),
        "load_average_at_start": os.getloadavg(),
    }
    if target.kind == "postgresql":
        import psycopg

        with psycopg.connect(target.url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            facts["postgresql"] = row[0] if row else "unknown"
    return facts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(directory: Path) -> str:
    """The type of the mount holding ``directory`` (longest mount point that prefixes it)."""
    path = str(directory.resolve())
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount, fstype = parts[1], parts[2]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return kind


def plan(run: BenchRun, target: StoreTarget, root: Path, sizes: Sizes, quick: bool) -> list[Step]:
    """The run as a list of named steps (the progress bar counts them)."""
    seed = run.seed
    probe = sizes.probe_seconds
    steps: list[Step] = []

    def limit(name: str, fn: Callable[[], float]) -> None:
        def step() -> None:
            run.limits[name] = fn()
        steps.append((f"limit: {name}", step))

    def sync_probe() -> None:
        found = _limits.fdatasync_probe(str(root), probe)
        run.limits.update(fdatasync_p50_ms=found.p50_ms, fdatasync_p99_ms=found.p99_ms,
                          fdatasync_per_s=found.per_s)

    def store_probe() -> None:
        rates = _limits.store_rates(target, batch=512, value_bytes=100, seconds=2 * probe)
        run.limits.update(store_batch_rows_s=rates.batch_rows_s,
                          store_one_row_tx_s=rates.one_row_tx_s)

    steps.append(("limit: fdatasync", sync_probe))
    limit("trio_round_trip_s", lambda: trio.run(_limits.trio_round_trip, probe))
    for writers in (64, 1):
        def group_commit(writers: int = writers) -> None:
            found = trio.run(_limits.group_commit_loop, str(root), writers, 2 * probe)
            run.limits.update(_loop_limits(writers, found))
        steps.append((f"limit: group commit, {writers}w", group_commit))
    limit("journal_alone_64w_acks_s", lambda: _limits.journal_group_commit(
        str(root / "journal-alone"), sizes.journal_records, 64))
    steps.append(("limit: store upserts", store_probe))

    for index, cell in enumerate(matrix(quick)):
        def cell_step(cell: Cell = cell, index: int = index) -> None:
            if cell.mode == "fsync":
                # The shared disk's latency drifts over minutes: measure the limits the fsync
                # cells are compared with right before each one, so the ratio is paired.
                found = _limits.fdatasync_probe(str(root), probe / 2)
                loop = trio.run(_limits.group_commit_loop, str(root), cell.writers, probe)
                run.paired[cell] = {
                    "fdatasync_p50_ms": found.p50_ms,
                    "fdatasync_p99_ms": found.p99_ms,
                    **_loop_limits(cell.writers, loop),
                }
            if cell.mode == "memory":
                run.paired[cell] = {
                    "trio_round_trip_s": trio.run(_limits.trio_round_trip, probe / 2),
                }
            run.cells.append(trio.run(lambda: run_cell(
                cell, target, root, seconds=sizes.cell_seconds, seed=seed, index=index)))
        steps.append((f"{cell.mode:<7} {cell.label}", cell_step))

    def replay_step() -> None:
        zipf = run.cell("fsync", "zipf", 64)
        if zipf is not None and zipf.puts:
            run.coalescing_replay = replay(Replay(
                puts_per_s=zipf.puts / zipf.seconds, seconds=zipf.seconds, seed=seed))
    steps.append(("coalescing: the Zipf cell replayed through the shard cores", replay_step))

    for count in sizes.recovery_records:
        journal_root = root / f"recovery-{count}"
        shard_dir = journal_root / "shard-0000"

        def recovery_step(count: int = count, shard_dir: Path = shard_dir) -> None:
            trio.run(write_journal, shard_dir, count, 100, seed)
            run.recovery.append(trio.run(time_recovery, shard_dir, count))
        steps.append((f"recovery: {count:,} records", recovery_step))
        if count == sizes.flush_records:
            def flush_step(journal_root: Path = journal_root, count: int = count) -> None:
                # Paired like the fsync cells: the store's raw rate right before the flush.
                rates = _limits.store_rates(target, batch=512, value_bytes=100, seconds=probe)
                run.flush_paired_rows_s = rates.batch_rows_s
                run.flush = trio.run(time_flush, journal_root, target, count)
            steps.append((f"flush: {count:,} dirty keys", flush_step))

    def many_step() -> None:
        found = trio.run(lambda: _many.put_many_vs_single(
            target, root / "put-many", seconds=sizes.cell_seconds, seed=seed))
        run.limits.update(put_single_keys_s=found.put_single_keys_s,
                          put_many_100_keys_s=found.put_many_keys_s)
    steps.append((f"put_many: {_many.KEYS_PER_CALL} keys per call vs single puts, "
                  f"{_many.CALLERS} callers", many_step))

    def memory_step() -> None:
        run.memory_per_million_keys_mib = trio.run(
            memory_per_million, root / "memory", sizes.memory_keys, run.memory_value_bytes, seed)
    steps.append((f"memory: {sizes.memory_keys:,} keys", memory_step))
    return steps


def _loop_limits(writers: int, found: _limits.LoopResult) -> dict[str, float]:
    return {
        f"group_commit_{writers}w_acks_s": found.acks_s,
        f"group_commit_{writers}w_p50_ms": found.p50_ms,
        f"group_commit_{writers}w_p99_ms": found.p99_ms,
    }


#: fdatasync p50 at or above this is a slow-disk regime: the disk, not the CPU per put,
#: then sets the pace, and the ratios against the group-commit loop move (specs/performance.md).
SLOW_DISK_MS = 1.0


def disk_regime(run: BenchRun) -> str:
    """``fast`` or ``slow``: which regime the run's disk was in (its fdatasync p50)."""
    p50 = run.limits.get("fdatasync_p50_ms")
    if p50 is None:
        return "unknown"
    return "slow" if p50 >= SLOW_DISK_MS else "fast"


def execute(steps: list[Step], progress: Callable[[str], None]) -> None:
    for name, step in steps:
        progress(name)
        step()
    progress("done")
