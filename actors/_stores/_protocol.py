"""What every store is: the protocol a store actor drives, and what a write returns.

A store keeps, per key, the newest version it was given: writes are versioned upserts that
only move forward, and deletes are tombstones with versions, so an older write (a replay, a
retry, a zombie instance) can never undo a newer one. Each start takes a new *epoch* from the
store's meta table; versions are ``epoch << EPOCH_SHIFT | counter`` (``_core/_routing.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from .._core._errors import StoreFenced
from .._core._messages import Fence, Rejection, StoreRecord, Superseded

#: The tables' layout version, kept in each store's meta table.
SCHEMA_VERSION = 1


class Store(Protocol):
    """What a store actor drives. A ``blocking`` store is called from a worker thread; a
    non-blocking one (an in-memory simulation) is called inline, so a run stays deterministic.
    A non-blocking store may also have a ``latency()`` method: the seconds of (trio) time
    each call spends on the wire, waited before the call.

    Optional, found by name: ``limits`` (what keys it can hold, checked before a write is
    acknowledged; else the URL's kind decides), ``quarantine_rows()`` and
    ``resolve_quarantine(action, keys)`` (its quarantine table, for the ``quarantine``
    command and ``Cache.retry_quarantined``/``discard_quarantined``), and
    ``acquire_lease``/``renew_lease``/``release_lease`` (one instance per table, see
    :class:`LeaseHeld`), and ``write_batch_fenced(records, fence)``: :meth:`write_batch` in
    the same transaction as a check of the batch's :class:`Fence` (cluster mode needs it;
    :func:`check_fence`). A failed call raises :class:`StoreUnavailable`, which is retried."""

    blocking: bool
    # Optionally also ``limits``: a :class:`StoreLimits` saying what keys it can hold, which
    # the cache checks before acknowledging a write (else the URL's kind decides).

    def connect(self) -> None:
        """Open the connection, creating the tables if missing (:class:`SchemaMismatch` if
        they are another version's); called again after a failure to reconnect."""
        ...

    def take_epoch(self) -> int:
        """Atomically increment and return the store's epoch."""
        ...

    def write_batch(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        """Write all records in one transaction; return those that did not land as given:
        refused for good (:class:`Rejection`, quarantined) or not applied because the store
        holds a newer version of the key (:class:`Superseded`). A record whose very version
        the store already holds (a retry) landed."""
        ...

    def read(self, key: str) -> StoreRecord | None:
        """``key``'s row (a tombstone has ``value`` None), or None if the store has none."""
        ...

    def read_all(self) -> dict[str, StoreRecord]:
        """Every row, by key (the harness and tests check a whole store with it)."""
        ...

    def close(self) -> None:
        """Close the connection; closing a closed store does nothing."""
        ...


#: Makes fresh, unconnected stores. One with ``worker = "process"`` (SQLite's, see
#: ``_registry.SQLiteFactory``) pickles, and its stores run in a store worker process.
StoreFactory = Callable[[], Store]

#: What :meth:`Store.write_batch` returns: the records that did not land as given.
WriteOutcome = tuple[Rejection | Superseded, ...]

#: Quarantine resolutions an operator records (``writebehind quarantine``,
#: ``Cache.discard_quarantined``): a discarded write is answered as superseded from then on.
DISCARD = "discard"


def check_fence(fence: Fence, current: int, where: str) -> None:
    """Raise :class:`StoreFenced` if ``current`` (the partition's epoch the store holds now,
    after recording the batch's) is newer than the batch's: the caller's transaction must
    then roll back, so nothing of the batch is written."""
    if current > fence.epoch:
        raise StoreFenced(
            f"{where} refused a batch of partition {fence.partition} from epoch {fence.epoch}: "
            f"the partition's owner now has epoch {current}, so this owner was fenced out "
            "(nothing of the batch was written; the new owner replays it from the journal)",
            partition=fence.partition, epoch=fence.epoch, current=current,
        )


def rejections(outcome: WriteOutcome) -> tuple[Rejection, ...]:
    return tuple(r for r in outcome if isinstance(r, Rejection))


def supersessions(outcome: WriteOutcome) -> tuple[Superseded, ...]:
    return tuple(r for r in outcome if isinstance(r, Superseded))


@attrs.frozen
class QuarantineRow:
    """One row of a store's quarantine table: a record it refused for good."""

    key: str  # as stored (PostgreSQL: a NUL shows as the four characters \x00)
    version: int
    reason: str
    at: str
    resolution: str | None  # None: pending; "discard": an operator gave it up

