"""The metrics a scrape returns, counted from known work: writes, flushes, failures, refusals,
backpressure, restarts. In-memory disk and store, trio's autojump clock, no timed asserts."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from writebehind import (
    CacheCollector,
    CacheStatistics,
    ClusterStatistics,
    Overloaded,
    PartitionLeaseStatistics,
    ShardCrashed,
    shard_of,
)
from writebehind._core._stats import LATENCY_BUCKETS, LatencyRecorder, LatencyStatistics

from .conftest import Samples, StoreTrouble, memory_cache, parse, value


def scrape(collector: CacheCollector) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def test_a_duration_at_a_bound_counts_in_that_bucket_as_le_says() -> None:
    recorder = LatencyRecorder()
    for seconds in (0.0, LATENCY_BUCKETS[0], LATENCY_BUCKETS[0] * 1.01, 99.0):
        recorder.observe(seconds)
    stats = recorder.statistics()
    assert stats.counts[:3] == (2, 1, 0) and stats.counts[-1] == 1
    assert stats.count == 4 and stats.sum == pytest.approx(99.0 + LATENCY_BUCKETS[0] * 2.01)
    merged = LatencyStatistics.merge([stats, stats])
    assert merged.counts == tuple(2 * n for n in stats.counts) and merged.count == 8


def test_with_no_cache_the_collector_describes_every_family_and_samples_nothing() -> None:
    collector = CacheCollector(None)
    names = {family.name for family in collector.describe()}
    assert {"writebehind_acked_writes", "writebehind_ack_latency_seconds",
            "writebehind_watermark_lag_records"} <= names
    assert all(name.startswith("writebehind_") for name in names)
    assert scrape(collector) == {}
    registry = CollectorRegistry()
    registry.register(collector)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(CacheCollector(None))


async def test_writes_flushes_and_store_rows_are_counted(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(60):
        async with memory_cache(tmp_path, ack="journal", batch_size=4) as cache:
            collector = CacheCollector(cache)
            for i in range(10):
                await cache.put(f"k{i}", b"v")
            await cache.delete("k0")
            before = scrape(collector)
            await cache.flush()
            after = scrape(collector)
            # The journal's checkpoint follows the store's acks in the background.
            while any(value(after, "writebehind_watermark_lag_records", shard=s,
                            watermark="persisted") for s in ("0", "1")):
                await trio.sleep(0.05)
                after = scrape(collector)
    assert value(before, "writebehind_acked_writes_total", ack="journal") == 11
    assert value(before, "writebehind_ack_latency_seconds_count", ack="journal") == 11
    assert value(before, "writebehind_ack_latency_seconds_bucket", ack="journal", le="+Inf") == 11
    assert value(before, "writebehind_running") == 1
    lag = sum(value(before, "writebehind_watermark_lag_records", shard=s, watermark="persisted")
              for s in ("0", "1"))
    assert lag >= 10  # nothing was flushed yet: every acked record is ahead of persisted
    assert sum(value(before, "writebehind_dirty_entries", shard=s) for s in ("0", "1")) == 10
    rows = value(after, "writebehind_store_rows_total", actor="store-0")
    transactions = value(after, "writebehind_store_transactions_total", actor="store-0")
    assert rows == 10  # k0's put and delete coalesce, or the delete follows in a later batch
    batches = value(after, "writebehind_flush_batches_total")
    assert batches == transactions >= 3  # batch_size 4: at least 3 batches for 10 keys
    assert value(after, "writebehind_flush_latency_seconds_count") == batches
    for s in ("0", "1"):
        assert value(after, "writebehind_unpersisted_entries", shard=s) == 0
        assert value(after, "writebehind_journal_bytes", shard=s) > 0
        assert value(after, "writebehind_journal_sequence", shard=s, watermark="acked") > 0


async def test_failed_and_refused_batches_are_counted(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    trouble = StoreTrouble(failures=2)
    with trio.fail_after(60):
        async with memory_cache(tmp_path, trouble=trouble, shards=1) as cache:
            collector = CacheCollector(cache)
            await cache.put("good", b"v")
            await cache.put("refused:1", b"v")
            await cache.flush()
            samples = scrape(collector)
    assert value(samples, "writebehind_flush_failures_total", shard="0") == 2
    assert value(samples, "writebehind_store_errors_total", actor="store-0") == 2
    assert value(samples, "writebehind_refused_records_total", shard="0") == 1
    assert value(samples, "writebehind_quarantined_records", shard="0") == 1
    assert value(samples, "writebehind_alerts_total") == 3  # two flush failures, one refusal


async def test_overloaded_refusals_and_backpressure_waits_are_counted(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    options = dict(shards=1, max_dirty=2, flush_interval=5.0)
    with trio.fail_after(60):
        async with memory_cache(tmp_path, on_overload="raise", **options) as cache:
            await cache.put("a", b"v")
            await cache.put("b", b"v")
            with pytest.raises(Overloaded):
                await cache.put("c", b"v")
            raised = scrape(CacheCollector(cache))
        async with memory_cache(tmp_path / "wait", on_overload="wait", **options) as cache:
            for key in "abc":
                await cache.put(key, b"v")  # the third waits for a flush
            waited = scrape(CacheCollector(cache))
    assert value(raised, "writebehind_overloaded_total", shard="0") == 1
    assert value(raised, "writebehind_backpressure_waits_total", shard="0") == 0
    assert value(raised, "writebehind_acked_writes_total", ack="journal") == 2
    assert value(waited, "writebehind_backpressure_waits_total", shard="0") == 1
    assert value(waited, "writebehind_overloaded_total", shard="0") == 0


async def test_a_restart_and_its_replay_are_counted(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    crash = {"armed": False}

    def fault_point(point: str, actor: str) -> None:
        if crash["armed"] and point == "put.after_journal_append":
            crash["armed"] = False
            raise RuntimeError("injected")

    with trio.fail_after(60):
        async with memory_cache(
            tmp_path, shards=1, flush_interval=30.0, fault_point=fault_point
        ) as cache:
            collector = CacheCollector(cache)
            for i in range(5):
                await cache.put(f"k{i}", b"v")
            crash["armed"] = True
            with pytest.raises(ShardCrashed):
                await cache.put("k5", b"v")
            await cache.put("after", b"v")  # waits for the restarted shard
            samples = scrape(collector)
    assert shard_of("k5", 1) == 0
    assert value(samples, "writebehind_restarts_total", actor="shard-0") == 1
    assert value(samples, "writebehind_actor_running", actor="shard-0") == 1
    assert value(samples, "writebehind_restarts_total", actor="store-0") == 0
    # The restart replays the five writes (and the crashed one, journaled before the crash).
    assert value(samples, "writebehind_recovery_records_total", shard="0") == 6
    assert value(samples, "writebehind_recovery_seconds_total", shard="0") >= 0
    assert value(samples, "writebehind_acked_writes_total", ack="journal") == 6


async def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            await cache.put("k", b"v")
            registry = CollectorRegistry(auto_describe=False)
            registry.register(CacheCollector(cache))
            encoder, content_type = choose_encoder(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
            text = encoder(registry).decode()
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert "# UNIT writebehind_ack_latency_seconds seconds" in text
    assert value(parse(text), "writebehind_acked_writes_total", ack="journal") == 1


class _Snapshot:
    """A stand-in cache: ``statistics()`` returns what it was given."""

    def __init__(self, stats: CacheStatistics) -> None:
        self.stats = stats

    def statistics(self) -> CacheStatistics:
        return self.stats


def _stats(cluster: ClusterStatistics | None) -> CacheStatistics:
    return CacheStatistics(ack="replicated", status="running", shards=(), stores=(),
                           store_mailbox_depth=0, quarantined=0, alerts=0, last_alert=None,
                           cluster=cluster)


def test_a_cluster_member_exports_its_leases_and_lease_counters() -> None:
    view = ClusterStatistics(
        cluster="orders", member="host-a:12:ab", live=("host-a:12:ab", "host-b:7:cd"),
        partitions=4, hosted=(0, 2), starting=(3,),
        leases=(PartitionLeaseStatistics(partition=0, epoch=5, expires_in=8.5,
                                         acknowledge_for=6.5),
                PartitionLeaseStatistics(partition=2, epoch=1, expires_in=-0.5,
                                         acknowledge_for=-2.5)),
        acquisitions=3, takeovers=1, handovers=4, renewals=40, losses=2, routed_served=9,
        routed_refused=1, routed_expired=6, routed_repeats=2,
    )
    samples = scrape(CacheCollector(_Snapshot(_stats(view))))  # type: ignore[arg-type]
    assert value(samples, "writebehind_cluster_member", cluster="orders",
                 member="host-a:12:ab") == 1
    for name, expected in (("live_members", 2), ("partitions", 4), ("hosted_partitions", 2),
                           ("starting_partitions", 1), ("owned_partitions", 2)):
        assert value(samples, f"writebehind_cluster_{name}") == expected, name
    assert value(samples, "writebehind_partition_epoch", partition="0") == 5
    assert value(samples, "writebehind_partition_lease_expiry_seconds", partition="0") == 8.5
    assert value(samples, "writebehind_partition_acknowledge_seconds", partition="0") == 6.5
    # A lease past its time (the renew loop is late) shows 0, not a negative time.
    assert value(samples, "writebehind_partition_lease_expiry_seconds", partition="2") == 0
    assert value(samples, "writebehind_partition_acknowledge_seconds", partition="2") == 0
    for name, expected in (("lease_acquisitions", 3), ("lease_takeovers", 1),
                           ("partition_handovers", 4), ("lease_renewals", 40),
                           ("lease_losses", 2), ("routed_calls_served", 9),
                           ("routed_calls_refused", 1), ("routed_calls_expired", 6),
                           ("routed_calls_repeated", 2)):
        assert value(samples, f"writebehind_{name}_total") == expected, name


def test_a_single_process_cache_sends_no_cluster_samples() -> None:
    samples = scrape(CacheCollector(_Snapshot(_stats(None))))  # type: ignore[arg-type]
    assert samples  # the cache's own families are there
    assert not [name for name, _ in samples if "cluster" in name or "lease" in name
                or "partition" in name or "routed" in name]
