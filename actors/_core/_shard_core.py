"""The shard's state machine: pure, synchronous, deterministic.

A shard owns a key range. For every key it holds an :class:`Entry` that is in exactly one of
these states (the invariant the rest of the runtime leans on):

- *dirty*: written since the store last confirmed it; listed in ``dirty`` (oldest first). A
  dirty entry whose journal record has not yet reached the ack mode's durability (written
  for ``ack='journal'``, synced for ``ack='fsync'``) is also listed in ``journaling``, and is
  not sent to the store until :meth:`ShardCore.note_durable` passes its sequence: the store
  must never hold a write its journal could still lose (a restart would then replay an
  older record under it);
- *in flight*: handed to a store actor in a batch that has not been answered yet;
- *quarantined*: the store refused it for good; kept (and its journal record pinned) until
  retried or overwritten;
- *clean*: ``persisted_version >= version``; listed in ``clean`` (least recently settled first),
  the only entries that may be evicted.

A dirty key rewritten before it is flushed is *coalesced*: the batch carries only its newest
version. When the store answers that it holds a *newer* version than a record it was sent
(:class:`Superseded`: say, ``ack='memory'`` lost that newer write's journal record in a power
loss, and the restart replayed an older one), the entry is dropped, so the next read reads the
store's value through instead of serving the older one. The journal may be checkpointed up
to :meth:`ShardCore.persisted_mark`: every journal record at or below it is persisted, or
superseded by a newer record of the same key (in the map or in the store).

Time is an argument (``now``), never read here; randomness (retry jitter) comes from the
``random.Random`` the owner passes in, so a run replays exactly from its seed.
"""

from __future__ import annotations

import collections
import itertools
import math
import random
from collections.abc import Container, Iterable
from typing import Protocol

import attrs

from ._messages import Fence, FlushBatch, Rejection, StoreRecord, Superseded

_COMPACT_AFTER = 4096


def _compacted(queue: dict[str, None], deleted: int) -> tuple[dict[str, None], int]:
    """``queue`` and its count of deletions, or a fresh copy and 0.

    ``dirty`` and ``clean`` are insertion-ordered dicts used as queues: deleting from the front
    leaves dead slots that every ``next(iter(...))`` walks over until the dict resizes (after
    150k front deletions one such call took 0.1 ms). Past ``_COMPACT_AFTER`` deletions, once
    they outnumber the live keys, a copy drops them (amortized O(1) per deletion).
    """
    if deleted > _COMPACT_AFTER and deleted > len(queue):
        return dict(queue), 0
    return queue, deleted


class Replayable(Protocol):
    """What :meth:`ShardCore.replay` reads of a journal record."""

    @property
    def key(self) -> str: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def version(self) -> int: ...
    @property
    def seq(self) -> int: ...


@attrs.define(slots=True)
class Entry:
    value: bytes | None  # None is a tombstone
    version: int
    seq: int  # journal sequence of this version; 0 when read from the store
    persisted_version: int  # newest version the store is known to hold (0: unknown)
    # When its oldest write not yet sent to the store was made (its first write since it
    # was clean or since its last write left in a batch); None when clean. ``dirty`` lists
    # keys in the order of this stamp, so its first key is the next to come of age.
    dirty_since: float | None = None
    quarantined: bool = False


@attrs.frozen
class InFlight:
    records: tuple[StoreRecord, ...]
    oldest_since: float


@attrs.frozen
class CoreStatistics:
    """What :meth:`ShardCore.statistics` reports (times are the core's ``now``)."""

    entries: int
    dirty: int
    inflight_batches: int
    unpersisted: int
    oldest_dirty_since: float | None
    failures: int  # consecutive failed batches
    batches_acked: int
    records_persisted: int
    evictions: int
    quarantined: int


