"""Coalescing replayed: a seeded Zipf put trace through the shards' pure cores on a fake clock.

The bench's Zipf cell measures store rows per put on a shared machine; this replays the same
kind of trace through :class:`ShardCore` with every timing made up (puts evenly spaced, group
commits of a fixed length, a store that takes a fixed time per transaction and per row), so
rows per put is a count that a seed reproduces exactly, and each row says why it was sent.

The floor is computed over the same trace: a perfect coalescer that writes each key once per
``flush_interval`` window it was written in, counting the last, partial window too (the cell
and this replay both end with a flush of everything dirty).
"""

from __future__ import annotations

import collections
import heapq
import random

import attrs

from .._core._routing import shard_of
from .._core._shard_core import FlushPolicy, ShardCore
from ._workloads import KEY_SPACE, WORKLOADS, key_chooser


@attrs.frozen
class Replay:
    """One replay's made-up timings (defaults: the quick Zipf cell's rate on a fast disk)."""

    puts_per_s: float = 40_000.0
    seconds: float = 3.0
    shards: int = 2
    # A record appended while one group commit syncs is durable when the next one ends.
    sync_s: float = 0.002
    store_s: float = 0.002  # per transaction (one store actor: transactions queue)
    store_row_s: float = 4e-6  # per row
    seed: int = 1
    policy: FlushPolicy = attrs.field(factory=FlushPolicy)


@attrs.frozen
class ReplayResult:
    puts: int
    rows: int
    batches: int
    # Rows by what made their batch due: "interval", "threshold", "eviction" or "final".
    rows_by_trigger: dict[str, int]
    # Rows whose key was rewritten while its previous batch was in flight.
    rows_rewritten_in_flight: int
    # Rows sent less than flush_interval after the same key's previous row.
    rows_within_interval: int
    floor_rows: int  # the perfect coalescer's rows over the same trace, last window included
    window_puts: int  # puts per flush_interval window

    @property
    def rows_per_put(self) -> float:
        return self.rows / self.puts

    @property
    def floor_rows_per_put(self) -> float:
        return self.floor_rows / self.puts

    @property
    def ratio(self) -> float:
        return self.rows / self.floor_rows


def replay(shape: Replay | None = None) -> ReplayResult:
    """Run ``shape`` (default :class:`Replay`) and count every row the cores sent."""
    shape = shape or Replay()
    policy = shape.policy
    cores = [
        ShardCore(s, 1, policy, max_entries=10 * KEY_SPACE, rng=random.Random(shape.seed + s),
                  hold_until_durable=True)
        for s in range(shape.shards)
    ]
    next_key = key_chooser(WORKLOADS["zipf"], random.Random(shape.seed))
    seqs = [0] * shape.shards
    synced_at_next = [0] * shape.shards  # what the group commit under way makes durable
    acks: list[tuple[float, int, int]] = []  # (when, shard, batch id)
    store_free = 0.0
    in_flight: collections.Counter[str] = collections.Counter()
    rewritten: set[str] = set()  # keys written while in flight, until sent again
    last_sent: dict[str, float] = {}
    by_trigger: collections.Counter[str] = collections.Counter()
    counts = {"batches": 0, "rewritten": 0, "within": 0}
    flights: dict[tuple[int, int], list[str]] = {}  # (shard, batch id) -> its keys

    def trigger(core: ShardCore) -> str:
        if core.flush_requested:
            return "final"
        if len(core.dirty) >= policy.flush_threshold:
            return "threshold"
        if len(core.entries) > core.max_entries:
            return "eviction"
        return "interval"

    def send(now: float) -> None:
        nonlocal store_free
        for core in cores:
            while True:
                why = trigger(core)
                batch = core.take_batch(now)
                if batch is None:
                    break
                counts["batches"] += 1
                for record in batch.records:
                    key = record.key
                    by_trigger[why] += 1
                    if key in rewritten:
                        rewritten.discard(key)
                        counts["rewritten"] += 1
                    if now - last_sent.get(key, -policy.flush_interval) < policy.flush_interval:
                        counts["within"] += 1
                    last_sent[key] = now
                    in_flight[key] += 1
                store_free = (max(now, store_free) + shape.store_s
                              + shape.store_row_s * len(batch.records))
                heapq.heappush(acks, (store_free, core.shard, batch.batch_id))
                flights[(core.shard, batch.batch_id)] = [r.key for r in batch.records]

    def answer(until: float) -> None:
        while acks and acks[0][0] <= until:
            at, shard, batch_id = heapq.heappop(acks)
            cores[shard].on_ack(batch_id)
            for key in flights.pop((shard, batch_id)):
                in_flight[key] -= 1
            send(at)

    total = int(shape.puts_per_s * shape.seconds)
    next_sync = shape.sync_s
    now = 0.0
    trace: list[str] = []
    for i in range(total):
        now = i / shape.puts_per_s
        answer(now)
        while next_sync <= now:
            answer(next_sync)
            for core, mark in zip(cores, synced_at_next, strict=True):
                core.note_durable(mark)
            synced_at_next = [core.last_seq for core in cores]
            send(next_sync)
            next_sync += shape.sync_s
        key = next_key()
        trace.append(key)
        shard = shard_of(key, shape.shards)
        core = cores[shard]
        if in_flight[key] and key not in core.dirty:
            rewritten.add(key)
        seqs[shard] += 1
        core.write(key, b"v", i + 1, seqs[shard], now)
        send(now)
    # The final flush: everything journaled is durable, everything dirty goes.
    for core in cores:
        core.note_durable(core.last_seq)
        core.request_flush()
    send(now)
    answer(float("inf"))
    assert all(not core.dirty and not core.inflight for core in cores)
    window = max(1, round(shape.puts_per_s * policy.flush_interval))
    floor_rows = sum(len(set(trace[j:j + window])) for j in range(0, total, window))
    return ReplayResult(
        puts=total, rows=sum(by_trigger.values()),
        batches=counts["batches"], rows_by_trigger=dict(by_trigger),
        rows_rewritten_in_flight=counts["rewritten"], rows_within_interval=counts["within"],
        floor_rows=floor_rows, window_puts=window,
    )
