"""Recovery speed, flush throughput and memory per cached key.

Recovery: N unflushed PUT records are appended straight to a shard's journal, then
``Journal.open`` (scan) plus ``ShardCore.replay`` is timed. Flush: a cache then starts on that
journal (its replay makes all N keys dirty at once) and ``flush()`` is timed, so the figure is the
cache's batching against the store with no workload in the way.
"""

from __future__ import annotations

import gc
import math
import random
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from .._core._config import Config
from .._core._messages import Rejection, StoreRecord
from .._core._shard_core import FlushPolicy, ShardCore
from .._journal import Journal, RecordKind
from .._journal._recovery import paused_gc
from .._open import open_cache
from .._runtime._seams import Seams
from ._stores import StoreTarget


@attrs.frozen
class RecoveryResult:
    records: int
    seconds: float  # Journal.open + ShardCore.replay
    # The process's CPU time for the same (its threads included): what the load does not
    # change, so a wall figure well above it was a busy machine, not the code.
    cpu_seconds: float = math.nan

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def records_per_cpu_s(self) -> float:
        return self.records / self.cpu_seconds


@attrs.frozen
class FlushResult:
    rows: int
    start_seconds: float  # open_cache on the N-record journal, until it serves
    flush_seconds: float

    @property
    def rows_s(self) -> float:
        return self.rows / self.flush_seconds


async def write_journal(directory: Path, records: int, value_bytes: int, seed: int) -> None:
    """Append ``records`` PUTs of distinct keys to shard 0's journal, written but unflushed."""
    journal = await Journal.open(directory, shard_id=0)
    rng = random.Random(seed)
    values = [rng.randbytes(value_bytes) for _ in range(64)]
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        seq = 0
        for i in range(records):
            seq = journal.append_nowait(RecordKind.PUT, f"rec-{i:08d}", values[i & 63], i + 1)
            if i % 10_000 == 9_999:
                await journal.wait_written(seq)
        if seq:
            await journal.wait_synced(seq)
        journal.close()


async def time_recovery(directory: Path, records: int, *, runs: int = 3) -> RecoveryResult:
    """Time opening the journal and replaying every record into a fresh shard core; the
    fastest of ``runs`` (each reopens the same journal: the shared machine's noise only ever
    adds time, so the minimum is the best estimate of the cost)."""
    best = best_cpu = math.inf
    for _ in range(runs):
        gc.collect()
        began, cpu = time.perf_counter(), time.process_time()
        journal = await Journal.open(directory, shard_id=0)
        core = ShardCore(0, 1, FlushPolicy(), max_entries=max(records, 1), rng=random.Random(0))
        with paused_gc():  # as the shard actor replays
            replayed = core.replay(journal.recovery.records, 0.0)
        best = min(best, time.perf_counter() - began)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        journal.close()
        if replayed != records:
            raise RuntimeError(f"recovery replayed {replayed} records, expected {records}")
        del journal, core
    return RecoveryResult(records, best, best_cpu)


async def time_flush(root: Path, target: StoreTarget, records: int) -> FlushResult:
    """Start a one-shard cache on ``root`` (whose ``shard-0000`` journal holds ``records``
    dirty keys: see :func:`write_journal`) and time ``flush()``."""
    table = target.table("flush")
    config = Config(store=target.url, store_table=table, journal_dir=root, shards=1)
    try:
        began = time.perf_counter()
        async with open_cache(config) as cache:
            started = time.perf_counter()
            await cache.flush()
            flushed = time.perf_counter()
            written = sum(s.records for s in cache.statistics().stores)
    finally:
        target.drop(table)
        target.created.remove(table)
    if written < records:
        raise RuntimeError(f"flush wrote {written} rows, expected {records}")
    return FlushResult(records, started - began, flushed - started)


class _NullStore:
    """Accepts everything and keeps nothing, so only the cache's own memory is traced."""

    blocking = False

    def connect(self) -> None:
        pass

    def take_epoch(self) -> int:
        return 1

    def write_batch(self, records: Sequence[StoreRecord]) -> tuple[Rejection, ...]:
        return ()

    def read(self, key: str) -> StoreRecord | None:
        return None

    def read_all(self) -> dict[str, StoreRecord]:
        return {}

    def close(self) -> None:
        pass


async def memory_per_million(root: Path, keys: int, value_bytes: int, seed: int) -> float:
    """MiB that ``keys`` clean cached entries (distinct values) cost, scaled to a million.

    Measured with tracemalloc (Python allocations: keys, values, entries, dict slots).
    """
    rng = random.Random(seed)
    config = Config(journal_dir=root, ack="memory", flush_interval=0.05)
    seams = Seams(store_factory=_NullStore)
    tracemalloc.start()
    try:
        async with open_cache(config, seams=seams) as cache:
            await cache.flush()
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            # Keys and values are made while tracing, so they count; the lists are dropped.
            names = [f"mem-{i:08d}" for i in range(keys)]
            values = [rng.randbytes(value_bytes) for _ in range(keys)]
            for i in range(keys):
                await cache.put(names[i], values[i])
                if i % 1000 == 999:
                    await trio.lowlevel.checkpoint()
            del names, values
            await cache.flush()
            await trio.sleep(0.05)  # let the journal checkpoint and drop its buffers
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            held = sum(s.entries for s in cache.statistics().shards)
    finally:
        tracemalloc.stop()
    if held != keys:
        raise RuntimeError(f"the cache holds {held} entries, expected {keys}")
    return (after - before) / keys * 1_000_000 / 2**20
