"""Where a shard incarnation's epoch comes from.

A version is ``epoch << EPOCH_SHIFT | counter`` (``_routing.make_version``): every incarnation
takes a fresh epoch, above every epoch any earlier incarnation (of any shard, in any process
writing the same table) took, so its versions are newer than anything journaled or stored.
The store hands epochs out (``Store.take_epoch``, an atomic counter in its meta table); a
cluster member takes them from the lease of the shard's partition instead
(``_cluster/_epochs.py``), hence the shard argument, and its epochs fence the store too
(``fences``). The shard actor knows only this.
"""

from __future__ import annotations

from typing import Protocol


class EpochSource(Protocol):
    """Hands out epochs, each above every one handed out before.

    ``fences``: are the epochs a partition's fencing tokens (a cluster: epoch = the
    partition lease's, shard = partition)? Then every batch a shard sends carries
    ``(shard, epoch)`` and the store refuses one from an epoch older than the partition's
    newest (``StoreFenced``). The store's own counter says no: one process owns the table.
    """

    fences: bool

    async def take_epoch(self, shard: int) -> int:
        """A new epoch for an incarnation of ``shard`` (an ``int`` greater than every
        earlier one); a source may ignore ``shard`` (the store's counter) or own a lease
        per shard (a cluster's partition). May raise
        ``StoreUnavailable`` (or the source's own error), which crashes the incarnation
        that asked, and its supervisor retries."""
        ...

    def fenced(self, shard: int, epoch: int) -> None:
        """The store refused a batch of ``shard`` from ``epoch``: a newer owner holds the
        partition. A lease source forgets that lease at once (as if a renewal had been
        refused), so nothing more of it is acknowledged and the next ``take_epoch`` waits
        for the partition instead of retaking it. Only called when ``fences`` is true."""
        ...
