"""Rates and latency percentiles over a sliding window of statistics snapshots (pure: no clock).

The cache keeps only cumulative figures: writes acknowledged, store rows and transactions, and
two latency histograms. A rate is the difference between the newest snapshot and the oldest one
still in the window, divided by the time between them; a percentile is read from the difference
of the two histograms, so it describes the window, not the cache's whole life. The inspector's
sampler feeds a :class:`RateWindow` each snapshot with ``now``; tests feed it made-up ones.
"""

from __future__ import annotations

import collections
from typing import Any

import attrs

from .._core._stats import CacheStatistics, LatencyStatistics

#: Seconds of history a rate or percentile is computed over.
RATE_WINDOW = 10.0
#: The percentiles reported for each latency histogram.
PERCENTILES = (0.5, 0.9, 0.99)


@attrs.frozen(kw_only=True)
class Totals:
    """The cumulative figures of one snapshot, taken at ``time``."""

    time: float
    writes: int  # puts and deletes acknowledged
    rows: int  # records the store actors wrote
    batches: int  # store transactions committed
    ack_latency: LatencyStatistics
    flush_latency: LatencyStatistics

    @classmethod
    def of(cls, stats: CacheStatistics, now: float) -> Totals:
        return cls(
            time=now, writes=stats.ack_latency.count,
            rows=sum(s.records for s in stats.stores),
            batches=sum(s.batches for s in stats.stores),
            ack_latency=stats.ack_latency, flush_latency=stats.flush_latency,
        )


def quantile(q: float, latency: LatencyStatistics) -> float | None:
    """The ``q``-quantile (0..1) in seconds, interpolated inside its bucket the way Prometheus's
    ``histogram_quantile`` does; the largest bound if it falls above every bound; None when
    the histogram is empty."""
    total = latency.count
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(latency.counts):
        if count and seen + count >= rank:
            if i == len(latency.bounds):
                return latency.bounds[-1]
            lower = latency.bounds[i - 1] if i else 0.0
            return lower + (latency.bounds[i] - lower) * (rank - seen) / count
        seen += count
    return latency.bounds[-1]


def _since(new: LatencyStatistics, old: LatencyStatistics) -> LatencyStatistics:
    """The observations ``new`` has that ``old`` had not (all of ``new`` after a reset)."""
    counts = tuple(n - o for n, o in zip(new.counts, old.counts, strict=True))
    if any(c < 0 for c in counts):
        return new
    return LatencyStatistics(bounds=new.bounds, counts=counts, sum=new.sum - old.sum)


def _rate(new: int, old: int, seconds: float) -> float:
    # A counter that went down was reset (another cache attached): count from zero.
    return (new - old if new >= old else new) / seconds


def rates(old: Totals, new: Totals) -> dict[str, Any]:
    """Rates and percentiles between two snapshots, as the inspector protocol's ``rates``."""
    seconds = new.time - old.time
    if seconds <= 0:
        raise ValueError(f"the newer snapshot must be later: {old.time} then {new.time}")
    latencies = {}
    for name in ("ack_latency", "flush_latency"):
        window = _since(getattr(new, name), getattr(old, name))
        latencies[name] = {f"p{round(q * 100)}": quantile(q, window) for q in PERCENTILES}
    return {
        "window": seconds,
        "puts_per_second": _rate(new.writes, old.writes, seconds),
        "rows_per_second": _rate(new.rows, old.rows, seconds),
        "batches_per_second": _rate(new.batches, old.batches, seconds),
        **latencies,
    }


class RateWindow:
    """Snapshots of the last ``window`` seconds (plus the one just before, so a rate always
    spans the whole window once there is that much history)."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window!r}")
        self.window = window
        self._samples: collections.deque[Totals] = collections.deque()

    def clear(self) -> None:
        """Forget every snapshot (nobody watched for a while, or another cache was attached)."""
        self._samples.clear()

    def observe(self, stats: CacheStatistics, now: float) -> dict[str, Any] | None:
        """Add a snapshot taken at ``now``; the rates over the window, or None before there
        are two snapshots at different times."""
        samples = self._samples
        if samples and now < samples[-1].time:
            samples.clear()  # time went backwards: a different clock, start over
        samples.append(Totals.of(stats, now))
        while len(samples) > 2 and samples[1].time <= now - self.window:
            samples.popleft()
        if samples[0].time == now:
            return None
        return rates(samples[0], samples[-1])
