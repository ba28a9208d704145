"""Partition leases on a JetStream KV bucket: acquire, renew, release (the I/O shell).

The rule (when to create, take or wait; the epoch; when the holder must stop acknowledging)
is pure, in ``_core/_partition_lease.py``. Here every write is a compare-and-set the servers
decide: ``create`` fails if the key exists, ``update`` fails unless the key's last revision is
the one named. So of two contenders exactly one wins, and a holder whose renewal names a
revision that is no longer the last learns that it lost the partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import nats.js.errors
from nats.js.kv import KeyValue

from .._core._errors import ConfigError, WritebehindError
from .._core._partition_lease import (
    DRIFT_MARGIN,
    LEASE_TTL,
    RENEW_EVERY,
    HeldLease,
    KvEntry,
    LeaseValue,
    Step,
    check_timing,
    decide_acquire,
)
from ._bridge import NatsConnection

log = logging.getLogger("writebehind")


class PartitionHeld(WritebehindError):
    """Another member holds the partition's lease and it has not expired."""

    def __init__(self, partition: int, holder: LeaseValue, revision: int) -> None:
        super().__init__(f"partition {partition} is held by {holder.member!r} (revision "
                         f"{revision}, expires at {holder.expires:.3f})")
        self.partition = partition
        self.holder = holder
        self.revision = revision


class PartitionLost(WritebehindError):
    """A renewal was refused: the lease's last revision is no longer this holder's."""


#: How often a release is tried again after this member's own in-flight renewal beat it.
RELEASE_TRIES = 5
#: The bucket's key recording the cluster's number of partitions.
PARTITIONS_KEY = "partitions"


def lease_key(partition: int) -> str:
    return f"p{partition}"


async def open_bucket(conn: NatsConnection, bucket: str, *, replicas: int = 3) -> KeyValue:
    """The lease bucket, created (one revision of history per key) if it does not exist."""
    try:
        return await conn.run(conn.js.key_value, bucket)
    except nats.js.errors.BucketNotFoundError:
        return await conn.run(conn.js.create_key_value, bucket=bucket, history=1,
                              replicas=replicas)


