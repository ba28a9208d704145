"""When a shard sends a key to the store: the rules that make rewrites coalesce (pure, no I/O).

The last test replays a seeded Zipf trace through the cores on a fake clock and counts store
rows against a perfect coalescer's over the same trace: the figure the bench measures with
real time, as a count a seed reproduces.
"""

import random

import pytest

from writebehind import Rejection
from writebehind._bench._coalescing import Replay, replay
from writebehind._core._shard_core import FlushPolicy, ShardCore


def make(*, held: bool = False, **policy: float) -> ShardCore:
    return ShardCore(
        0, 1, FlushPolicy(**policy),  # type: ignore[arg-type]
        max_entries=1000, rng=random.Random(0), hold_until_durable=held,
    )


def keys_of(core: ShardCore, now: float) -> list[str]:
    batch = core.take_batch(now)
    assert batch is not None
    return [r.key for r in batch.records]


def test_a_key_rewritten_in_flight_waits_a_full_interval_from_its_rewrite() -> None:
    core = make(flush_interval=1.0)
    core.write("a", b"1", 1, 1, 0.0)
    batch = core.take_batch(1.0)
    assert batch is not None
    core.write("a", b"2", 2, 2, 1.1)  # while its first version is in flight
    core.on_ack(batch.batch_id)
    assert core.entries["a"].dirty_since == 1.1  # not 0.0: it was never clean, but was sent
    assert not core.due(1.5)
    assert core.next_deadline(1.5) == 2.1
    assert keys_of(core, 2.1) == ["a"]


def test_a_hot_key_waiting_for_its_group_commit_does_not_make_younger_keys_due() -> None:
    core = make(held=True, flush_interval=1.0)
    core.write("hot", b"1", 1, 1, 0.0)
    core.write("b", b"1", 2, 2, 0.8)
    core.note_durable(2)
    core.write("hot", b"2", 3, 3, 0.95)  # of age, but its newest record is not synced yet
    assert not core.due(1.0)  # "b", the oldest key that may go, waited 0.2 s
    assert core.next_deadline(1.0) == 1.8
    core.note_durable(3)
    assert core.due(1.0)
    assert keys_of(core, 1.0) == ["hot"]  # "b" has not waited min_wait (0.5 s) yet


def test_a_batch_due_by_the_interval_carries_only_keys_that_waited_min_wait() -> None:
    core = make(flush_interval=1.0, min_wait=0.5)
    for i, (key, at) in enumerate([("a", 0.0), ("b", 0.4), ("c", 0.6)]):
        core.write(key, b"1", i + 1, i + 1, at)
    assert keys_of(core, 1.0) == ["a", "b"]
    assert not core.due(1.0) and core.next_deadline(1.0) == 1.6
    core.request_flush()  # a flush takes every key, whatever its age
    assert keys_of(core, 1.0) == ["c"]


def test_the_threshold_takes_the_oldest_keys_whatever_their_age() -> None:
    core = make(flush_interval=1.0, flush_threshold=3, batch_size=2)
    for i in range(3):
        core.write(f"k{i}", b"1", i + 1, i + 1, 0.0)
    assert keys_of(core, 0.0) == ["k0", "k1"]


def test_a_nacked_batch_requeues_a_key_rewritten_in_flight_first_with_the_batch_stamp() -> None:
    core = make(flush_interval=1.0)
    core.write("a", b"1", 1, 1, 0.0)
    batch = core.take_batch(1.0)
    assert batch is not None
    core.write("c", b"1", 2, 2, 1.05)
    core.write("a", b"2", 3, 3, 1.1)  # rewritten in flight: behind "c", stamped 1.1
    assert list(core.dirty) == ["c", "a"]
    core.on_nack(batch.batch_id, 1.2)
    # Its newer write is owed since the failed batch's was: first in line, of age.
    assert list(core.dirty) == ["a", "c"]
    assert core.entries["a"].dirty_since == 0.0
    assert core.oldest_dirty_since() == 0.0


def test_retried_quarantine_goes_first() -> None:
    core = make(flush_interval=0.0)
    core.write("a", b"1", 1, 1, 0.0)
    batch = core.take_batch(0.0)
    assert batch is not None
    core.on_ack(batch.batch_id, rejected=(Rejection("a", 1, "no"),))
    core.write("b", b"1", 2, 2, 0.5)
    assert core.retry_quarantine(1.0) == 1
    assert list(core.dirty) == ["a", "b"]
    assert core.oldest_dirty_since() == 0.0


def test_a_zipf_trace_coalesces_to_the_floor_of_fixed_windows() -> None:
    found = replay(Replay(seconds=1.2))
    assert found.puts == 48_000 and found.window_puts == 20_000
    assert set(found.rows_by_trigger) == {"interval", "final"}
    # Before keys were stamped at their oldest unsent write and the interval timed from the
    # oldest sendable key, this trace read 1.36x (18k rows in 328 batches).
    assert found.ratio <= 1.0
    assert found.batches < 50
    assert replay(Replay(seconds=1.2)) == found  # a count, reproduced from the seed


def test_min_wait_is_a_fraction_of_the_interval() -> None:
    # Above 1 a batch due by the interval could carry nothing at all.
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="min_wait"):
            FlushPolicy(min_wait=bad)