@attrs.define
class FlushPolicy:
    """When to build the next batch, and how long to back off after a failed one."""

    flush_interval: float = 0.5
    batch_size: int = 512  # records per store transaction
    flush_threshold: int = 4096  # dirty keys that trigger a flush before the interval ends
    # The fraction of flush_interval a key waits, at least, before a batch due by the
    # interval carries it (the bench's Zipf replay: 1.0 to 1.06x the coalescer's floor
    # taking any key, 0.97 to 1.0x with 0.5, for up to 1.5x the transactions).
    min_wait: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0.0),
                                                           attrs.validators.le(1.0)])
    max_inflight: int = 4
    retry_initial: float = 0.05
    retry_max: float = 5.0

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self.retry_max, self.retry_initial * 2.0 ** min(failures - 1, 32))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class ShardCore:
    """One shard's map, dirty set, in-flight batches and quarantine."""

    def __init__(
        self,
        shard: int,
        incarnation: int,
        policy: FlushPolicy,
        *,
        max_entries: int,
        rng: random.Random,
        hold_until_durable: bool = False,
        fence: Fence | None = None,
    ) -> None:
        self.shard = shard
        self.incarnation = incarnation
        self.fence = fence  # carried by every batch (cluster mode: the partition's epoch)
        self.policy = policy
        self.max_entries = max_entries
        self.rng = rng
        self.entries: dict[str, Entry] = {}
        self.dirty: dict[str, None] = {}
        self.clean: dict[str, None] = {}
        self.inflight: dict[int, InFlight] = {}
        self.inflight_records = 0
        self.quarantine: dict[str, Rejection] = {}
        # With hold_until_durable: the journal's durable sequence (ack='journal': written,
        # 'fsync': synced), and the dirty keys whose newest record is above it (a subset of
        # ``dirty``, never sent) with (seq, key) of those records in journal order.
        self.hold_until_durable = hold_until_durable
        self.durable_seq = 0
        self.journaling: dict[str, None] = {}
        self._undurable: collections.deque[tuple[int, str]] = collections.deque()
        self.last_seq = 0  # highest journal sequence applied
        self.flush_requested = False
        self.failures = 0  # consecutive failed batches
        self.retry_at = -math.inf
        self._next_batch_id = 1
        # (seq, key) of writes that may still be needed, in journal order (seqs only grow, so
        # a deque stays sorted); stale items are dropped lazily from the front.
        self._pending: collections.deque[tuple[int, str]] = collections.deque()
        self.batches_acked = 0
        self.records_persisted = 0
        self.evictions = 0
        self.superseded = 0  # entries dropped because the store holds newer versions
        self.mutations = 0  # bumped by every write and eviction (guards read-through fills)
        self._dirty_deleted = 0  # front deletions since ``dirty`` was last compacted
        self._clean_deleted = 0  # the same for ``clean``

    # -- writes -------------------------------------------------------------------------------

    def write(self, key: str, value: bytes | None, version: int, seq: int, now: float) -> int:
        """Apply a put (or a delete, when ``value`` is None) that the journal holds at ``seq``;
        returns how many keys are dirty now (what the actor's flush trigger looks at)."""
        self.mutations += 1
        dirty = self.dirty
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = Entry(value, version, seq, 0, now)
        else:
            if version <= entry.version:
                self.note_seq(seq)  # journaled but superseded: the mark may pass it
                return len(self.dirty)  # an older write never undoes a newer one
            if key not in dirty:
                # Its first write not yet sent: clean until now, or its last write is in
                # flight (or was refused). The flush interval counts from here, not from
                # when it last was clean: a hot key rewritten during every flight is never
                # clean, and an age from its first write ever made every batch due at once.
                if entry.dirty_since is None:
                    self.clean.pop(key, None)
                entry.dirty_since = now
            if entry.quarantined:
                entry.quarantined = False
                del self.quarantine[key]
            entry.value, entry.version, entry.seq = value, version, seq
        dirty[key] = None
        if seq:
            self._pending.append((seq, key))
            self.last_seq = max(self.last_seq, seq)
            if self.hold_until_durable and seq > self.durable_seq:
                self.journaling[key] = None
                self._undurable.append((seq, key))
        return len(dirty)

    def durable_mark(self) -> int:
        """The journal sequence the core knows to be durable (see :meth:`note_durable`)."""
        return self.durable_seq

    def note_durable(self, seq: int) -> int:
        """The journal holds every record up to ``seq`` as durably as the ack mode promises:
        release the dirty keys that waited for it; returns how many may now be sent."""
        if seq <= self.durable_seq:
            return 0
        self.durable_seq = seq
        undurable, journaling, entries = self._undurable, self.journaling, self.entries
        released = 0
        while undurable and undurable[0][0] <= seq:
            record_seq, key = undurable.popleft()
            entry = entries.get(key)
            # Only the key's newest record decides (an older one of a rewritten key does not).
            if key in journaling and (entry is None or entry.seq <= record_seq):
                del journaling[key]
                released += 1
        return released

    def replay(self, records: Iterable[Replayable], now: float) -> int:
        """Rebuild from journal records (``key``, ``value``, ``version``, ``seq``), in order.

        They come from a journal's recovery, which synced what it found: they are durable."""
        entries, dirty, pending = self.entries, self.dirty, self._pending
        count = 0
        last = self.last_seq
        for record in records:
            count += 1
            key = record.key
            if key in entries:
                self.last_seq = last
                self.write(key, record.value, record.version, record.seq, now)
                last = self.last_seq
                continue
            # A key's first record: what write() would do, without its general checks.
            seq = record.seq
            entries[key] = Entry(record.value, record.version, seq, 0, now)
            dirty[key] = None
            pending.append((seq, key))
            if seq > last:
                last = seq
        self.last_seq = last
        self.mutations += count
        if self.hold_until_durable:
            self.note_durable(last)
        return count

    def note_seq(self, seq: int) -> None:
        """Record a journal sequence that carries no write (so the mark can pass it)."""
        self.last_seq = max(self.last_seq, seq)

    # -- reads --------------------------------------------------------------------------------

    def read(self, key: str) -> Entry | None:
        """``key``'s entry (its ``value`` None is a tombstone), or None on a miss; a hit on a
        clean entry makes it the most recently used (the last to be evicted)."""
        entry = self.entries.get(key)
        if entry is not None and key in self.clean:
            clean = self.clean
            del clean[key]
            clean[key] = None
        return entry

    def peek(self, key: str) -> Entry | None:
        """``key``'s entry, or None, leaving the eviction order as it is."""
        return self.entries.get(key)

    def mutation_count(self) -> int:
        """Bumped by every write and eviction: a read-through may cache what it read only
        if this has not moved since the read began."""
        return self.mutations

    def load_clean(self, record: StoreRecord) -> None:
        """Keep what a read-through found in the store, unless a write got there first."""
        if record.key in self.entries:
            return
        self.entries[record.key] = Entry(record.value, record.version, 0, record.version)
        self.clean[record.key] = None
        self.evict()

    def settle(self, record: StoreRecord, *, superseded: bool = False) -> None:
        """A write-through (``ack='store'``) committed: keep it clean unless something newer is
        (in the map, or, when ``superseded``, in the store: then the map keeps nothing)."""
        if superseded:
            self.drop_superseded(record.key, record.version)
            return
        self.mutations += 1
        entry = self.entries.get(record.key)
        if entry is None:
            self.entries[record.key] = Entry(record.value, record.version, 0, record.version)
            self.clean[record.key] = None
        elif record.version >= entry.version:
            entry.value, entry.version = record.value, record.version
            entry.persisted_version = max(entry.persisted_version, record.version)
            if entry.dirty_since is None:
                self.clean.pop(record.key, None)
                self.clean[record.key] = None
        else:
            entry.persisted_version = max(entry.persisted_version, record.version)
        self.evict()

    # -- flushing -----------------------------------------------------------------------------

    @property
    def unpersisted(self) -> int:
        """Entries written but not confirmed by the store (dirty plus in flight)."""
        return len(self.dirty) + self.inflight_records

    def request_flush(self) -> None:
        """Someone waits for the store (a flush, a full shard): send what is dirty now,
        without waiting for the interval or the threshold."""
        self.flush_requested = True

    def oldest_dirty_since(self) -> float | None:
        """When the oldest unpersisted write became dirty (first in flight or first dirty)."""
        oldest = None
        if self.inflight:
            oldest = next(iter(self.inflight.values())).oldest_since
        if self.dirty:
            since = self.entries[next(iter(self.dirty))].dirty_since
            if oldest is None or (since is not None and since < oldest):
                oldest = since
        return oldest

    def _sendable(self) -> bool:
        """Is any dirty key's record durable enough to send? (``journaling`` is in ``dirty``.)"""
        return len(self.dirty) > len(self.journaling)

    def due(self, now: float) -> bool:
        """Should a batch be built now?"""
        if not self._sendable() or len(self.inflight) >= self.policy.max_inflight:
            return False  # nothing that may be sent, or no room for another batch
        if now < self.retry_at:
            return False
        if self.flush_requested or len(self.dirty) >= self.policy.flush_threshold:
            return True
        if len(self.entries) > self.max_entries:
            return True  # eviction pressure: only clean entries can go
        return now >= self._oldest_sendable_since() + self.policy.flush_interval

    def next_deadline(self, now: float) -> float:
        """When :meth:`due` next becomes true by itself (``inf``: only a new event can)."""
        if not self._sendable() or len(self.inflight) >= self.policy.max_inflight:
            return math.inf  # (a journal record turning durable is such an event)
        if self.due(now):
            return now
        return max(self.retry_at, self._oldest_sendable_since() + self.policy.flush_interval)

    def _oldest_sendable_since(self) -> float:
        """``dirty_since`` of the oldest dirty key that may be sent (call only when one may).

        Not simply the first dirty key: a hot key is rewritten in nearly every group commit,
        so it often waits in ``journaling`` at the front, of age but not sendable; timing the
        interval from it made every wake-up due and sent each few keys as they were written.
        """
        dirty, journaling = self.dirty, self.journaling
        key = next(iter(dirty))
        if key in journaling:  # the few keys of the group commit under way, at most
            key = next(k for k in dirty if k not in journaling)
        since = self.entries[key].dirty_since
        assert since is not None
        return since

    def take_batch(self, now: float) -> FlushBatch | None:
        """Move up to ``batch_size`` dirty keys, oldest first, into a new in-flight batch
        (never one whose journal record is not durable yet).

        A batch due only by the interval carries just the keys that have waited at least
        ``min_wait`` of it: one that took the oldest ``batch_size`` whatever their age sent
        keys written a moment before, each a store row a later write of the key would
        have replaced (a flush, the threshold or eviction pressure take any key)."""
        if not self.due(now):
            return None
        dirty, entries, journaling = self.dirty, self.entries, self.journaling
        policy = self.policy
        if (self.flush_requested or len(dirty) >= policy.flush_threshold
                or len(entries) > self.max_entries):
            limit = math.inf
        else:
            limit = now - policy.flush_interval * policy.min_wait
        # ``dirty`` is in the order of ``dirty_since``, so the keys old enough come first.
        sendable = (key for key in dirty if key not in journaling) if journaling else dirty
        keys: list[str] = []
        records: list[StoreRecord] = []
        append = records.append
        oldest = math.inf
        for key in itertools.islice(sendable, policy.batch_size):
            entry = entries[key]
            since = entry.dirty_since
            assert since is not None
            if since > limit:
                break
            keys.append(key)
            append(StoreRecord(key, entry.value, entry.version))
            if since < oldest:
                oldest = since
        for key in keys:
            del dirty[key]
        self.dirty, self._dirty_deleted = _compacted(dirty, self._dirty_deleted + len(keys))
        if not self.dirty:
            self.flush_requested = False
        batch_id = self._next_batch_id
        self._next_batch_id += 1
        batch = tuple(records)
        self.inflight[batch_id] = InFlight(batch, oldest)
        self.inflight_records += len(batch)
        return FlushBatch(self.shard, self.incarnation, batch_id, batch, self.fence)

    def on_ack(
        self,
        batch_id: int,
        rejected: tuple[Rejection, ...] = (),
        superseded: tuple[Superseded, ...] = (),
    ) -> None:
        """The store committed a batch (refusing ``rejected`` records for good, and leaving
        ``superseded`` ones under the newer versions it holds)."""
        flight = self._pop_flight(batch_id)
        if flight is None:
            return
        refused = {(r.key, r.version): r for r in rejected}
        stale = {(s.key, s.version) for s in superseded}
        self.failures = 0
        self.retry_at = -math.inf
        self.batches_acked += 1
        entries, dirty, clean = self.entries, self.dirty, self.clean
        persisted = 0
        for record in flight.records:
            key, version = record.key, record.version
            entry = entries.get(key)
            if entry is None:
                continue  # dropped meanwhile (evicted, or superseded by a later answer)
            if stale and (key, version) in stale:
                self.drop_superseded(key, version)
                continue
            if refused:
                rejection = refused.get((key, version))
                if rejection is not None:
                    if entry.version == version and key not in dirty:
                        entry.quarantined = True
                        self.quarantine[key] = rejection
                    continue
            persisted += 1
            if version > entry.persisted_version:
                entry.persisted_version = version
            if entry.persisted_version >= entry.version and key not in dirty:
                entry.dirty_since = None
                clean[key] = None
        self.records_persisted += persisted
        self.evict()

    def drop_superseded(self, key: str, version: int) -> None:
        """The store holds a newer version of ``key`` than ``version``: unless the map holds
        a newer write still on its way to the store, drop the entry (the next read reads the
        store's value through); its journal records are superseded, so the mark passes them."""
        entry = self.entries.get(key)
        if entry is None or entry.version > version or key in self.dirty:
            return
        self.mutations += 1
        self.superseded += 1
        del self.entries[key]
        self.clean.pop(key, None)
        if self.quarantine.pop(key, None) is not None:
            entry.quarantined = False

    def on_nack(self, batch_id: int, now: float) -> float:
        """The batch did not commit: requeue what it carried first, back off; returns the delay."""
        flight = self._pop_flight(batch_id)
        if flight is None:
            return 0.0
        entries, dirty = self.entries, self.dirty
        requeue: list[str] = []
        for r in flight.records:
            entry = entries.get(r.key)
            if entry is None:
                continue
            if r.key in dirty:
                # Rewritten while in flight: that newer write is owed since this batch's
                # writes were (the age backpressure and the interval must see it).
                since = entry.dirty_since
                if since is None or since > flight.oldest_since:
                    entry.dirty_since = flight.oldest_since
                requeue.append(r.key)
            elif entry.version == r.version:
                requeue.append(r.key)
        if requeue:
            # First in line, ahead of keys dirtied since (``a | b`` keeps a's order).
            self.dirty = dict.fromkeys(requeue) | dirty
        self.failures += 1
        delay = self.policy.backoff(self.failures, self.rng)
        self.retry_at = now + delay
        return delay

    def _pop_flight(self, batch_id: int) -> InFlight | None:
        flight = self.inflight.pop(batch_id, None)
        if flight is not None:
            self.inflight_records -= len(flight.records)
        return flight

    def quarantined(self) -> list[Rejection]:
        """Every record the store refused for good, oldest refusal first."""
        return list(self.quarantine.values())

    def retry_quarantine(self, now: float, keys: Container[str] | None = None) -> int:
        """Put every quarantined record (of ``keys``, if given) back in the dirty set."""
        retried: list[str] = []
        for key in list(self.quarantine):
            if keys is not None and key not in keys:
                continue
            self.entries[key].quarantined = False
            del self.quarantine[key]
            retried.append(key)
        if retried:
            # First in line: they have waited since before the refusal (``dirty`` stays in
            # the order of ``dirty_since``).
            self.dirty = dict.fromkeys(retried) | self.dirty
        return len(retried)

    def discard_quarantine(self, keys: Container[str] | None = None) -> int:
        """An operator gave up every quarantined record (of ``keys``, if given): drop their
        entries (reads go to the store, which keeps what it held) and let the journal's mark
        pass their records."""
        count = 0
        for key in list(self.quarantine):
            if keys is not None and key not in keys:
                continue
            del self.quarantine[key]
            self.entries.pop(key, None)
            self.clean.pop(key, None)
            self.mutations += 1
            count += 1
        return count

    # -- the journal mark and eviction --------------------------------------------------------

    def persisted_mark(self) -> int:
        """Every journal record at or below this is persisted or superseded."""
        pending = self._pending
        while pending:
            seq, key = pending[0]
            entry = self.entries.get(key)
            if entry is None or entry.seq != seq or (
                entry.persisted_version >= entry.version and not entry.quarantined
            ):
                pending.popleft()
                continue
            return seq - 1
        return self.last_seq

    def in_flight(self) -> list[StoreRecord]:
        """Every record of the batches sent (or about to be) and not answered yet."""
        return [record for flight in self.inflight.values() for record in flight.records]

    def owed(self) -> dict[str, int]:
        """Every write the store does not hold yet, as ``key -> version``: what a flush
        called now waits for (quarantined records excepted: nothing is left to try)."""
        entries = self.entries
        owed = {key: entries[key].version for key in self.dirty}
        for flight in self.inflight.values():
            for record in flight.records:
                # The entry's version: a newer write of the key may be in a later batch.
                entry = entries.get(record.key)
                owed[record.key] = record.version if entry is None else entry.version
        return owed

    def paid(self, owed: dict[str, int]) -> bool:
        """Does the store hold each of ``owed`` (or a newer version of its key), or was it
        quarantined or lost?

        Not the checkpoint mark: the mark passes a record superseded by a newer one of its
        key, and a flush must not return while that newer one is still on its way.

        Drops from ``owed`` the keys it finds paid (a key once paid stays paid: the store
        keeps what it holds), so a flush that asks after every batch looks at each key about
        once in all; asking the whole dict each time was quadratic (100k keys: ~1 s of
        event-loop CPU in 512-row batches).
        """
        entries = self.entries
        settled: list[str] = []
        answer = True
        for key, version in owed.items():
            entry = entries.get(key)
            if entry is None or entry.quarantined:
                # Gone with a crashed incarnation (ack='memory'), or refused for good.
                settled.append(key)
                continue
            if entry.persisted_version < min(version, entry.version):
                answer = False
                break
            settled.append(key)
        for key in settled:
            del owed[key]
        return answer

    def is_persisted(self, key: str, version: int, seq: int) -> bool:
        entry = self.entries.get(key)
        if entry is not None and entry.persisted_version >= version:
            return True
        return bool(seq) and self.persisted_mark() >= seq

    def statistics(self) -> CoreStatistics:
        """A snapshot of the counts the actor reports."""
        return CoreStatistics(
            entries=len(self.entries),
            dirty=len(self.dirty),
            inflight_batches=len(self.inflight),
            unpersisted=self.unpersisted,
            oldest_dirty_since=self.oldest_dirty_since(),
            failures=self.failures,
            batches_acked=self.batches_acked,
            records_persisted=self.records_persisted,
            evictions=self.evictions,
            quarantined=len(self.quarantine),
        )

    def evict(self) -> None:
        """Drop least recently settled clean entries beyond ``max_entries``; never a dirty one."""
        excess = len(self.entries) - self.max_entries
        if excess <= 0 or not self.clean:
            return
        clean, entries = self.clean, self.entries
        victims = list(itertools.islice(clean, excess))
        for key in victims:
            del clean[key]
            del entries[key]
        count = len(victims)
        self.evictions += count
        self.mutations += count
        self.clean, self._clean_deleted = _compacted(clean, self._clean_deleted + count)