class PartitionLeases:
    """One member's view of the lease bucket. Clocks are injectable for tests: ``wall``
    writes and judges ``expires``, ``monotonic`` times the holder's own deadline."""

    def __init__(
        self, conn: NatsConnection, kv: KeyValue, bucket: str, member: str, *,
        ttl: float = LEASE_TTL,
        renew_every: float = RENEW_EVERY, drift: float = DRIFT_MARGIN,
        wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        check_timing(ttl, renew_every, drift)
        self._conn = conn
        self._kv = kv
        self.bucket = bucket
        self.member = member
        self.ttl = ttl
        self.renew_every = renew_every
        self.drift = drift
        self._wall = wall
        self._monotonic = monotonic
        # Partitions taken from another member whose lease expired (it died or was paused),
        # rather than created, released to us, or retaken.
        self.takeovers = 0

    @classmethod
    async def open(cls, conn: NatsConnection, bucket: str, member: str, *, replicas: int = 3,
                   ttl: float = LEASE_TTL, renew_every: float = RENEW_EVERY,
                   drift: float = DRIFT_MARGIN,
                   wall: Callable[[], float] = time.time) -> PartitionLeases:
        """The bucket (created if missing) and this member's view of it."""
        kv = await open_bucket(conn, bucket, replicas=replicas)
        return cls(conn, kv, bucket, member, ttl=ttl, renew_every=renew_every, drift=drift,
                   wall=wall)

    async def fix_partitions(self, partitions: int) -> None:
        """Record the cluster's number of partitions in the bucket (key ``partitions``) if
        it is not there yet; raise :class:`ConfigError` if it differs from ``partitions``.
        The number decides which partition a key lives in, and epochs are counted per
        partition, so changing it would let a key's newer writes carry older versions."""
        data = str(partitions).encode()
        try:
            await self._conn.run(self._kv.update, PARTITIONS_KEY, data, 0)
            return
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        message = await self._conn.run(
            self._conn.js.get_last_msg, f"KV_{self.bucket}", f"$KV.{self.bucket}.{PARTITIONS_KEY}",
            direct=False,
        )
        recorded = (message.data or b"").decode(errors="replace")
        if recorded != str(partitions):
            raise ConfigError(
                f"this cluster's lease bucket {self.bucket!r} records {recorded} partitions, "
                f"and this instance has {partitions} (Config.partitions / Config.shards): the "
                "number is fixed for a cluster's life; use the same, or a new cluster_name"
            )

    async def read(self, partition: int) -> KvEntry | None:
        """The partition's key as the bucket's stream leader holds it now, or None if it
        never existed. Not ``KeyValue.get``: buckets allow direct gets, which any replica
        answers, possibly before it applied the latest write; a stale read would only make
        a compare-and-set fail, but it would fail needlessly."""
        try:
            message = await self._conn.run(
                self._conn.js.get_last_msg, f"KV_{self.bucket}",
                f"$KV.{self.bucket}.{lease_key(partition)}", direct=False,
            )
        except nats.js.errors.NotFoundError:
            return None
        revision = int(message.seq or 0)
        if (message.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return KvEntry(None, revision)
        return KvEntry(LeaseValue.decode(message.data or b""), revision)

    async def acquire(self, partition: int) -> HeldLease:
        """Take the partition's lease, or raise :class:`PartitionHeld` (someone holds it and
        it has not expired) or :class:`PartitionLost` (a contender wrote between this
        member's read and its write: it won, this one did not)."""
        entry = await self.read(partition)
        decision = decide_acquire(entry, self.member, self._wall())
        if decision.step is Step.WAIT:
            assert decision.holder is not None and entry is not None
            raise PartitionHeld(partition, decision.holder, entry.revision)
        sent_wall, sent = self._wall(), self._monotonic()
        value = LeaseValue(self.member, sent_wall + self.ttl, decision.epoch).encode()
        key = lease_key(partition)
        try:
            # CREATE is an update expecting revision 0 (no message on the key): not nats-py's
            # create(), which on a lost race reads the key back and, from a replica that has
            # not applied the winner's write yet, reports "key not found" instead.
            last = 0 if decision.step is Step.CREATE else decision.last
            revision = await self._conn.run(self._kv.update, key, value, last)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise PartitionLost(f"partition {partition}: another member wrote its lease "
                                f"first ({exc.description})") from None
        if decision.taken_from is not None:
            assert entry is not None and entry.value is not None  # a lapsed lease was read
            self.takeovers += 1
            log.warning("%s took partition %d over from %r, whose lease expired %.2fs ago "
                        "(epoch %d)", self.member, partition, entry.value.member,
                        sent_wall - entry.value.expires, decision.epoch)
        return HeldLease(partition, epoch=decision.epoch, revision=revision, sent=sent,
                         ttl=self.ttl, drift=self.drift, taken_from=decision.taken_from)

    async def renew(self, held: HeldLease) -> HeldLease:
        """Extend the lease by a compare-and-set on ``held.revision``; raises
        :class:`PartitionLost` if that is no longer the key's last revision."""
        sent_wall, sent = self._wall(), self._monotonic()
        value = LeaseValue(self.member, sent_wall + self.ttl, held.epoch).encode()
        try:
            revision = await self._conn.run(
                self._kv.update, lease_key(held.partition), value, held.revision
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            raise PartitionLost(
                f"partition {held.partition}: renewal on revision {held.revision} (epoch "
                f"{held.epoch}) refused; the lease was taken over"
            ) from None
        return held.renewed(revision, sent)

    async def retake(self, held: HeldLease) -> HeldLease:
        """A fresh epoch on a lease this member holds (in this process, so it remembers every
        write of the old epoch): a compare-and-set on ``held.revision`` writing the next
        epoch. For a shard incarnation that restarts without waiting out its own lease.
        Raises :class:`PartitionLost` if the revision is no longer the key's last."""
        sent_wall, sent = self._wall(), self._monotonic()
        epoch = held.epoch + 1
        value = LeaseValue(self.member, sent_wall + self.ttl, epoch).encode()
        try:
            revision = await self._conn.run(
                self._kv.update, lease_key(held.partition), value, held.revision
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            raise PartitionLost(
                f"partition {held.partition}: retake on revision {held.revision} (epoch "
                f"{held.epoch}) refused; the lease moved on"
            ) from None
        return HeldLease(held.partition, epoch=epoch, revision=revision, sent=sent,
                         ttl=self.ttl, drift=self.drift)

    async def release(self, held: HeldLease) -> None:
        """Give the partition up at once (a graceful leave): mark the lease expired on the
        holder's last revision, so the next owner need not wait. Not a delete: the key keeps
        the epoch, which the next owner counts on. A refused write means it was taken over
        already; nothing to release."""
        value = LeaseValue(self.member, 0.0, held.epoch).encode()
        revision = held.revision
        for _ in range(RELEASE_TRIES):
            try:
                await self._conn.run(self._kv.update, lease_key(held.partition), value,
                                     revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            except nats.js.errors.APIError as exc:
                if exc.err_code not in (10071, 10164):
                    raise
            # Refused: taken over, or this member's own renewal of the same revision
            # landed first (it was in flight). In that case the lease is still ours, with
            # another revision: release that one, or the next owner waits out the TTL.
            entry = await self.read(held.partition)
            if (entry is None or entry.value is None or entry.value.member != self.member
                    or entry.value.epoch != held.epoch or entry.value.expires == 0):
                return
            revision = entry.revision
