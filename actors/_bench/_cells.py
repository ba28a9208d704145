"""One cell of the matrix: an ack mode, a workload, a writer count and a value size, run on a
fresh cache (fresh table, fresh journal) for a fixed wall-clock time."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import attrs
import trio

from .._core._config import Config
from .._open import open_cache
from ._latency import Latencies
from ._stores import StoreTarget
from ._workloads import WORKLOADS, key_chooser, value_pool

MODES = ("store", "fsync", "journal", "memory")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@attrs.frozen
class Cell:
    mode: str
    workload: str
    writers: int
    value_bytes: int

    @property
    def label(self) -> str:
        return f"{self.workload}/{self.writers}w/{self.value_bytes}B"


@attrs.frozen
class CellResult:
    cell: Cell
    seconds: float
    ops: int
    puts: int
    throughput_ops_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    store_writes_per_op: float  # rows the store wrote (after the final flush) / acked puts
    store_transactions_per_op: float
    flush_rows_s: float  # rows the store wrote during the timed window, per second
    peak_rss_mib: float  # highest RSS sampled during the cell (20 Hz)
    rss_growth_mib: float  # that peak minus the RSS when the cell started


def rss_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


async def _sample_rss(peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], rss_bytes())
        await trio.sleep(0.05)


async def run_cell(
    cell: Cell, target: StoreTarget, root: Path, *, seconds: float, seed: int, index: int
) -> CellResult:
    """Run ``cell`` for ``seconds``, then flush; the flush is not in the throughput."""
    workload = WORKLOADS[cell.workload]
    table = target.table(f"c{index}")
    config = Config(
        store=target.url, store_table=table, journal_dir=root / f"cell-{index}",
        ack=cell.mode,  # type: ignore[arg-type]
        seed=seed,
    )
    samples: list[float] = []  # per-put seconds; into the histogram after the clock stops
    counts = {"ops": 0, "puts": 0}
    start_rss = rss_bytes()
    peak = [start_rss]
    # Every writer's generator is made before the clock starts (the first builds the key
    # names and the Zipf CDF, which would otherwise land in the measurement).
    rngs = [random.Random(seed * 1_000_003 + i) for i in range(cell.writers)]
    choosers = [key_chooser(workload, rng) for rng in rngs]
    pools = [value_pool(rng, cell.value_bytes) for rng in rngs]
    async with open_cache(config) as cache:
        async with trio.open_nursery() as sampler:
            sampler.start_soon(_sample_rss, peak)
            began = time.perf_counter()
            deadline = began + seconds

            async def writer(i: int) -> None:
                rng, next_key, values = rngs[i], choosers[i], pools[i]
                reads = workload.read_fraction
                ops = puts = 0
                while True:
                    start = time.perf_counter()
                    if start >= deadline:
                        break
                    key = next_key()
                    if reads and rng.random() < reads:
                        await cache.get(key)
                    else:
                        await cache.put(key, values[ops & 63])
                        samples.append(time.perf_counter() - start)
                        puts += 1
                    ops += 1
                counts["ops"] += ops
                counts["puts"] += puts

            async with trio.open_nursery() as writers:
                for i in range(cell.writers):
                    writers.start_soon(writer, i)
            elapsed = time.perf_counter() - began
            during = cache.statistics()
            await cache.flush()
            after = cache.statistics()
            sampler.cancel_scope.cancel()
    target.drop(table)
    target.created.remove(table)
    lat = Latencies()
    for sample in samples:
        lat.record(sample)
    puts = max(1, counts["puts"])
    return CellResult(
        cell=cell,
        seconds=elapsed,
        ops=counts["ops"],
        puts=counts["puts"],
        throughput_ops_s=counts["ops"] / elapsed,
        p50_ms=lat.percentile_ms(50),
        p99_ms=lat.percentile_ms(99),
        p999_ms=lat.percentile_ms(99.9),
        store_writes_per_op=sum(s.records for s in after.stores) / puts,
        store_transactions_per_op=sum(s.batches for s in after.stores) / puts,
        flush_rows_s=sum(s.records for s in during.stores) / elapsed,
        peak_rss_mib=peak[0] / 2**20,
        rss_growth_mib=(peak[0] - start_rss) / 2**20,
    )


def matrix(quick: bool) -> list[Cell]:
    """Every cell of a full run, or the reduced set of ``--quick`` (what the targets need)."""
    if quick:
        shapes = [("uniform", 64, 100), ("zipf", 64, 100), ("uniform", 1, 100)]
    else:
        shapes = [
            (w, n, v)
            for v in (100, 4096)
            for n in (64, 1)
            for w in ("uniform", "zipf", "read-mostly")
        ]
    return [Cell(mode, w, n, v) for (w, n, v) in shapes for mode in MODES]
