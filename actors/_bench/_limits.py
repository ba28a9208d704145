"""The machine's limits, measured in the same run as the cache so ratios survive noise.

- raw ``fdatasync`` latency and rate on the journal's file system;
- a bare trio request/reply round trip between two tasks;
- a minimal trio group-commit loop: writers append and wait on one event per batch, one
  committer writes, fdatasyncs (one thread hop) and wakes them all; its acks/s and its own
  ack latency p50/p99 (what the cache's p99 is held against);
- the journal's own group commit alone (:mod:`writebehind._journal.bench`);
- the store's raw batched versioned upsert (rows/s) and one-row transactions (commits/s).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import attrs
import trio

from .._core._messages import StoreRecord
from . import _journal as journal_bench
from ._latency import Latencies
from ._stores import StoreTarget

_RECORD = b"r" * 100


@attrs.frozen
class SyncProbe:
    p50_ms: float
    p99_ms: float
    per_s: float


def fdatasync_probe(directory: str, seconds: float) -> SyncProbe:
    """Append 100 bytes and fdatasync, over and over, for ``seconds`` (blocking)."""
    path = os.path.join(directory, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lat = Latencies()
    try:
        began = time.perf_counter()
        deadline = began + seconds
        count = 0
        while True:
            start = time.perf_counter()
            if start >= deadline and count >= 20:
                break
            os.write(fd, _RECORD)
            os.fdatasync(fd)
            lat.record(time.perf_counter() - start)
            count += 1
        elapsed = time.perf_counter() - began
    finally:
        os.close(fd)
        os.unlink(path)
    return SyncProbe(lat.percentile_ms(50), lat.percentile_ms(99), count / elapsed)


async def trio_round_trip(seconds: float) -> float:
    """Request/reply round trips per second between two trio tasks over memory channels."""
    req_send, req_recv = trio.open_memory_channel[int](1)
    rep_send, rep_recv = trio.open_memory_channel[int](1)

    async def server() -> None:
        async for request in req_recv:
            await rep_send.send(request)

    count = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline or count < 100:
            await req_send.send(count)
            await rep_recv.receive()
            count += 1
        elapsed = time.perf_counter() - began
        nursery.cancel_scope.cancel()
    return count / elapsed


def _write_and_sync(fd: int, data: bytes) -> None:
    os.write(fd, data)
    os.fdatasync(fd)


@attrs.frozen
class LoopResult:
    """The minimal group commit's durable acks per second and its own ack latency."""

    acks_s: float
    p50_ms: float
    p99_ms: float


async def group_commit_loop(directory: str, writers: int, seconds: float) -> LoopResult:
    """Durable acks per second of the smallest correct group commit on trio, and each ack's
    latency (append to wake-up): the fair pair for the cache's own p99."""
    path = os.path.join(directory, f"group-commit-{writers}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buffer = bytearray()
    batch_done = trio.Event()  # set when the batch now filling is durable
    work = trio.Event()
    acks = 0
    latencies = Latencies()
    deadline = time.perf_counter() + seconds

    async def committer() -> None:
        nonlocal buffer, batch_done, work
        while True:
            if not buffer:
                work = trio.Event()
                await work.wait()
            data, buffer = bytes(buffer), bytearray()
            done, batch_done = batch_done, trio.Event()
            await trio.to_thread.run_sync(_write_and_sync, fd, data)
            done.set()

    async def writer() -> None:
        nonlocal acks
        # At least one ack each, so a machine too busy to start the writers before the
        # deadline still measures something (a figure of 0 is no limit).
        done = 0
        while (start := time.perf_counter()) < deadline or not done:
            done += 1
            buffer.extend(_RECORD)
            work.set()
            await batch_done.wait()
            latencies.record(time.perf_counter() - start)
            acks += 1

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(committer)
            began = time.perf_counter()
            async with trio.open_nursery() as inner:
                for _ in range(writers):
                    inner.start_soon(writer)
            elapsed = time.perf_counter() - began
            nursery.cancel_scope.cancel()
    finally:
        os.close(fd)
        os.unlink(path)
    return LoopResult(acks / elapsed, latencies.percentile_ms(50), latencies.percentile_ms(99))


def journal_group_commit(directory: str, records: int, writers: int) -> float:
    """The journal alone (its own benchmark's loop): appends + wait_synced per second."""
    rate, _ = trio.run(journal_bench._run, directory, records, writers)
    return rate


@attrs.frozen
class StoreRates:
    batch_rows_s: float  # raw batched versioned upsert, rows per second of write_batch
    one_row_tx_s: float  # one upsert per transaction: the write-through ceiling


def store_rates(
    target: StoreTarget, *, batch: int, value_bytes: int, seconds: float
) -> StoreRates:
    """Drive the store's ``write_batch`` directly (blocking: run it in a worker thread)."""
    table = target.table("raw")
    store = target.connect(table)
    value = b"s" * value_bytes
    try:
        batch_rate = _rate(store.write_batch, batch, value, seconds, "raw")
        tx_rate = _rate(store.write_batch, 1, value, seconds / 2, "tx")
    finally:
        store.close()
        target.drop(table)
        target.created.remove(table)
    return StoreRates(batch_rate, tx_rate)


def _rate(
    write: Callable[[list[StoreRecord]], object], size: int, value: bytes, seconds: float,
    prefix: str,
) -> float:
    """Rows per second spent inside ``write`` (building the records is not timed)."""
    spent = 0.0
    rows = 0
    version = 1
    while spent < seconds or rows < 4 * size:
        records = [StoreRecord(f"{prefix}-{rows + i}", value, version + i) for i in range(size)]
        version += size
        start = time.perf_counter()
        write(records)
        spent += time.perf_counter() - start
        rows += size
    return rows / spent
