"""Rates and latency percentiles over successive snapshots: pure, with made-up times."""

from __future__ import annotations

import pytest

from writebehind import CacheStatistics, StoreStatistics
from writebehind._core._stats import LATENCY_BUCKETS, LatencyRecorder, LatencyStatistics
from writebehind._inspector._rates import RateWindow, Totals, quantile, rates


def latency(*seconds: float) -> LatencyStatistics:
    recorder = LatencyRecorder()
    for s in seconds:
        recorder.observe(s)
    return recorder.statistics()


def stats(*, writes: int = 0, rows: int = 0, batches: int = 0,
          acks: LatencyStatistics | None = None) -> CacheStatistics:
    """A snapshot whose ack histogram holds ``writes`` observations of 1 ms (or ``acks``)."""
    store = StoreStatistics(name="store-0", status="running", restarts=0, batches=batches,
                            records=rows, errors=0, last_error=None)
    return CacheStatistics(
        ack="fsync", status="running", shards=(), stores=(store,), store_mailbox_depth=0,
        quarantined=0, alerts=0, last_alert=None,
        ack_latency=acks if acks is not None else latency(*[0.001] * writes),
    )


def test_a_quantile_interpolates_inside_its_bucket_like_histogram_quantile() -> None:
    # Ten observations in the (1 ms, 2.5 ms] bucket: the median is half-way through it.
    assert quantile(0.5, latency(*[0.002] * 10)) == pytest.approx(0.00175)
    # 90 fast and 10 slow: p50 is in the fast bucket, p99 in the slow one.
    mixed = latency(*[0.00005] * 90, *[0.3] * 10)
    assert quantile(0.5, mixed) == pytest.approx(0.0001 * 50 / 90)
    assert 0.25 < quantile(0.99, mixed) <= 0.5  # type: ignore[operator]


def test_a_quantile_of_nothing_is_none_and_beyond_every_bound_is_the_last_bound() -> None:
    assert quantile(0.5, LatencyStatistics()) is None
    assert quantile(0.99, latency(60.0, 60.0)) == LATENCY_BUCKETS[-1]


def test_rates_are_differences_over_the_time_between_snapshots() -> None:
    old = Totals.of(stats(writes=10, rows=4, batches=1), 100.0)
    new = Totals.of(stats(writes=30, rows=14, batches=3), 102.0)
    got = rates(old, new)
    assert got["window"] == 2.0
    assert (got["puts_per_second"], got["rows_per_second"], got["batches_per_second"]) == (
        10.0, 5.0, 1.0)
    assert got["flush_latency"] == {"p50": None, "p90": None, "p99": None}


def test_percentiles_describe_the_window_not_the_whole_life() -> None:
    # A thousand slow writes long ago, then ten fast ones: the window sees only the fast ones.
    slow = [2.0] * 1000
    old = Totals.of(stats(acks=latency(*slow)), 0.0)
    new = Totals.of(stats(acks=latency(*slow, *[0.0002] * 10)), 10.0)
    p99 = rates(old, new)["ack_latency"]["p99"]
    assert 0.0001 < p99 <= 0.00025


def test_a_counter_that_went_down_counts_from_zero() -> None:
    old = Totals.of(stats(writes=50, rows=50), 0.0)
    new = Totals.of(stats(writes=5, rows=8), 1.0)
    got = rates(old, new)
    assert (got["puts_per_second"], got["rows_per_second"]) == (5.0, 8.0)
    assert got["ack_latency"]["p50"] is not None


def test_rates_need_time_to_pass() -> None:
    same = Totals.of(stats(), 3.0)
    with pytest.raises(ValueError, match="the newer snapshot must be later"):
        rates(same, same)


def test_the_window_slides_and_keeps_one_snapshot_before_it() -> None:
    window = RateWindow(10.0)
    assert window.observe(stats(), 0.0) is None  # one snapshot: no rate yet
    assert window.observe(stats(), 0.0) is None  # two at the same time: still none
    for t in range(1, 31):
        got = window.observe(stats(writes=t * 10), float(t))
        assert got is not None
        # A steady 10 writes per second, over all the history until there are 10 seconds.
        assert got["puts_per_second"] == pytest.approx(10.0)
        assert got["window"] == min(t, 10)
    # 200 more in the next second: over the window from t=21 (210 writes) to t=31 (500).
    burst = window.observe(stats(writes=500), 31.0)
    assert burst is not None and burst["puts_per_second"] == pytest.approx(29.0)


def test_a_cleared_or_rewound_window_starts_over() -> None:
    window = RateWindow()
    window.observe(stats(writes=5), 1.0)
    assert window.observe(stats(writes=9), 2.0) is not None
    window.clear()
    assert window.observe(stats(writes=9), 3.0) is None
    assert window.observe(stats(writes=9), 0.5) is None  # time went backwards
    with pytest.raises(ValueError, match="window must be positive"):
        RateWindow(0)
