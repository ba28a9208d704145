"""The shard state machine and flush policy, synchronously: no trio, no I/O."""

import math
import random

from writebehind import Rejection, StoreRecord, Superseded
from writebehind._core._shard_core import FlushPolicy, ShardCore
from writebehind._journal import JournalRecord, RecordKind


def make(**policy: float) -> ShardCore:
    return ShardCore(
        0, 1, FlushPolicy(**policy), max_entries=1000, rng=random.Random(0)  # type: ignore[arg-type]
    )


def test_hundred_writes_to_one_key_coalesce_into_one_store_write() -> None:
    core = make(flush_interval=1.0)
    for i in range(100):
        core.write("k", b"%d" % i, version=i + 1, seq=i + 1, now=0.0)
    assert not core.due(0.5)
    batch = core.take_batch(1.0)
    assert batch is not None
    assert [(r.key, r.value, r.version) for r in batch.records] == [("k", b"99", 100)]
    core.on_ack(batch.batch_id)
    assert core.persisted_mark() == 100
    assert core.unpersisted == 0


def test_flush_is_due_on_interval_threshold_and_request() -> None:
    core = make(flush_interval=1.0, flush_threshold=3)
    core.write("a", b"1", 1, 1, now=10.0)
    assert not core.due(10.5)
    assert core.next_deadline(10.5) == 11.0
    assert core.due(11.0)
    core.write("b", b"1", 2, 2, now=10.6)
    core.write("c", b"1", 3, 3, now=10.6)
    assert core.due(10.6)  # dirty-count threshold reached
    core2 = make(flush_interval=1.0)
    core2.write("a", b"1", 1, 1, now=0.0)
    core2.flush_requested = True
    assert core2.due(0.0)


def test_nothing_dirty_means_no_deadline() -> None:
    core = make()
    assert core.next_deadline(0.0) == math.inf
    assert core.take_batch(0.0) is None


def test_mark_waits_for_the_oldest_unpersisted_write() -> None:
    core = make(batch_size=1, flush_interval=0.1)
    core.write("a", b"1", 1, 1, 0.0)
    core.write("b", b"1", 2, 2, 0.0)
    first = core.take_batch(1.0)
    second = core.take_batch(1.0)
    assert first is not None and second is not None
    core.on_ack(second.batch_id)
    assert core.persisted_mark() == 0  # "a" (seq 1) is still in flight
    core.on_ack(first.batch_id)
    assert core.persisted_mark() == 2


def test_nack_requeues_first_and_backs_off_with_growing_delay() -> None:
    core = make(batch_size=10, flush_interval=0.1, retry_initial=0.1, retry_max=10.0)
    core.write("a", b"1", 1, 1, 0.0)
    batch = core.take_batch(1.0)
    assert batch is not None
    core.write("b", b"1", 2, 2, 1.0)
    delays = [core.on_nack(batch.batch_id, 1.0)]
    assert list(core.dirty) == ["a", "b"]
    assert not core.due(1.0)
    assert core.next_deadline(1.0) == core.retry_at
    for _ in range(5):
        batch = core.take_batch(core.retry_at)
        assert batch is not None
        delays.append(core.on_nack(batch.batch_id, core.retry_at))
    assert 0.05 <= delays[0] <= 0.1
    assert delays[-1] > delays[0]
    assert all(d <= 10.0 for d in delays)


def test_a_key_rewritten_in_flight_stays_dirty_after_the_ack() -> None:
    core = make(flush_interval=0.1)
    core.write("a", b"old", 1, 1, 0.0)
    batch = core.take_batch(1.0)
    assert batch is not None
    core.write("a", b"new", 2, 2, 1.0)
    core.on_ack(batch.batch_id)
    assert "a" in core.dirty
    assert core.persisted_mark() == 1
    assert not core.is_persisted("a", 2, 2)
    assert core.is_persisted("a", 1, 1)


def test_an_older_write_never_undoes_a_newer_one() -> None:
    core = make()
    core.write("a", b"new", 5, 2, 0.0)
    core.write("a", b"old", 3, 1, 0.0)
    assert core.entries["a"].value == b"new"


def test_delete_is_a_versioned_tombstone() -> None:
    core = make(flush_interval=0.1)
    core.write("a", b"1", 1, 1, 0.0)
    core.write("a", None, 2, 2, 0.0)
    batch = core.take_batch(1.0)
    assert batch is not None
    assert batch.records[0].deleted and batch.records[0].version == 2


