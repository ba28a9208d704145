"""Frozen snapshots returned by ``Cache.statistics()``."""

from __future__ import annotations

import attrs


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
    batches_per_second: float = 0.0  # store acks over the last RATE_WINDOW seconds


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

    @property
    def unpersisted(self) -> int:
        return sum(s.unpersisted for s in self.shards)


@attrs.frozen
class CacheEvent:
    """Something that happened, as it happened: ``kind`` is one of :data:`EVENT_KINDS`."""

    kind: str
    actor: str
    detail: str
    time: float


#: What a :class:`CacheEvent` can report.
EVENT_KINDS = (
    "crash", "restart", "replay", "flush_failed", "quarantine", "escalation", "fault",
)
