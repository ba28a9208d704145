"""What the shard actor and the cache ask of the core, through its methods (no trio, no I/O)."""

import random

from writebehind import Rejection, StoreRecord
from writebehind._core._shard_core import CoreStatistics, FlushPolicy, ShardCore


def make(max_entries: int = 1000, **policy: float) -> ShardCore:
    return ShardCore(
        0, 1, FlushPolicy(**policy),  # type: ignore[arg-type]
        max_entries=max_entries, rng=random.Random(0), hold_until_durable=True,
    )


def test_write_returns_how_many_keys_are_dirty_now() -> None:
    core = make()
    assert core.write("a", b"1", 10, 1, 0.0) == 1
    assert core.write("b", b"1", 11, 2, 0.0) == 2
    assert core.write("a", b"2", 12, 3, 0.0) == 2  # a rewrite coalesces
    assert core.write("a", b"old", 5, 4, 0.0) == 2  # an older version changes nothing
    assert core.peek("a") is not None and core.peek("a").value == b"2"  # type: ignore[union-attr]
    core.note_durable(4)
    batch = core.take_batch(1.0)
    assert batch is not None
    assert core.write("c", b"1", 13, 5, 1.0) == 1  # the others are in flight, not dirty


def test_request_flush_makes_a_batch_due_before_the_interval() -> None:
    core = make(flush_interval=10.0)
    core.write("a", b"1", 1, 1, 0.0)
    core.note_durable(1)
    assert not core.due(0.0)
    core.request_flush()
    assert core.due(0.0)
    assert core.take_batch(0.0) is not None


def test_read_moves_a_clean_hit_to_the_back_of_the_eviction_order_and_peek_does_not() -> None:
    core = make(max_entries=2)
    for key in ("a", "b"):
        core.load_clean(StoreRecord(key, b"v", 1))
    assert core.peek("a") is not None  # peek leaves "a" the least recently used
    core.load_clean(StoreRecord("c", b"v", 1))
    assert core.peek("a") is None and core.peek("b") is not None

    core = make(max_entries=2)
    for key in ("a", "b"):
        core.load_clean(StoreRecord(key, b"v", 1))
    entry = core.read("a")  # a hit: "a" becomes the most recently used
    assert entry is not None and entry.value == b"v"
    core.load_clean(StoreRecord("c", b"v", 1))
    assert core.peek("a") is not None and core.peek("b") is None
    assert core.read("missing") is None


def test_a_tombstone_is_a_hit_with_no_value() -> None:
    core = make()
    core.write("gone", None, 3, 1, 0.0)
    entry = core.read("gone")
    assert entry is not None and entry.value is None


def test_mutation_count_moves_on_writes_and_evictions_only() -> None:
    core = make(max_entries=1)
    before = core.mutation_count()
    core.read("nothing")
    core.peek("nothing")
    assert core.mutation_count() == before
    core.write("a", b"1", 1, 1, 0.0)
    after_write = core.mutation_count()
    assert after_write > before
    core.note_durable(1)
    batch = core.take_batch(1.0)
    assert batch is not None
    core.on_ack(batch.batch_id)
    core.load_clean(StoreRecord("b", b"v", 1))  # evicts the now clean "a"
    assert core.mutation_count() > after_write
    assert core.peek("a") is None


def test_durable_mark_follows_note_durable() -> None:
    core = make()
    assert core.durable_mark() == 0
    core.write("a", b"1", 1, 1, 0.0)
    core.write("b", b"1", 2, 2, 0.0)
    assert core.note_durable(1) == 1
    assert core.durable_mark() == 1
    core.note_durable(0)  # never backwards
    assert core.durable_mark() == 1


def test_quarantined_lists_refusals_and_statistics_count_them() -> None:
    core = make()
    core.write("bad", b"x", 7, 1, 0.0)
    core.write("good", b"y", 8, 2, 0.5)
    core.note_durable(2)
    batch = core.take_batch(1.0)
    assert batch is not None
    assert core.statistics() == CoreStatistics(
        entries=2, dirty=0, inflight_batches=1, unpersisted=2, oldest_dirty_since=0.0,
        failures=0, batches_acked=0, records_persisted=0, evictions=0, quarantined=0,
    )
    core.on_ack(batch.batch_id, rejected=(Rejection("bad", 7, "too big"),))
    assert [(q.key, q.version, q.reason) for q in core.quarantined()] == [("bad", 7, "too big")]
    stats = core.statistics()
    assert (stats.quarantined, stats.records_persisted, stats.batches_acked) == (1, 1, 1)
    assert (stats.unpersisted, stats.inflight_batches, stats.dirty) == (0, 0, 0)
    assert core.discard_quarantine() == 1
    assert core.quarantined() == [] and core.statistics().quarantined == 0


def test_statistics_count_failures_until_a_batch_lands() -> None:
    core = make(retry_initial=0.01, retry_max=0.01)
    core.write("a", b"1", 1, 1, 0.0)
    core.note_durable(1)
    batch = core.take_batch(1.0)
    assert batch is not None
    core.on_nack(batch.batch_id, 1.0)
    assert core.statistics().failures == 1 and core.statistics().dirty == 1
    retry = core.take_batch(2.0)
    assert retry is not None
    core.on_ack(retry.batch_id)
    assert core.statistics().failures == 0 and core.statistics().unpersisted == 0