def test_rejected_record_is_quarantined_and_pins_the_mark_but_not_the_rest() -> None:
    core = make(flush_interval=0.1)
    core.write("bad", b"x", 1, 1, 0.0)
    core.write("good", b"y", 2, 2, 0.0)
    batch = core.take_batch(1.0)
    assert batch is not None
    core.on_ack(batch.batch_id, (Rejection("bad", 1, "too large"),))
    assert list(core.quarantine) == ["bad"]
    assert core.is_persisted("good", 2, 2)
    assert core.persisted_mark() == 0  # the quarantined record stays in the journal
    assert core.paid({"bad": 1, "good": 2})  # but flush() does not wait for it
    assert core.retry_quarantine(2.0) == 1
    assert "bad" in core.dirty


def test_eviction_drops_only_clean_entries() -> None:
    core = ShardCore(0, 1, FlushPolicy(flush_interval=0.1), max_entries=2, rng=random.Random(0))
    core.write("a", b"1", 1, 1, 0.0)
    core.write("b", b"1", 2, 2, 0.0)
    core.write("c", b"1", 3, 3, 0.0)
    assert len(core.entries) == 3  # all dirty: nothing may go
    assert core.due(0.0)  # eviction pressure forces a flush
    batch = core.take_batch(0.0)
    assert batch is not None
    core.on_ack(batch.batch_id)
    assert len(core.entries) == 2
    assert "a" not in core.entries


def test_replay_rebuilds_dirty_entries_in_journal_order() -> None:
    core = make()
    records = [("a", b"1", 1, 1), ("b", b"2", 2, 2), ("a", None, 3, 3)]
    core.replay([JournalRecord(seq, RecordKind.PUT if value else RecordKind.DELETE, key, value,
                               version) for key, value, version, seq in records], now=0.0)
    assert list(core.dirty) == ["a", "b"]
    assert core.entries["a"].value is None
    assert core.last_seq == 3


def test_backoff_is_deterministic_for_a_seed() -> None:
    policy = FlushPolicy(retry_initial=0.1, retry_max=2.0)
    a = [policy.backoff(n, random.Random(7)) for n in range(1, 10)]
    b = [policy.backoff(n, random.Random(7)) for n in range(1, 10)]
    assert a == b
    assert max(a) <= 2.0


def test_dirty_and_clean_keep_their_order_across_compaction() -> None:
    core = ShardCore(
        0, 1, FlushPolicy(batch_size=100, flush_interval=0.0), max_entries=1000,
        rng=random.Random(0),
    )
    seq = 0
    for round_ in range(60):  # 6,000 front deletions from each queue: both get compacted
        for _ in range(100):
            seq += 1
            core.write(f"k{seq}", b"v", seq, seq, now=float(seq))
        batch = core.take_batch(now=float(seq))
        assert batch is not None
        assert [r.key for r in batch.records] == [f"k{i}" for i in range(round_ * 100 + 1, seq + 1)]
        core.on_ack(batch.batch_id)
    assert not core.dirty
    assert list(core.clean) == [f"k{i}" for i in range(seq - 999, seq + 1)]  # oldest evicted
    assert core.evictions == seq - 1000
    assert core._dirty_deleted < 6000 and core._clean_deleted < 5000  # compaction did run


# -- the store ahead of the journal (issue 12, item 2) ----------------------------------------


def test_a_record_the_store_holds_a_newer_version_of_is_dropped_not_served() -> None:
    # ack='memory' after a power loss: the journal lost v20 (flushed before the loss), the
    # restart replays v10; the store keeps v20 and says the replayed record did not apply.
    core = make(flush_interval=0.0)
    core.replay([JournalRecord(1, RecordKind.PUT, "k", b"old", 10)], now=0.0)
    core.write("other", b"x", 11, 2, 0.0)
    batch = core.take_batch(0.0)
    assert batch is not None
    core.on_ack(batch.batch_id, superseded=(Superseded("k", 10),))
    assert "k" not in core.entries  # the next read reads the store's v20 through
    assert core.superseded == 1
    assert core.unpersisted == 0
    assert core.persisted_mark() == 2  # the replayed record is superseded: the mark passes
    assert core.entries["other"].persisted_version == 11


