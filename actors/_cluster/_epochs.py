"""A shard incarnation's epoch from its partition's lease: the cluster's ``EpochSource``.

Partition = shard id. :meth:`LeaseEpochs.take_epoch` acquires the partition's lease (waiting
out another holder's lease until it expired, or taking a released one at once) and returns the
partition's new epoch: one more than the epoch its key recorded, written by the
compare-and-set that acquires it, so above every epoch any earlier owner of the partition
took; renewals carry it unchanged. Epochs count acquisitions of one partition, and a key only
ever lives in one partition (their number is fixed for a cluster's life). An incarnation
that restarts while this member still holds the lease *retakes* it (a compare-and-set on its
own revision): the next epoch at once, without waiting out its own lease.

:meth:`LeaseEpochs.run` renews every held lease; the journal asks :meth:`may_acknowledge`
before it lets a write be acknowledged, which is false from ``ttl - drift`` after the last
renewal was *sent* (``_core/_partition_lease.py``), so an owner whose renewals stop stops
acknowledging before anyone else may take the partition.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import trio

from .._core._errors import WritebehindError
from .._core._partition_lease import HeldLease
from .._core._routing import EPOCH_SHIFT
from .._core._stats import PartitionLeaseStatistics
from ._lease import PartitionHeld, PartitionLeases, PartitionLost

log = logging.getLogger("writebehind")

#: The largest epoch a version can carry: versions are ``epoch << EPOCH_SHIFT | counter`` in
#: 64 signed bits. Only acquisitions of a partition move its epoch (one each), so this is
#: 2^23 acquisitions of one partition: a guard, not a budget renewals use up.
MAX_EPOCH = (2**63 - 1) >> EPOCH_SHIFT
#: How long to wait before asking again after a lost race or a NATS error.
RETRY = 0.2


class EpochOverflow(WritebehindError):
    """A partition's next epoch no longer fits in a version's epoch bits."""


class LeaseEpochs:
    """One member's partition leases, as the :class:`~writebehind._core._epochs.EpochSource`
    of a cache whose shards are the cluster's partitions. Start :meth:`run` (the renew loop)
    beside the cache; ``monotonic`` must be the clock the leases were sent on. Its epochs
    are fences: every batch of partition ``p`` carries ``(p, epoch)`` and the store refuses
    one older than the newest it saw (a zombie's, after a take-over)."""

    fences = True

    def __init__(self, leases: PartitionLeases, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.leases = leases
        self._held: dict[int, HeldLease] = {}
        self._monotonic = monotonic
        self._wall = wall
        self.acquired = 0  # leases acquired (take-overs included) or retaken
        self.renewals = 0
        self.lost = 0  # renewals refused: another member took the partition

    # -- EpochSource ---------------------------------------------------------------------

    async def take_epoch(self, shard: int) -> int:
        """Hold partition ``shard``'s lease with a new epoch; waits while another member's
        lease has not expired. NATS errors are retried (a leader election, a node down)."""
        while True:
            held = self._held.get(shard)
            try:
                if held is not None:
                    new = await self.leases.retake(held)
                else:
                    new = await self.leases.acquire(shard)
            except PartitionHeld as exc:
                wait = exc.holder.expires - self._wall()
                log.info("partition %d is held by %r for %.2fs more; waiting", shard,
                         exc.holder.member, wait)
                # Asked again well before the expiry: a holder handing the partition over
                # releases it early (cluster membership), and the next owner should not
                # wait out the whole lease.
                await trio.sleep(max(RETRY, min(wait + 0.01, self.leases.renew_every / 2)))
                continue
            except PartitionLost:
                # A race lost (a contender, or this member's renewal of the same revision):
                # read again.
                if held is not None and self._held.get(shard) is held:
                    del self._held[shard]
                await trio.sleep(RETRY)
                continue
            except nats.errors.Error as exc:
                log.warning("taking partition %d's lease failed (%s); retrying", shard, exc)
                await trio.sleep(RETRY)
                continue
            if new.epoch > MAX_EPOCH:
                raise EpochOverflow(
                    f"partition {shard}: its epoch {new.epoch} is over "
                    f"{MAX_EPOCH}, the largest epoch a version holds; see specs/cluster.md"
                )
            self._held[shard] = new
            self.acquired += 1
            return new.epoch

    # -- what the journal asks -----------------------------------------------------------

    def epoch_of(self, partition: int) -> int:
        """The epoch this member holds ``partition`` with; raises if it holds none."""
        held = self._held.get(partition)
        if held is None:
            raise PartitionLost(f"partition {partition}: this member holds no lease on it")
        return held.epoch

    def acknowledge_until(self, partition: int, epoch: int) -> float:
        """The monotonic time until which writes of ``partition`` in ``epoch`` may be
        acknowledged (``-inf`` once the lease is lost or held with another epoch)."""
        held = self._held.get(partition)
        if held is None or held.epoch != epoch:
            return -math.inf
        return held.acknowledge_until()

    def may_acknowledge(self, partition: int, epoch: int) -> bool:
        return self._monotonic() < self.acknowledge_until(partition, epoch)

    def fenced(self, shard: int, epoch: int) -> None:
        """The store refused a batch of partition ``shard`` from ``epoch``: a member with a
        newer epoch took it. Forget the lease as a refused renewal would (unless a newer
        incarnation of ours retook it meanwhile): the journal stops acknowledging it, and
        the next :meth:`take_epoch` acquires it afresh, waiting while the other holds it."""
        held = self._held.get(shard)
        if held is not None and held.epoch <= epoch:
            del self._held[shard]
            self.lost += 1
            log.warning("partition %d: the store refused epoch %d's batch; another member "
                        "holds the partition now", shard, epoch)

    def now(self) -> float:
        return self._monotonic()

    def held(self) -> dict[int, HeldLease]:
        """The leases held now, by partition (a copy)."""
        return dict(self._held)

    def lease_statistics(self) -> tuple[PartitionLeaseStatistics, ...]:
        """The leases held now, by partition, with their epochs and remaining time."""
        now = self._monotonic()
        return tuple(
            PartitionLeaseStatistics(
                partition=p, epoch=h.epoch, expires_in=h.sent + h.ttl - now,
                acknowledge_for=h.acknowledge_until() - now,
            )
            for p, h in sorted(self._held.items())
        )

    # -- renewing and releasing ----------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Renew each held lease ``renew_every`` after its last write was sent, until
        cancelled. A refused renewal drops the lease (the partition's journal then refuses
        to acknowledge); a failed one is retried at the next tick, and the lease lapses
        if they keep failing."""
        task_status.started()
        tick = self.leases.renew_every / 4
        while True:
            now = self._monotonic()
            due = [h for h in self._held.values()
                   if h.renew_due(now, self.leases.renew_every)]
            if due:
                async with trio.open_nursery() as nursery:
                    for held in due:
                        nursery.start_soon(self._renew, held)
            await trio.sleep(tick)

    async def _renew(self, held: HeldLease) -> None:
        try:
            renewed = await self.leases.renew(held)
        except PartitionLost as exc:
            if self._held.get(held.partition) is held:
                del self._held[held.partition]
                self.lost += 1
                log.warning("%s", exc)
            return
        except nats.errors.Error as exc:
            log.warning("renewing partition %d's lease failed (%s); retrying",
                        held.partition, exc)
            return
        if self._held.get(held.partition) is held:  # not retaken meanwhile
            self._held[held.partition] = renewed
            self.renewals += 1

    async def release(self, partition: int) -> None:
        """Give ``partition``'s lease up (a hand-over, after its shard was flushed, sealed
        and stopped), so its next owner need not wait for the expiry. Best effort."""
        held = self._held.pop(partition, None)
        if held is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self.leases.release(held)
            except nats.errors.Error as exc:
                log.warning("releasing partition %d's lease failed (%s)", partition, exc)

    async def release_all(self) -> None:
        """Give every held lease up (a graceful stop, after the cache drained), so the
        next owner need not wait for expiry. Best effort: a lease not released expires."""
        held, self._held = self._held, {}
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            for lease in held.values():
                try:
                    await self.leases.release(lease)
                except nats.errors.Error as exc:
                    log.warning("releasing partition %d's lease failed (%s)",
                                lease.partition, exc)
