"""Latency recording on HdrHistogram (microsecond resolution, three significant digits)."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

# An hour in microseconds: anything slower is clamped rather than dropped.
_HIGHEST_US = 3_600_000_000


class Latencies:
    """Durations in seconds in; percentiles in milliseconds out."""

    def __init__(self) -> None:
        self._hist = HdrHistogram(1, _HIGHEST_US, 3)

    def record(self, seconds: float) -> None:
        self._hist.record_value(min(_HIGHEST_US, max(1, int(seconds * 1e6))))

    def merge(self, other: Latencies) -> None:
        """Add every duration ``other`` recorded."""
        self._hist.add(other._hist)

    @property
    def count(self) -> int:
        return int(self._hist.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        if not self.count:
            return 0.0
        return float(self._hist.get_value_at_percentile(percentile)) / 1000.0
