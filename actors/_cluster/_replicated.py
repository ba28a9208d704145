"""A shard's journal on its partition's JetStream subject: the cluster's ``JournalBackend``.

Appends are buffered as journal record frames (the single-process codec, checksums seeded
with the partition) and published by one committer task as group commits, one message at a
time, each stating the subject sequence it expects to be the last (the primitive,
``_journal.py``). A record is *written* and *synced* at the same moment: when JetStream's
publish-ack for the message holding it arrived and this member's lease still allows it to
acknowledge. What that ack means depends on the servers:

- with ``jetstream { sync_interval: always }`` a majority of the stream's replicas wrote
  and fsynced the message: it survives the loss of any minority of NATS machines, and a
  power loss of all of them;
- with the default lazy fsync a majority holds it *in memory* (fsynced within 2 minutes):
  it survives a NATS process or machine failing alone, but a coordinated power loss of the
  NATS machines can lose up to the last ``sync_interval`` of acknowledged writes
  (``specs/cluster.md``, "What each failure costs").

So under ``ack='fsync'`` or ``ack='journal'`` a shard on this backend acknowledges exactly at
the replicated point. Opening the journal fences the subject with the owner's epoch first,
then replays it; a fenced append (a newer owner's fence came first) fails the journal like
a disk failure: the shard crashes and acknowledges none of the records in flight.

Checkpoints are records too (a ``CHECKPOINT`` frame carrying the persisted mark); once the
message holding one is acknowledged, every message whose records all lie at or below the
mark is purged from the subject (never the last message: it anchors the sequence check).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import nats.errors
import trio

from .._core._errors import JournalClosed, JournalFailed, Relinquished, Unstorable
from .._journal._backend import JournalBackend, JournalStatistics, OpenJournal, Replay
from .._journal._codec import JournalRecord, RecordKind, encode_frame, salt_seed
from ._bridge import NatsConnection
from ._epochs import LeaseEpochs
from ._journal import AppendUncertain, Entry, Fenced, PartitionJournal, Unsynced

log = logging.getLogger("writebehind")

_PUT, _DELETE, _CHECKPOINT = int(RecordKind.PUT), int(RecordKind.DELETE), int(RecordKind.CHECKPOINT)
#: Room left in a message for its headers, below the server's ``max_payload``.
HEADER_ROOM = 4096


class PartitionRelinquished(JournalFailed, Relinquished):
    """The journal failed because its partition is no longer this member's: its lease
    lapsed, or a newer owner fenced the subject."""


@attrs.frozen
class _Message:
    """A message of the subject this journal knows of: its stream sequence, the highest
    record seq at or before it (so a purge up to a mark knows which messages to drop) and its
    payload size."""

    stream_seq: int
    last_record: int
    size: int


class ReplicatedJournal:
    """One shard incarnation's journal on partition ``writer.partition``'s subject. Open it
    with :func:`replicated_journals`' factory (which fences and replays first)."""

    def __init__(self, writer: PartitionJournal, leases: LeaseEpochs, entries: Sequence[Entry],
                 *, max_payload: int) -> None:
        self._writer = writer
        self._leases = leases
        self.partition = writer.partition
        self.epoch = writer.epoch
        self._seed = salt_seed(self.partition)
        self._limit = max(1024, max_payload - HEADER_ROOM)
        mark = max((r.version for e in entries for r in e.records
                    if r.kind == RecordKind.CHECKPOINT), default=0)
        top = 0
        self._messages: collections.deque[_Message] = collections.deque()
        for entry in entries:
            top = max([top, *(r.seq for r in entry.records)])
            self._messages.append(_Message(entry.seq, top, 0))  # sizes unknown from replay
        self._replay = Replay(_above_checkpoint(entries), top + 1)
        self.replayed_messages = len(entries)
        self._next_seq = top + 1
        self._written_seq = top  # replayed: in the stream already
        self._persisted_seq = mark
        self._frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self._buffered = 0
        self._checkpoints: list[tuple[int, int]] = []  # (record seq, mark) not yet acked
        self._purge_to = 0  # the mark whose messages are still to purge
        self._written_event = trio.Event()
        self._work = trio.Event()
        self._failure: JournalFailed | None = None
        self._closed = False
        self._running = False
        self.commits = 0
        self.purges = 0

    # -- JournalBackend --------------------------------------------------------------------

    def replay(self) -> Replay:
        return self._replay

    def append_encoded(self, key: bytes, value: bytes | None, version: int) -> int:
        self._check_usable()
        seq = self._next_seq
        frame = encode_frame(seq, _PUT if value is not None else _DELETE, key, value, version,
                             self._seed)
        if len(frame) > self._limit:
            raise Unstorable(
                f"a record of {len(frame)} bytes does not fit in one NATS message (the "
                f"servers' max_payload leaves {self._limit}); nothing was written"
            )
        self._push(seq, frame)
        return seq

    def append_encoded_many(self, records: Sequence[tuple[bytes, bytes | None, int]]) -> int:
        """Every record, in order, or none (each must fit in one message); returns the last
        one's seq. A group commit may carry them in several messages: until the last is
        acknowledged, the earlier ones' outcome is as unknown as theirs."""
        if not records:
            raise ValueError("append_encoded_many needs at least one record")
        self._check_usable()
        first = self._next_seq
        frames = [
            encode_frame(first + i, _PUT if value is not None else _DELETE, key, value,
                         version, self._seed)
            for i, (key, value, version) in enumerate(records)
        ]
        too_big = max(len(frame) for frame in frames)
        if too_big > self._limit:
            raise Unstorable(
                f"a record of {too_big} bytes does not fit in one NATS message (the servers' "
                f"max_payload leaves {self._limit}); nothing was written"
            )
        for i, frame in enumerate(frames):
            self._push(first + i, frame)
        return first + len(frames) - 1

    def checkpoint_nowait(self, persisted_seq: int) -> int:
        self._check_usable()
        if not 0 <= persisted_seq < self._next_seq:
            raise ValueError(f"checkpoint_nowait({persisted_seq!r}): only issued seqs "
                             f"(0 <= seq < {self._next_seq}) can be persisted")
        seq = self._next_seq
        self._push(seq, encode_frame(seq, _CHECKPOINT, b"", None, persisted_seq, self._seed))
        self._checkpoints.append((seq, persisted_seq))
        return seq

    async def wait_written(self, seq: int) -> None:
        """Return once the message holding record ``seq`` was acknowledged by JetStream
        (and the lease allowed it); the same point as :meth:`wait_synced`."""
        if not 0 < seq < self._next_seq:
            raise ValueError(f"seq {seq!r} was never issued (next_seq is {self._next_seq})")
        if self._written_seq >= seq:
            await trio.lowlevel.checkpoint()
            return
        while self._written_seq < seq:
            self._check_usable()
            await self._written_event.wait()

    wait_synced = wait_written

    async def wait_beyond(self, seq: int, *, synced: bool) -> int:
        while self._written_seq <= seq:
            self._check_usable()
            await self._written_event.wait()
        return self._written_seq

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The committer: publish group commits one at a time, purge behind checkpoints.
        Raises :class:`JournalFailed` when fenced, when a publish's outcome is unknown, or
        when the lease lapsed; returns after :meth:`close`."""
        if self._running:
            raise RuntimeError("ReplicatedJournal.run() is already running; start it once")
        self._check_usable()
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wait_for_work()
                if self._closed or self._failure is not None:
                    break
                if self._frames:
                    await self._commit()
                elif not self._leases.may_acknowledge(self.partition, self.epoch):
                    self._fail(f"partition {self.partition}: the lease of epoch {self.epoch} "
                               "lapsed (not renewed in time, or taken over)", lost=True)
                    break
                if self._purge_to and not self._closed and self._failure is None:
                    await self._purge()
        except Fenced as exc:
            self._fail(f"partition {self.partition} was fenced by a newer owner; epoch "
                       f"{self.epoch} acknowledges nothing more ({exc})", lost=True)
        except (AppendUncertain, Unsynced) as exc:
            self._fail(f"partition {self.partition}: a group commit's outcome is unknown "
                       f"({exc}); its records are not acknowledged")
        except nats.errors.Error as exc:
            self._fail(f"partition {self.partition}: publishing a group commit failed "
                       f"({type(exc).__name__}: {exc})")
        finally:
            self._running = False
        if self._failure is not None:
            raise type(self._failure)(str(self._failure))

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            shard_id=self.partition,
            next_seq=self._next_seq,
            written_seq=self._written_seq,
            synced_seq=self._written_seq,
            persisted_seq=self._persisted_seq,
            bytes=sum(m.size for m in self._messages) + self._buffered,
            segments=len(self._messages),
            failed=None if self._failure is None else str(self._failure),
        )

    def may_serve(self) -> bool:
        """Whether the shard may still answer reads of the partition: as for acknowledging,
        only while the lease stands. A paused owner that wakes past its lease must not
        answer from memory: a newer owner may have acknowledged newer writes meanwhile (the
        cluster suite's zombie found such stale reads)."""
        return (self._failure is None and not self._closed
                and self._leases.may_acknowledge(self.partition, self.epoch))

    def close(self) -> None:
        """Stop; wake every waiter with :class:`JournalClosed`. Buffered records are dropped
        (the connection and the lease belong to the member, not to this journal)."""
        if self._closed:
            return
        self._closed = True
        self._written_event = _fire(self._written_event)
        self._work.set()

    # -- internals -------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise type(self._failure)(str(self._failure))
        if self._closed:
            raise JournalClosed(f"partition {self.partition}'s journal is closed")

    def _push(self, seq: int, frame: bytes) -> None:
        self._frames.append((seq, frame))
        self._buffered += len(frame)
        self._next_seq = seq + 1
        self._work.set()

    async def _wait_for_work(self) -> None:
        while not (self._closed or self._failure is not None or self._frames):
            # Wake when the lease would lapse too: an owner that can no longer renew stops.
            until = self._leases.acknowledge_until(self.partition, self.epoch)
            if until <= self._leases.now():
                return
            self._work = trio.Event()
            with trio.move_on_after(until - self._leases.now()):
                await self._work.wait()

    async def _commit(self) -> None:
        frames: list[bytes] = []
        size = 0
        while self._frames and (not frames or size + len(self._frames[0][1]) <= self._limit):
            seq, frame = self._frames.popleft()
            frames.append(frame)
            size += len(frame)
        self._buffered -= size
        last = seq
        if self._writer.last is None:
            # A commit was cancelled in flight (the committer restarted): learn where the
            # subject ends, or that a newer owner fenced it (Fenced).
            await self._writer.resync()
        stream_seq = await self._writer.append_payload(b"".join(frames))
        if self._closed:
            return
        # JetStream stored it; but only an owner whose lease still stands may acknowledge.
        if not self._leases.may_acknowledge(self.partition, self.epoch):
            self._fail(f"partition {self.partition}: the lease of epoch {self.epoch} lapsed "
                       f"before the publish-ack of records up to {last}; not acknowledged",
                       lost=True)
            return
        self.commits += 1
        self._messages.append(_Message(stream_seq, last, size))
        self._written_seq = last
        self._written_event = _fire(self._written_event)
        done = [mark for seq, mark in self._checkpoints if seq <= last]
        if done:
            self._checkpoints = [(s, m) for s, m in self._checkpoints if s > last]
            self._persisted_seq = max(self._persisted_seq, *done)
            self._purge_to = self._persisted_seq

    async def _purge(self) -> None:
        mark, upto = self._purge_to, 0
        for message in self._messages:
            if message.last_record > mark:
                break
            upto = message.stream_seq
        if upto:
            try:
                await self._writer.purge(upto)
            except nats.errors.Error as exc:  # harmless: the next checkpoint purges again
                log.warning("partition %d: purge up to %d failed (%s)", self.partition, upto,
                            exc)
                return
            self.purges += 1
            while self._messages and self._messages[0].stream_seq <= upto:
                if self._messages[0].stream_seq == self._writer.last:
                    break  # the anchor is kept on the servers, so it is kept here too
                self._messages.popleft()
        if self._purge_to == mark:
            self._purge_to = 0

    def _fail(self, reason: str, *, lost: bool = False) -> None:
        """Fail the journal; ``lost``: because the partition is no longer this member's
        (the shard's restart then waits for its lease and is no crash)."""
        if self._failure is None:
            self._failure = PartitionRelinquished(reason) if lost else JournalFailed(reason)
            log.warning("%s", reason)
        self._written_event = _fire(self._written_event)
        self._work.set()


def _fire(event: trio.Event) -> trio.Event:
    event.set()
    return trio.Event()


def replicated_journals(conn: NatsConnection, cluster: str, leases: LeaseEpochs, *,
                        timeout: float = 5.0) -> OpenJournal:
    """The :class:`OpenJournal` of a cluster member: shard ``n``'s journal is partition
    ``n``'s subject, opened with the epoch ``leases`` holds it with (the shard took it just
    before); opening fences the subject, then replays it. The stream must exist
    (``_journal.open_stream``). The harness's fault points are not wired in here."""

    async def open_journal(
        shard: int,
        *,
        fault_point: Callable[[str], None] | None,
        on_event: Callable[[str, str], None],
    ) -> JournalBackend:
        writer = PartitionJournal(conn, cluster, shard, leases.epoch_of(shard), timeout=timeout)
        await writer.fence()
        entries = await writer.replay(1)
        return ReplicatedJournal(writer, leases, entries, max_payload=conn.client.max_payload)

    return open_journal


def _above_checkpoint(entries: Sequence[Entry]) -> list[JournalRecord]:
    """The PUT/DELETE records of ``entries`` above the newest checkpoint among them."""
    mark = max((r.version for e in entries for r in e.records
                if r.kind == RecordKind.CHECKPOINT), default=0)
    return [r for e in entries for r in e.records
            if r.kind != RecordKind.CHECKPOINT and r.seq > mark]
