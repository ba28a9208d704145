"""Errors, named for who is at fault.

- The caller's misuse: :class:`ConfigError`, :class:`CacheClosed`, :class:`Overloaded`,
  :class:`Unstorable`.
- What recovery found on disk: :class:`JournalCorruption` (a torn tail is not an error:
  it is repaired and reported, see :class:`TornTail`).
- The journal's own I/O: :class:`JournalFailed`, :class:`JournalLocked`, :class:`JournalFull`.
- The store: :class:`StoreUnavailable`, :class:`StoreRejected`, :class:`SchemaMismatch`,
  :class:`LeaseHeld` (another instance owns the table), :class:`LeaseLost`,
  :class:`StoreFenced` (a cluster partition's newer owner fenced this one out).
- The runtime: :class:`ShardCrashed`, :class:`TooManyRestarts`.
- A call writing many keys, part of which failed: :class:`PartiallyAcknowledged`.

:data:`UNCERTAIN_OUTCOME` names the errors after which a write may or may not have happened;
:func:`leaves` flattens an exception group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._messages import Receipt


class WritebehindError(Exception):
    """Base class of every error writebehind raises on purpose."""


class ConfigError(WritebehindError, ValueError):
    """The configuration is invalid or cannot honour what it declares."""


class CacheClosed(WritebehindError):
    """The cache is not running (not started yet, shutting down, or stopped)."""


class Unstorable(WritebehindError, ValueError):
    """A key or value the configured store could never hold (a NUL in a PostgreSQL text key,
    a key over what its index can hold): refused before anything is acknowledged."""


class Overloaded(WritebehindError):
    """Backpressure: too many dirty entries, or the oldest is too old, and the config says raise."""


class JournalError(WritebehindError):
    """Base class of journal errors."""


class JournalCorruption(JournalError):
    """Damage that is not a torn tail: refuse to start unless the operator asks for repair."""

    def __init__(self, message: str, *, path: str, offset: int) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class JournalLocked(JournalError):
    """Another process holds the journal directory."""

    def __init__(self, message: str, *, path: str, holder_pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid


class JournalFailed(JournalError):
    """The journal instance hit an I/O error (such as EIO on fsync) and is unusable.

    No caller is ever told "durable" after this; reopen the journal to recover.
    """


class JournalFull(JournalError):
    """The disk is full (ENOSPC): the write was refused before anything happened; retry it.

    The journal keeps working (flushes and checkpoints go on) and accepts writes again by
    itself once space returns. What was synced before stays readable."""


class JournalClosed(JournalError):
    """The journal was closed while the caller waited; the write may or may not be durable."""


class Relinquished(WritebehindError):
    """Raised by an actor whose work is no longer its own (cluster mode: its partition's
    lease lapsed, or a newer owner fenced its journal). The supervisor restarts it like a
    crash but does not count it toward the restart intensity: losing many partitions at
    once (a paused member) is not a crash loop, and the restart waits until the work comes
    back (the partition's lease)."""


class StoreError(WritebehindError):
    """Base class of store errors."""


class StoreUnavailable(StoreError):
    """A transient store failure: retried with backoff."""


class StoreRejected(StoreError):
    """The store permanently refused one record: it goes to the quarantine."""


class StoreFenced(StoreError, Relinquished):
    """The store refused a whole batch: it carried a cluster partition's epoch older than
    the one the store recorded for that partition, so a newer owner holds the partition.

    Never retried and never quarantined: nothing of the batch was written, and the newer
    owner replays those records from the partition's journal itself. The incarnation that
    sent it stops (it is a zombie; :class:`Relinquished`: its restart, which waits for the
    partition, is not counted toward the restart intensity). ``partition``, ``epoch`` (the
    batch's) and ``current`` (the store's) say which."""

    def __init__(self, message: str, *, partition: int, epoch: int, current: int) -> None:
        super().__init__(message)
        self.partition = partition
        self.epoch = epoch
        self.current = current


class SchemaMismatch(StoreError):
    """The store's schema version is not one this writebehind understands."""


class LeaseHeld(StoreError):
    """Another live instance holds the store table's lease: this one refuses to start.

    ``holder`` names it (``host``, ``pid``, ``since``, ``expires``)."""

    def __init__(self, message: str, *, holder: Any) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLost(StoreError):
    """Another instance took over this instance's store lease (not renewed in time)."""


class ShardCrashed(WritebehindError):
    """The shard crashed while this write was in flight: it may or may not have happened."""


class PartitionMoved(WritebehindError):
    """Cluster mode: the shard a call waited for was handed over to another member before
    the call did anything; retry it (it is routed to the new owner)."""


class PartitionUnavailable(WritebehindError):
    """Cluster mode: no member served the key's partition within the routing deadline;
    nothing was written. The cluster may be down, or every member that could host it is
    starting."""


class ClusterUnavailable(WritebehindError):
    """Cluster mode: none of ``Config.cluster``'s NATS servers could be reached at start."""


class TooManyRestarts(WritebehindError):
    """An actor crashed more often than the restart intensity allows; the service stopped."""


class PartiallyAcknowledged(WritebehindError):
    """``put_many``/``delete_many`` failed for some keys: it says, key by key, what happened.

    ``acknowledged`` maps each key whose write was acknowledged (as the ack mode says, exactly
    as a ``put`` returning would) to its :class:`~writebehind.Receipt`; ``failed`` maps every
    other key of the call to the error its shard's part met: one of :data:`UNCERTAIN_OUTCOME`
    (:attr:`uncertain`: it may or may not have happened, retry it) or a refusal
    (:attr:`refused`: ``Overloaded``, ``JournalFull``, ``StoreRejected``: it did not happen).
    ``acknowledged`` may be empty. Every key of the call is in exactly one of the two."""

    def __init__(
        self,
        message: str,
        *,
        acknowledged: Mapping[str, Receipt],
        failed: Mapping[str, WritebehindError],
    ) -> None:
        super().__init__(message)
        self.acknowledged: dict[str, Receipt] = dict(acknowledged)
        self.failed: dict[str, WritebehindError] = dict(failed)

    @property
    def uncertain(self) -> list[str]:
        """The failed keys whose write may or may not have happened."""
        return [k for k, e in self.failed.items() if isinstance(e, UNCERTAIN_OUTCOME)]

    @property
    def refused(self) -> list[str]:
        """The failed keys whose write certainly did not happen."""
        return [k for k, e in self.failed.items() if not isinstance(e, UNCERTAIN_OUTCOME)]


#: The errors that leave a write's outcome unknown (it may or may not have happened): the
#: shard crashed with it in flight, the cache closed under it, or the store failed mid-way.
#: A caller that keeps score counts such a write as uncertain, neither landed nor refused.
UNCERTAIN_OUTCOME: tuple[type[WritebehindError], ...] = (
    ShardCrashed, CacheClosed, StoreUnavailable,
)


def leaves(
    exc: BaseException, *, skip: type[BaseException] | tuple[type[BaseException], ...] = ()
) -> list[BaseException]:
    """The errors in ``exc``, groups flattened depth first (``[exc]`` if it is no group),
    leaving out those of the ``skip`` kinds (trio's ``Cancelled``, say)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner, skip=skip)]
    return [] if isinstance(exc, skip) else [exc]


def describe(exc: BaseException) -> str:
    """``Type: message`` of an error, looking through single-error groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