def test_a_superseded_answer_keeps_a_newer_write_still_on_its_way() -> None:
    core = make(flush_interval=0.0)
    core.write("k", b"a", 10, 1, 0.0)
    first = core.take_batch(0.0)
    core.write("k", b"b", 30, 2, 0.0)  # newer than what the store holds: it must land
    second = core.take_batch(0.0)
    assert first is not None and second is not None
    core.on_ack(first.batch_id, superseded=(Superseded("k", 10),))
    assert core.entries["k"].value == b"b"
    assert core.owed() == {"k": 30}
    core.on_ack(second.batch_id)
    assert core.entries["k"].persisted_version == 30 and "k" in core.clean


def test_answers_for_a_dropped_entry_are_ignored() -> None:
    core = make(flush_interval=0.0)
    core.write("k", b"a", 10, 1, 0.0)
    first = core.take_batch(0.0)
    core.write("k", b"b", 20, 2, 0.0)
    second = core.take_batch(0.0)
    assert first is not None and second is not None
    core.on_ack(second.batch_id, superseded=(Superseded("k", 20),))
    assert "k" not in core.entries
    assert core.owed() == {"k": 10}  # the older batch is still out: flush() waits for it
    assert core.on_nack(first.batch_id, 1.0) > 0  # nothing to requeue, no KeyError
    assert not core.dirty and core.unpersisted == 0 and core.persisted_mark() == 2


def test_a_write_through_the_store_holds_newer_than_is_not_cached() -> None:
    core = make()
    core.settle(StoreRecord("k", b"mine", 5), superseded=True)
    assert "k" not in core.entries
    core.load_clean(StoreRecord("k", b"theirs", 9))
    core.settle(StoreRecord("k", b"older", 7), superseded=True)
    assert core.entries["k"].value == b"theirs"  # a newer version than the answer: kept


def make_held(**policy: float) -> ShardCore:
    return ShardCore(
        0, 1, FlushPolicy(**policy), max_entries=1000, rng=random.Random(0),  # type: ignore[arg-type]
        hold_until_durable=True,
    )


def test_a_record_is_not_sent_before_its_journal_write_is_durable() -> None:
    core = make_held(flush_interval=0.0)
    core.write("a", b"1", 1, 1, 0.0)
    core.flush_requested = True
    assert not core.due(0.0) and core.take_batch(0.0) is None
    assert core.next_deadline(0.0) == math.inf  # only note_durable can make it due
    assert core.owed() == {"a": 1} and core.unpersisted == 1
    assert core.note_durable(1) == 1
    batch = core.take_batch(0.0)
    assert batch is not None and [r.key for r in batch.records] == ["a"]


def test_durable_records_go_while_newer_ones_wait_and_a_rewrite_waits_again() -> None:
    core = make_held(flush_interval=0.0)
    core.write("a", b"1", 1, 1, 0.0)
    core.write("b", b"1", 2, 2, 0.0)
    assert core.note_durable(1) == 1
    core.write("a", b"2", 3, 3, 0.0)  # "a" rewritten: its newest record is not durable
    core.write("c", b"1", 4, 4, 0.0)
    assert core.note_durable(2) == 1  # "b" only
    batch = core.take_batch(0.0)
    assert batch is not None and [r.key for r in batch.records] == ["b"]
    assert core.take_batch(0.0) is None
    assert core.note_durable(4) == 2
    batch = core.take_batch(0.0)
    assert batch is not None and [(r.key, r.version) for r in batch.records] == [("a", 3), ("c", 4)]


def test_replayed_records_are_durable_and_go_at_once() -> None:
    core = make_held(flush_interval=0.0)
    core.replay([JournalRecord(7, RecordKind.PUT, "a", b"1", 1)], now=0.0)
    assert core.durable_seq == 7
    assert core.take_batch(0.0) is not None


def test_discarded_quarantine_frees_the_mark_and_retry_takes_chosen_keys() -> None:
    core = make(flush_interval=0.0)
    core.write("a", b"1", 1, 1, 0.0)
    core.write("b", b"1", 2, 2, 0.0)
    batch = core.take_batch(0.0)
    assert batch is not None
    core.on_ack(batch.batch_id, rejected=(Rejection("a", 1, "no"), Rejection("b", 2, "no")))
    assert core.persisted_mark() == 0
    assert core.retry_quarantine(1.0, {"b"}) == 1
    assert list(core.quarantine) == ["a"] and list(core.dirty) == ["b"]
    assert core.discard_quarantine({"a"}) == 1
    assert "a" not in core.entries and not core.quarantine
    assert core.persisted_mark() == 1  # "b" (seq 2) is dirty again
