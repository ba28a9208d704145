"""SQLite's store worker, thread against process, in alternated pairs of one run.

``writebehind bench --store-workers N``: N pairs, each running the same steps once with
``?worker=thread`` and once with ``?worker=process`` (which goes first alternates), so the
shared machine's drift falls on both alike. Per worker and pair: the flush of a journal of
dirty keys against the raw batched upsert measured right before it, and the ``fsync`` and
``memory`` cells (uniform keys, 64 writers). CPU is this process's (``process_time``: the
event loop and, with ``thread``, the store's thread; a worker process's CPU is not in it),
per flushed row and per put.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from . import _limits
from ._cells import Cell, run_cell
from ._recovery import time_flush, write_journal
from ._stores import StoreTarget

WORKERS = ("thread", "process")
CELLS = (Cell("fsync", "uniform", 64, 100), Cell("memory", "uniform", 64, 100))


@attrs.frozen
class WorkerFigures:
    """One worker's figures from one pair."""

    worker: str
    pair: int
    raw_rows_s: float  # the store's raw batched upsert, right before the flush
    flush_rows_s: float
    flush_cpu_us_per_row: float
    fsync_puts_s: float
    fsync_p99_ms: float
    fsync_cpu_us_per_put: float
    fsync_rows_per_put: float
    memory_puts_s: float
    memory_p99_ms: float
    memory_cpu_us_per_put: float

    @property
    def flush_vs_raw(self) -> float:
        return self.flush_rows_s / self.raw_rows_s


def _variant(url: str, worker: str) -> str:
    return f"{url.partition('?')[0]}?worker={worker}"


def one_worker(worker: str, pair: int, url: str, root: Path, *, records: int,
               cell_seconds: float, probe_seconds: float, seed: int) -> WorkerFigures:
    """The steps of one pair for ``worker`` (blocking: runs its own trio loops)."""
    target = StoreTarget(_variant(url, worker))
    try:
        journal_root = root / f"workers-{pair}-{worker}"
        trio.run(write_journal, journal_root / "shard-0000", records, 100, seed)
        raw = _limits.store_rates(target, batch=512, value_bytes=100, seconds=probe_seconds)
        cpu = time.process_time()
        flush = trio.run(time_flush, journal_root, target, records)
        flush_cpu = time.process_time() - cpu
        cells: dict[str, Any] = {}
        for index, cell in enumerate(CELLS):
            cpu = time.process_time()
            result = trio.run(functools.partial(
                run_cell, cell, target, root / f"workers-{pair}-{worker}-cells",
                seconds=cell_seconds, seed=seed, index=index))
            cells[cell.mode] = (result, time.process_time() - cpu)
    finally:
        target.drop_all()
    (fsync, fsync_cpu), (memory, memory_cpu) = cells["fsync"], cells["memory"]
    return WorkerFigures(
        worker=worker, pair=pair,
        raw_rows_s=raw.batch_rows_s,
        flush_rows_s=flush.rows_s,
        flush_cpu_us_per_row=flush_cpu / records * 1e6,
        fsync_puts_s=fsync.throughput_ops_s,
        fsync_p99_ms=fsync.p99_ms,
        # The cell's CPU includes its final flush and cache start/stop: an upper bound.
        fsync_cpu_us_per_put=fsync_cpu / max(1, fsync.puts) * 1e6,
        fsync_rows_per_put=fsync.store_writes_per_op,
        memory_puts_s=memory.throughput_ops_s,
        memory_p99_ms=memory.p99_ms,
        memory_cpu_us_per_put=memory_cpu / max(1, memory.puts) * 1e6,
    )


def alternated(pairs: int, url: str, root: Path, *, records: int, cell_seconds: float,
               probe_seconds: float, seed: int,
               progress: Callable[[str], None] = lambda name: None) -> list[WorkerFigures]:
    """``pairs`` alternated pairs of :func:`one_worker`, thread first in even pairs."""
    found: list[WorkerFigures] = []
    for pair in range(pairs):
        order = WORKERS if pair % 2 == 0 else WORKERS[::-1]
        for worker in order:
            progress(f"pair {pair + 1}/{pairs}: {worker}")
            found.append(one_worker(worker, pair, url, root, records=records,
                                    cell_seconds=cell_seconds, probe_seconds=probe_seconds,
                                    seed=seed))
    return found


#: (label, field or property, format) of each figure in the summary.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("flush rows/s", "flush_rows_s", "{:,.0f}"),
    ("raw batched upsert rows/s", "raw_rows_s", "{:,.0f}"),
    ("flush / raw", "flush_vs_raw", "{:.2f}x"),
    ("flush CPU µs/row (this process)", "flush_cpu_us_per_row", "{:.2f}"),
    ("fsync 64w puts/s", "fsync_puts_s", "{:,.0f}"),
    ("fsync 64w p99 ms", "fsync_p99_ms", "{:.1f}"),
    ("fsync 64w CPU µs/put (this process)", "fsync_cpu_us_per_put", "{:.1f}"),
    ("fsync 64w store rows/put", "fsync_rows_per_put", "{:.3f}"),
    ("memory 64w puts/s", "memory_puts_s", "{:,.0f}"),
    ("memory 64w p99 ms", "memory_p99_ms", "{:.2f}"),
    ("memory 64w CPU µs/put (this process)", "memory_cpu_us_per_put", "{:.1f}"),
)


def summary(found: list[WorkerFigures]) -> list[tuple[str, str, str, str]]:
    """Rows of (figure, thread median [range], process median [range], process/thread of
    the medians)."""
    rows = []
    for label, name, fmt in FIGURES:
        cells = []
        medians = []
        for worker in WORKERS:
            values = [float(getattr(f, name)) for f in found if f.worker == worker]
            median = statistics.median(values)
            medians.append(median)
            cells.append(f"{fmt.format(median)} [{fmt.format(min(values))}–"
                         f"{fmt.format(max(values))}]")
        ratio = medians[1] / medians[0] if medians[0] else float("nan")
        rows.append((label, cells[0], cells[1], f"{ratio:.2f}"))
    return rows
