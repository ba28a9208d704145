"""Frozen snapshots returned by ``Cache.statistics()``, and the latency recorder they read."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import attrs

#: Upper bounds, in seconds, of the latency histograms' buckets (a last bucket takes the rest).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)


@attrs.frozen(kw_only=True)
class LatencyStatistics:
    """A latency histogram at one instant: ``counts[i]`` observations were at most
    ``bounds[i]`` seconds and above ``bounds[i - 1]``; ``counts[-1]`` were above every bound."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    sum: float = 0.0  # seconds, over every observation

    @property
    def count(self) -> int:
        return sum(self.counts)

    @classmethod
    def merge(cls, parts: Iterable[LatencyStatistics]) -> LatencyStatistics:
        """One histogram of several with the same bounds (every shard's, say)."""
        counts = [0] * (len(LATENCY_BUCKETS) + 1)
        total = 0.0
        for part in parts:
            for i, n in enumerate(part.counts):
                counts[i] += n
            total += part.sum
        return cls(counts=tuple(counts), sum=total)


class LatencyRecorder:
    """Counts durations into :data:`LATENCY_BUCKETS`: a bisect and two additions per
    observation, no allocation (it sits on the put path)."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def statistics(self) -> LatencyStatistics:
        return LatencyStatistics(counts=tuple(self.counts), sum=self.sum)


@attrs.frozen(kw_only=True)
class ShardStatistics:
    """One shard actor. Sequences are journal positions: acked <= written/synced as the ack
    mode says, and every record at or below ``persisted_seq`` is in the store."""

    name: str
    shard: int
    status: str
    restarts: int
    entries: int
    dirty: int
    inflight_batches: int
    unpersisted: int
    oldest_dirty_age: float | None
    mailbox_depth: int
    acked_seq: int
    written_seq: int
    synced_seq: int
    persisted_seq: int
    journal_bytes: int
    journal_segments: int
    batches_acked: int
    records_persisted: int
    evictions: int
    quarantined: int
    last_error: str | None
    last_error_time: float | None = None  # trio clock when ``last_error`` was set
    batches_per_second: float = 0.0  # store acks over the last RATE_WINDOW seconds
    # Counted over the shard's life, across restarts (the fields above are per incarnation):
    flush_failures: int = 0  # batches the store did not commit (each is retried after backoff)
    refused: int = 0  # records the store refused for good (quarantined)
    backpressure_waits: int = 0  # writes that waited for the store to catch up
    overloaded: int = 0  # writes refused with Overloaded (on_overload='raise')
    recovered_records: int = 0  # journal records replayed at starts and restarts
    recovery_seconds: float = 0.0  # spent opening and replaying the journal


#: The window ``ShardStatistics.batches_per_second`` averages over, in seconds.
RATE_WINDOW = 10.0


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """One store actor."""

    name: str
    status: str
    restarts: int
    batches: int
    records: int
    errors: int
    last_error: str | None
    last_error_time: float | None = None  # trio clock when ``last_error`` was set


@attrs.frozen(kw_only=True)
class PartitionLeaseStatistics:
    """A partition lease this cluster member holds. Times are seconds from the snapshot, on
    this member's monotonic clock."""

    partition: int
    epoch: int  # the fencing token: one more than the partition's previous owner's
    expires_in: float  # until the lease ends unless renewed
    acknowledge_for: float  # until it stops acknowledging: ``expires_in`` less the drift margin


@attrs.frozen(kw_only=True)
class ClusterStatistics:
    """A cluster member's view (``Config.cluster``): ``CacheStatistics.cluster``. Counters
    are over the member's life."""

    cluster: str  # Config.cluster_name
    member: str  # this member's name in the leases (host:pid:random)
    live: tuple[str, ...]  # the live members as last read, itself included
    partitions: int  # the cluster's number of partitions
    hosted: tuple[int, ...]  # partitions served here now
    leases: tuple[PartitionLeaseStatistics, ...]  # the leases it holds, by partition
    # Partitions the assignment gives this member that wait for their lease or replay.
    starting: tuple[int, ...] = ()
    acquisitions: int = 0  # leases acquired or retaken (each a new epoch)
    takeovers: int = 0  # acquisitions of a lease another member let lapse (it died or hung)
    handovers: int = 0  # partitions handed over to another member (a join, a graceful leave)
    renewals: int = 0
    losses: int = 0  # renewals refused: another member took the partition
    routed_served: int = 0  # calls routed here by other members, answered
    routed_refused: int = 0  # routed calls answered "not serving here"
    routed_expired: int = 0  # routed calls dropped unanswered at their caller's deadline
    routed_repeats: int = 0  # routed writes asked again, answered with the first answer

    @property
    def owned(self) -> tuple[int, ...]:
        """The partitions whose lease this member holds."""
        return tuple(lease.partition for lease in self.leases)

    @property
    def assigned(self) -> tuple[int, ...]:
        """The partitions the assignment gives this member: hosted or starting."""
        return tuple(sorted({*self.hosted, *self.starting}))


@attrs.frozen(kw_only=True)
class CacheStatistics:
    """The whole cache at one instant."""

    ack: str
    status: str
    shards: tuple[ShardStatistics, ...]
    stores: tuple[StoreStatistics, ...]
    store_mailbox_depth: int
    quarantined: int
    alerts: int
    last_alert: str | None
    # Call to acknowledgement of every put and delete that was acknowledged.
    ack_latency: LatencyStatistics = LatencyStatistics()
    # A flush batch from its send to the store actor until the store committed it.
    flush_latency: LatencyStatistics = LatencyStatistics()
    store: str = ""  # Config.store with any password masked
    store_table: str = ""
    uptime: float = 0.0  # seconds since the cache started running (0 before)
    cluster: ClusterStatistics | None = None  # None: a single process (no Config.cluster)

    @property
    def unpersisted(self) -> int:
        return sum(s.unpersisted for s in self.shards)


@attrs.frozen
class CacheEvent:
    """Something that happened, as it happened: ``kind`` is one of :data:`EVENT_KINDS`;
    ``alert`` is True when the cache raised it as an alert too (``Config.on_alert``, the log,
    ``statistics().alerts``)."""

    kind: str
    actor: str
    detail: str
    time: float
    alert: bool = False


#: How many recent events a cache keeps for listeners that come later
#: (:meth:`~writebehind.Cache.recent_events`).
KEPT_EVENTS = 256

#: What a :class:`CacheEvent` can report.
EVENT_KINDS = (
    "crash", "restart", "replay", "flush_failed", "quarantine", "escalation", "fault",
    "torn_tail", "repair", "journal_full", "journal_resumed",
)
