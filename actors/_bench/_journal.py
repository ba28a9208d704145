"""Benchmark (not a test): group commit versus one fdatasync per record.

    python -m writebehind._journal.bench [--records N] [--dir DIR]

Both runs use the same file system (a temporary directory under ``--dir``, default the
current directory, so it measures the disk you run it on rather than a tmpfs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import trio

from .._journal._codec import RecordKind
from .._journal._journal import Journal

_VALUE = b"v" * 100


async def _run(directory: str, records: int, writers: int) -> tuple[float, list[float]]:
    journal = await Journal.open(directory, shard_id=0)
    latencies: list[float] = []
    remaining = records

    async def writer() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            seq = journal.append_nowait(RecordKind.PUT, "bench-key", _VALUE, 1)
            start = time.perf_counter()
            await journal.wait_synced(seq)
            latencies.append(time.perf_counter() - start)

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        began = time.perf_counter()
        async with trio.open_nursery() as inner:
            for _ in range(writers):
                inner.start_soon(writer)
        elapsed = time.perf_counter() - began
        journal.close()
    return records / elapsed, latencies


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> None:
    """Run both configurations and print a table."""
    parser = argparse.ArgumentParser(prog="python -m writebehind._journal.bench")
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--dir", default=".", help="where to create the temporary journal")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="writebehind-bench-", dir=args.dir)
    try:
        rows = []
        for name, writers in (("group commit, 64 writers", 64), ("fsync per record, 1 writer", 1)):
            rate, lat = trio.run(_run, os.path.join(root, f"w{writers}"), args.records, writers)
            rows.append((name, rate, statistics.median(lat) * 1000, _percentile(lat, 0.99)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.records} appends of {len(_VALUE)}-byte values, each awaited with wait_synced")
    print(f"{'configuration':<28} {'records/s':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rate, p50, p99 in rows:
        print(f"{name:<28} {rate:>11,.0f} {p50:>8.3f} {p99:>8.3f}")
    print(f"group commit / fsync per record: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
