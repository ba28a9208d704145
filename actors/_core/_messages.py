"""Messages between actors: frozen value classes named for what they are."""

from __future__ import annotations

import attrs


@attrs.frozen
class StoreRecord:
    """One key's state as the store keeps it: a value, or a tombstone when ``value`` is None."""

    key: str
    value: bytes | None
    version: int

    @property
    def deleted(self) -> bool:
        return self.value is None


@attrs.frozen
class Rejection:
    """The store refused one record for good; it goes to the quarantine."""

    key: str
    version: int
    reason: str


@attrs.frozen
class Superseded:
    """The store did not apply one record because it holds a newer version of the key (or an
    operator discarded this write): the store's row stands, and the shard's copy is stale."""

    key: str
    version: int


@attrs.frozen
class Fence:
    """A batch's fencing token in cluster mode: the store applies the batch only if
    ``epoch`` is at least the newest epoch it recorded for ``partition`` (and records it)."""

    partition: int
    epoch: int


@attrs.frozen
class FlushBatch:
    """Records a shard hands to a store actor, written in one transaction; with a ``fence``
    (cluster mode) only if the store's epoch check lets it through."""

    shard: int
    incarnation: int
    batch_id: int
    records: tuple[StoreRecord, ...]
    fence: Fence | None = None


@attrs.frozen
class StoreAck:
    """The batch's transaction committed; ``rejected`` records were quarantined, the rest landed.

    A record whose version lost to a newer one already in the store is also listed in
    ``superseded``: the store holds something newer than what the shard sent, so the shard
    must not keep serving its own copy as if it were what the store holds.
    """

    batch_id: int
    rejected: tuple[Rejection, ...] = ()
    superseded: tuple[Superseded, ...] = ()


@attrs.frozen
class StoreNack:
    """The batch's transaction did not commit (or its outcome is unknown): retry it all."""

    batch_id: int
    reason: str


@attrs.frozen
class BatchFenced:
    """The store refused the whole batch (nothing of it written): its partition has an owner
    with a newer epoch. Not retried: the sending incarnation is a zombie and must stop."""

    batch_id: int
    reason: str
    current: int  # the partition's epoch the store holds


@attrs.frozen
class FlushRequest:
    """Ask a shard to build batches now rather than at its next deadline."""


@attrs.frozen
class Receipt:
    """What ``put``/``delete`` return: which write was acknowledged, to wait on its persistence."""

    key: str
    version: int
    shard: int
    seq: int
