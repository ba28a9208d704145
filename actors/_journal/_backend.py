"""What a shard actor needs of its journal, whatever holds the records.

:class:`JournalBackend` is the protocol the shard actor talks to; :class:`~._journal.Journal`
(segment files on a local disk, group commit) is its first implementation, and a replicated
log could be another. A backend gives every record a sequence number, in append order, and
promises two levels of durability: *written* (survives the process crashing: ``ack='journal'``)
and *synced* (survives power loss: ``ack='fsync'``). The shard checkpoints the mark below
which the store holds everything, and at its next start replays the records above it.

The shard gets its journals from an :class:`OpenJournal` the cache hands it, so nothing in the
runtime names the file journal but the default factory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import attrs

from .._core._shard_core import Replayable


@attrs.frozen
class JournalStatistics:
    """A snapshot of a journal's progress. Invariant:
    persisted_seq <= synced_seq <= written_seq < next_seq."""

    shard_id: int
    next_seq: int
    written_seq: int
    synced_seq: int
    persisted_seq: int
    bytes: int
    segments: int
    failed: str | None
    full: str | None = None  # why new records are refused (the disk is full), or None


@attrs.frozen
class Replay:
    """What a journal held when it was opened: the PUT/DELETE records above the last
    checkpoint, in sequence order; ``next_seq``, above every sequence number it holds; and
    ``cuts``, ``(kind, message)`` for whatever opening it had to cut or repair (each an
    alert)."""

    records: Sequence[Replayable]
    next_seq: int
    cuts: tuple[tuple[str, str], ...] = ()


class JournalBackend(Protocol):
    """One shard incarnation's journal: opened by an :class:`OpenJournal`, replayed once,
    run in the incarnation's nursery, closed when the incarnation ends.

    The put path calls :meth:`append_encoded` (``put_many``: :meth:`append_encoded_many`),
    then :meth:`wait_written` (``ack='journal'``) or :meth:`wait_synced` (``ack='fsync'``):
    one call each, so a backend must make them
    cheap (group commit: many appends share one write and one sync). A backend that failed
    raises :class:`~writebehind.JournalError` from them, and from :meth:`run`, which crashes
    the incarnation.
    """

    def replay(self) -> Replay:
        """The records to replay at the incarnation's start (see :class:`Replay`)."""
        ...

    async def run(self, *, task_status: Any = ...) -> None:
        """The backend's own task (the committer): ``nursery.start`` it after replaying;
        it returns after :meth:`close`."""
        ...

    def append_encoded(self, key: bytes, value: bytes | None, version: int) -> int:
        """Buffer a PUT (a DELETE when ``value`` is None) of ``key`` (its UTF-8 bytes) and
        return its sequence number; nothing is durable yet. Raises
        :class:`~writebehind.JournalFull` (nothing appended) while it cannot take more."""
        ...

    def append_encoded_many(self, records: Sequence[tuple[bytes, bytes | None, int]]) -> int:
        """:meth:`append_encoded` of each ``(key, value, version)`` in order, as one append:
        all or nothing, consecutive sequence numbers; returns the last one's (``put_many``
        waits on that one alone). Raises :class:`~writebehind.JournalFull` (nothing
        appended) while it cannot take more."""
        ...

    async def wait_written(self, seq: int) -> None:
        """Return once record ``seq`` survives the process crashing."""
        ...

    async def wait_synced(self, seq: int) -> None:
        """Return once record ``seq`` survives power loss."""
        ...

    async def wait_beyond(self, seq: int, *, synced: bool) -> int:
        """Wait, without asking for a write or a sync, until a record above ``seq`` is
        written (with ``synced``: synced); return the new written (synced) sequence."""
        ...

    def checkpoint_nowait(self, persisted_seq: int) -> int:
        """Record that the store holds every record at or below ``persisted_seq`` (the next
        replay starts above it, and what only such records need may go); returns the
        checkpoint's own sequence number, to wait on for its durability."""
        ...

    def statistics(self) -> JournalStatistics:
        """A snapshot of the backend's progress."""
        ...

    def close(self) -> None:
        """Release everything and wake every waiter (with an error); records not yet
        written are dropped (wait for them first to keep them)."""
        ...


class OpenJournal(Protocol):
    """Opens shard ``shard``'s journal (the cache passes one to each shard actor).

    ``fault_point(point)`` is the harness's seam inside the backend (None: no faults);
    ``on_event(kind, message)`` hears of ``"journal_full"`` and ``"journal_resumed"``.
    Raises :class:`~writebehind.JournalLocked` if another instance holds the journal, and
    :class:`~writebehind.JournalCorruption` on damage it may not cut.
    """

    def __call__(
        self,
        shard: int,
        *,
        fault_point: Callable[[str], None] | None,
        on_event: Callable[[str, str], None],
    ) -> Awaitable[JournalBackend]: ...
