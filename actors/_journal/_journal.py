"""The trio shell around the journal: group commit, rotation, checkpoints, the lock.

How a batch moves (the committer is :meth:`Journal.run`)::

    append_nowait ──> buffer ──write──> written_seq ──fdatasync──> synced_seq
                                        (wakes wait_written)       (wakes wait_synced)

Every append that arrives while a write or a sync is in progress joins the next batch, so
N concurrent writers cost one write and one fdatasync. Waiters share one ``trio.Event`` per
batch and level: an event is set and replaced each time its sequence number advances.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

import attrs
import outcome
import trio

from .._core._config import Config
from .._core._errors import ConfigError, JournalClosed, JournalFailed, JournalFull, JournalLocked
from ._backend import JournalBackend, JournalStatistics, OpenJournal, Replay
from ._codec import HEADER_SIZE, JournalRecord, RecordKind, SegmentHeader, encode_frame, salt_seed
from ._fs import FileSystem, OsFileSystem
from ._recovery import RecoveryReport, Segment, create_segment, describe_cuts, recover

_P = ParamSpec("_P")
_T = TypeVar("_T")
# Writes bigger than this go to a worker thread; smaller ones are cheaper inline.
_INLINE_WRITE_LIMIT = 1 << 20
# With a write interval, a buffer this large is written at once anyway.
_BATCHED_WRITE_LIMIT = 1 << 20
# Disk space reserved for a segment beyond segment_bytes: the batch that crosses the
# threshold, and the checkpoints written while the disk is full (they free segments).
_RESERVE_HEADROOM = 1 << 20
# While the disk is full: how often to try again the rotation or the write that failed.
FULL_RETRY = 1.0
_PUT, _DELETE = int(RecordKind.PUT), int(RecordKind.DELETE)


def _no_fault(point: str) -> None:
    pass


class Journal:
    """A shard's durable dirty journal, in segment files on a local disk: the first
    :class:`JournalBackend`. Create with :meth:`open`; start :meth:`run`."""

    def __init__(
        self,
        *,
        fs: FileSystem,
        directory: str,
        shard_id: int,
        lock_token: int,
        salt: int,
        segments: list[Segment],
        fd: int,
        recovery: RecoveryReport,
        segment_bytes: int,
        sync_interval: float,
        fault_point: Callable[[str], None],
        write_interval: float = 0.0,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self._fs = fs
        self._directory = directory
        self._shard_id = shard_id
        self._lock_token = lock_token
        self._salt = salt
        self._seed = salt_seed(salt)
        self._segments = segments  # oldest first; the last one is active, never deleted
        self._fd = fd  # open on segments[-1]
        self.recovery = recovery
        self._segment_bytes = segment_bytes
        self._sync_interval = sync_interval
        self._write_interval = write_interval
        self._fault_point = fault_point
        self._next_seq = recovery.next_seq
        # Encoded records next_seq - (records in buffer) .. next_seq - 1, not yet written.
        self._buffer = bytearray()
        self._written_seq = recovery.next_seq - 1  # recovery synced what it found
        self._synced_seq = recovery.next_seq - 1
        self._sync_wanted = 0  # highest seq someone awaits in wait_synced
        self._write_wanted = 0  # highest seq someone awaits in wait_written
        self._buffer_since = math.inf  # when the oldest unwritten record was appended
        self._persisted_seq = recovery.persisted_seq
        self._pending_checkpoints: list[tuple[int, int]] = []  # (record seq, mark)
        self._written_event = trio.Event()
        self._synced_event = trio.Event()
        self._work = trio.Event()
        self._last_sync = -math.inf
        self._failure: JournalFailed | None = None
        # The disk is full: why, while new PUT/DELETE records are refused (checkpoints are
        # not: they let segments go). Cleared by the rotation or write that succeeds later.
        self._full: str | None = None
        self._write_blocked = False  # the last write met ENOSPC: its bytes are buffered again
        self._retry_at = math.inf  # when a full journal tries its rotation or write again
        self._on_event = on_event
        self._closed = False
        self._running = False
        self._io_busy = False  # a worker thread is using self._fd: defer closing it
        self._released = False

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        shard_id: int,
        fs: FileSystem | None = None,
        segment_bytes: int = 8 * 2**20,
        repair: bool = False,
        sync_interval: float = 1.0,
        write_interval: float = 0.0,
        fault_point: Callable[[str], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> Journal:
        """Lock ``directory`` (created if missing), recover it, and return the journal.

        Raises :class:`JournalLocked` if another journal holds it and
        :class:`JournalCorruption` on damage that is not a torn tail (unless ``repair``).
        ``on_event(kind, message)`` hears of ``"journal_full"`` and ``"journal_resumed"``.
        """
        if not 0 <= shard_id < 2**32:
            raise ConfigError(f"shard_id must be in [0, 2**32), got {shard_id!r}")
        if segment_bytes < 4096:
            raise ConfigError(f"segment_bytes must be at least 4096, got {segment_bytes!r}")
        if not sync_interval > 0:
            raise ConfigError(f"sync_interval must be > 0 seconds, got {sync_interval!r}")
        if not write_interval >= 0:
            raise ConfigError(f"write_interval must be >= 0 seconds, got {write_interval!r}")
        fs = fs if fs is not None else OsFileSystem()
        path = os.fspath(directory)
        fault = fault_point if fault_point is not None else _no_fault
        await run_io(fs, fs.makedirs, path)
        lock_path = os.path.join(path, "LOCK")
        try:
            token = fs.lock(lock_path, os.getpid())
        except BlockingIOError:
            holder = _read_pid(fs, lock_path)
            raise JournalLocked(
                f"{path} is in use by another journal (pid {holder}); "
                "only one journal may own a directory",
                path=lock_path,
                holder_pid=holder,
            ) from None
        try:
            found = await run_io(
                fs, recover, fs, path, shard_id=shard_id, repair=repair,
                fault_point=fault_point, reserve=_reservation(segment_bytes),
            )
        except BaseException:
            fs.unlock(token)
            raise
        return cls(
            fs=fs,
            directory=path,
            shard_id=shard_id,
            lock_token=token,
            salt=found.salt,
            segments=found.segments,
            fd=found.fd,
            recovery=found.report,
            segment_bytes=segment_bytes,
            sync_interval=sync_interval,
            write_interval=write_interval,
            fault_point=fault,
            on_event=on_event,
        )

    def replay(self) -> Replay:
        """What :meth:`open` recovered, for the shard to replay (every cut it made, each
        described for an alert: a torn tail may be synced data destroyed). The records are
        handed over, not kept: a journal lives as long as its shard incarnation, and a
        million recovered records held for that long is tens of MB every full GC scans."""
        report = self.recovery
        self.recovery = attrs.evolve(report, records=())
        return Replay(report.records, report.next_seq, tuple(describe_cuts(report)))

    # -- appending ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise type(self._failure)(str(self._failure))
        if self._closed:
            raise JournalClosed(f"the journal of {self._directory} is closed")

    def _push(self, record: JournalRecord) -> int:
        was_empty = not self._buffer
        if was_empty:
            self._buffer_since = trio.current_time()
        self._buffer += record.encode(self._salt)
        self._next_seq += 1
        self._wake_committer(was_empty)
        return record.seq

    def _wake_committer(self, was_empty: bool) -> None:
        # With a write interval only the first record (it starts the clock) or a full buffer
        # changes the committer's deadline: don't wake it per append.
        if was_empty or self._write_interval <= 0 or len(self._buffer) >= _BATCHED_WRITE_LIMIT:
            self._work.set()

    def append_nowait(self, kind: RecordKind, key: str, value: bytes | None, version: int) -> int:
        """Buffer a PUT or DELETE and return its sequence number (nothing is written yet)."""
        if kind is RecordKind.PUT:
            if value is None:
                raise ValueError(f"a PUT record needs a value, got value=None for key {key!r}")
        elif kind is RecordKind.DELETE:
            if value is not None:
                raise ValueError(f"a DELETE record carries no value, got {value!r}")
        else:
            raise ValueError("append_nowait takes PUT or DELETE; use checkpoint_nowait()")
        return self.append_encoded(key.encode("utf-8"), value, version)

    def append_encoded(self, key: bytes, value: bytes | None, version: int) -> int:
        """:meth:`append_nowait` for a caller that already has the key's UTF-8 bytes: a PUT
        when ``value`` is bytes, a DELETE when it is None. The shard's hot path: it encodes
        straight from the fields (no :class:`JournalRecord`) into the pending buffer.

        Raises :class:`JournalFull` (nothing appended) while the disk is full."""
        if self._failure is not None or self._closed or self._full is not None:
            self._check_usable()
            raise JournalFull(self._full)
        seq = self._next_seq
        buffer = self._buffer
        was_empty = not buffer
        if was_empty:
            self._buffer_since = trio.current_time()
        buffer += encode_frame(
            seq, _PUT if value is not None else _DELETE, key, value, version, self._seed
        )
        self._next_seq = seq + 1
        self._wake_committer(was_empty)
        return seq

    def append_encoded_many(self, records: Sequence[tuple[bytes, bytes | None, int]]) -> int:
        """:meth:`append_encoded` of every ``(key, value, version)`` of ``records``, in order,
        as one append (all or nothing; one wake of the committer); returns the last one's
        sequence number (the first's is that minus ``len(records) - 1``).

        Raises :class:`JournalFull` (nothing appended) while the disk is full."""
        if not records:
            raise ValueError("append_encoded_many needs at least one record")
        if self._failure is not None or self._closed or self._full is not None:
            self._check_usable()
            raise JournalFull(self._full)
        seq = self._next_seq
        seed = self._seed
        frames = [
            encode_frame(seq + i, _PUT if value is not None else _DELETE, key, value, version,
                         seed)
            for i, (key, value, version) in enumerate(records)
        ]
        buffer = self._buffer
        was_empty = not buffer
        if was_empty:
            self._buffer_since = trio.current_time()
        buffer += b"".join(frames)
        self._next_seq = seq + len(frames)
        self._wake_committer(was_empty)
        return seq + len(frames) - 1

    def checkpoint_nowait(self, persisted_seq: int) -> int:
        """Record that every seq <= ``persisted_seq`` is in the store; returns the checkpoint
        record's seq. Once it is synced, segments holding only such records are deleted."""
        self._check_usable()
        if not 0 <= persisted_seq < self._next_seq:
            raise ValueError(
                f"checkpoint_nowait({persisted_seq!r}): only issued seqs "
                f"(0 <= seq < {self._next_seq}) can be persisted"
            )
        record = JournalRecord(seq=self._next_seq, kind=RecordKind.CHECKPOINT, key="",
                               value=None, version=persisted_seq)
        self._pending_checkpoints.append((record.seq, persisted_seq))
        return self._push(record)

    def _check_seq(self, seq: int) -> None:
        if not 0 < seq < self._next_seq:
            raise ValueError(f"seq {seq!r} was never issued (next_seq is {self._next_seq})")

    async def wait_written(self, seq: int) -> None:
        """Return once record ``seq`` is written to the OS (it survives a process crash)."""
        self._check_seq(seq)
        if self._written_seq >= seq:
            await trio.lowlevel.checkpoint()
            return
        if seq > self._write_wanted:
            self._write_wanted = seq
            self._work.set()
        while self._written_seq < seq:
            self._check_usable()
            await self._written_event.wait()

    async def wait_synced(self, seq: int) -> None:
        """Return once record ``seq`` is fdatasync'd (it survives power loss)."""
        self._check_seq(seq)
        if seq > self._sync_wanted:
            self._sync_wanted = seq
            self._work.set()
        if self._synced_seq >= seq:
            await trio.lowlevel.checkpoint()
            return
        while self._synced_seq < seq:
            self._check_usable()
            await self._synced_event.wait()

    async def wait_beyond(self, seq: int, *, synced: bool) -> int:
        """Wait until a record above ``seq`` is written (or, with ``synced``, fdatasync'd),
        without asking for a write or a sync; return the new written (synced) sequence."""
        while True:
            current = self._synced_seq if synced else self._written_seq
            if current > seq:
                return current
            self._check_usable()
            await (self._synced_event if synced else self._written_event).wait()

    # -- the committer ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The committer loop; start it with ``nursery.start``. Returns after :meth:`close`;
        raises :class:`JournalFailed` (or :class:`JournalFull`) if the journal fails."""
        if self._running:
            raise RuntimeError("Journal.run() is already running; start it once")
        self._check_usable()
        self._running = True
        self._last_sync = trio.current_time()
        task_status.started()
        try:
            while True:
                await self._wait_for_work()
                if self._closed or self._failure is not None:
                    break
                try:
                    await self._commit_once()
                except OSError as exc:
                    self._fail(exc)
        finally:
            self._running = False
        if self._failure is not None:
            raise type(self._failure)(str(self._failure))

    def _unsynced(self) -> bool:
        return self._written_seq > self._synced_seq

    def _write_due(self, now: float) -> float:
        """When the buffered records must be written: now if anyone waits for them (or the
        buffer is large), else ``write_interval`` after the oldest was appended."""
        if not self._buffer:
            return math.inf
        if self._write_blocked:
            return self._retry_at
        if (
            self._write_interval <= 0
            or self._write_wanted >= self._written_seq + 1
            or self._sync_wanted > self._written_seq
            or self._pending_checkpoints
            or len(self._buffer) >= _BATCHED_WRITE_LIMIT
        ):
            return now
        return self._buffer_since + self._write_interval

    async def _wait_for_work(self) -> None:
        while not (self._closed or self._failure is not None):
            now = trio.current_time()
            deadline = self._write_due(now)
            if self._full is not None:
                deadline = min(deadline, self._retry_at)
            if deadline <= now:
                return
            if self._unsynced():
                if self._sync_wanted > self._synced_seq or self._pending_checkpoints:
                    return
                deadline = min(deadline, self._last_sync + self._sync_interval)
                if now >= deadline:
                    return
            self._work = trio.Event()
            with trio.move_on_at(deadline):
                await self._work.wait()

    async def _commit_once(self) -> None:
        if self._buffer and not (self._write_blocked and trio.current_time() < self._retry_at):
            data, self._buffer = bytes(self._buffer), bytearray()
            since, self._buffer_since = self._buffer_since, math.inf
            last = self._next_seq - 1
            try:
                await self._write_batch(data, last)
            except _NoSpace as exc:
                # Nothing of it was written: keep it for the retry, ahead of what came since.
                self._buffer[:0] = data
                self._buffer_since = since
                self._write_blocked = True
                self._become_full(str(exc))
                return
            if self._closed:
                return
            self._write_blocked = False
        rotate = self._segments[-1].size >= self._segment_bytes
        if self._unsynced() and (rotate or self._sync_due()):
            target = self._written_seq
            await self._io(self._sync_blocking)
            if self._closed:
                return
            self._synced(target)
            await self._apply_checkpoints()
        if rotate and not self._unsynced() and not self._closed:
            if self._full is None or trio.current_time() >= self._retry_at:
                await self._rotate()
        if (
            self._full is not None
            and not self._write_blocked
            and self._segments[-1].size < self._segment_bytes
        ):
            self._resume()

    async def _write_batch(self, data: bytes, last: int) -> None:
        """Write ``data`` (records up to ``last``), and fdatasync it too if a sync is due."""
        if self._fs.blocking and self._sync_due():
            # Write and fdatasync in one worker-thread hop: one wake per group commit,
            # and no write(2) on the event loop's thread, where it can block for as long
            # as another file's fsync holds the file system's journal (seen: 1.4 ms).
            await self._io(self._write_blocking, data, True)
            if self._closed:
                return
            self._written_seq = last
            self._written_event = _fire(self._written_event)
            self._synced(last)
            await self._apply_checkpoints()
        else:
            await self._write(data)
            if self._closed:
                return
            self._written_seq = last
            self._written_event = _fire(self._written_event)

    def _sync_due(self) -> bool:
        """Must what is written (or about to be) be fdatasync'd now?"""
        return bool(
            self._sync_wanted > self._synced_seq
            or self._pending_checkpoints
            or trio.current_time() >= self._last_sync + self._sync_interval
        )

    def _synced(self, target: int) -> None:
        self._synced_seq = target
        self._last_sync = trio.current_time()
        self._synced_event = _fire(self._synced_event)

    def _sync_blocking(self) -> None:
        try:
            self._fs.fdatasync(self._fd)
        except OSError as exc:
            path = self._segments[-1].path
            # Never retried: after a failed fsync the kernel may have dropped the dirty
            # pages, so a later "successful" fsync would prove nothing.
            raise _Fatal(f"fdatasync of {path} failed ({exc}); the journal stopped at "
                         f"synced seq {self._synced_seq}: reopen it to recover") from exc

    def _write_blocking(self, data: bytes, sync: bool = False) -> None:
        """Append ``data`` to the active segment (then fdatasync it, if ``sync``). Runs
        inline for a non-blocking file system, else in the worker thread the committer
        awaits (the event loop's thread touches the segment only after it returns)."""
        segment = self._segments[-1]
        before = segment.size
        view = memoryview(data)
        try:
            while view:
                count = self._fs.write(self._fd, bytes(view))
                segment.size += count
                view = view[count:]
        except OSError as exc:
            self._cut_partial_write(segment, before)
            if exc.errno == errno.ENOSPC and segment.size == before:
                raise _NoSpace(
                    f"no space left on device writing {segment.path}: new writes are refused "
                    f"until space returns (retried every {FULL_RETRY:g}s); what was synced "
                    "stays readable"
                ) from exc
            if exc.errno == errno.ENOSPC:  # and part of it could not be cut back
                raise _Fatal(
                    f"no space left on device writing {segment.path}; the journal stopped "
                    f"at synced seq {self._synced_seq}, which stays readable"
                ) from exc
            raise _Fatal(f"write to {segment.path} failed ({exc})") from exc
        if sync:
            self._sync_blocking()

    async def _write(self, data: bytes) -> None:
        if len(data) > _INLINE_WRITE_LIMIT and self._fs.blocking:
            await self._io(self._write_blocking, data)
            return
        self._write_blocking(data)
        if not self._fs.blocking:
            await trio.lowlevel.checkpoint()  # let appends pile up, as a real write would

    def _cut_partial_write(self, segment: Segment, before: int) -> None:
        # Best effort: a partial frame would only be a torn tail, but cutting it frees space.
        if segment.size == before:
            return
        try:
            self._fs.truncate(segment.path, before)
            segment.size = before
        except OSError:
            pass

    async def _apply_checkpoints(self) -> None:
        durable = [mark for seq, mark in self._pending_checkpoints if seq <= self._synced_seq]
        if not durable:
            return
        self._pending_checkpoints = [
            (seq, mark) for seq, mark in self._pending_checkpoints if seq > self._synced_seq
        ]
        self._persisted_seq = max(self._persisted_seq, *durable)
        while len(self._segments) > 1 and self._segments[1].first_seq - 1 <= self._persisted_seq:
            oldest = self._segments[0]
            self._fault_point("journal.segment_delete")
            await self._io(self._fs.unlink, oldest.path)
            # One directory fsync per unlink, so the survivors are always a contiguous suffix.
            await self._io(self._fs.fsync_dir, self._directory)
            self._segments.pop(0)
            if self._full is not None:
                self._retry_at = trio.current_time()  # space was freed: try again now
            if self._closed:
                return

    async def _rotate(self) -> None:
        header = SegmentHeader(shard_id=self._shard_id, salt=self._salt,
                               first_seq=self._written_seq + 1)
        try:
            path, fd = await self._io(create_segment, self._fs, self._directory, header,
                                      reserve=_reservation(self._segment_bytes))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            # The full disk shows here, not mid-append: records keep going to the current
            # segment's reserved space (only checkpoints now) until a retry finds space.
            self._become_full(
                f"no space left on device for a new segment in {self._directory}: new writes "
                f"are refused until space returns (retried every {FULL_RETRY:g}s); flushing "
                "and checkpointing go on"
            )
            return
        if self._closed:
            self._fs.close(fd)
            return
        self._fs.close(self._fd)
        self._fd = fd
        self._segments.append(Segment(path, header.first_seq, HEADER_SIZE))

    async def _io(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if not self._fs.blocking:
            result = fn(*args, **kwargs)
            await trio.lowlevel.checkpoint()
            return result
        self._io_busy = True
        try:
            return await _in_worker_thread(functools.partial(fn, *args, **kwargs))
        finally:
            self._io_busy = False
            if self._closed:
                self._release()

    def _become_full(self, reason: str) -> None:
        first = self._full is None
        self._full = reason
        self._retry_at = trio.current_time() + FULL_RETRY
        if first and self._on_event is not None:
            self._on_event("journal_full", reason)

    def _resume(self) -> None:
        self._full = None
        self._retry_at = math.inf
        if self._on_event is not None:
            self._on_event("journal_resumed", f"space is back in {self._directory}: new writes "
                           "are accepted again")

    def _fail(self, exc: OSError) -> None:
        if isinstance(exc, _Fatal):
            failure = JournalFailed(str(exc))
        else:
            failure = JournalFailed(f"journal I/O failed in {self._directory}: {exc}")
        self._failure = failure
        self._written_event = _fire(self._written_event)
        self._synced_event = _fire(self._synced_event)

    # -- the rest -----------------------------------------------------------------------

    def statistics(self) -> JournalStatistics:
        """A frozen snapshot of the journal's progress."""
        return JournalStatistics(
            shard_id=self._shard_id,
            next_seq=self._next_seq,
            written_seq=self._written_seq,
            synced_seq=self._synced_seq,
            persisted_seq=self._persisted_seq,
            bytes=sum(s.size for s in self._segments),
            segments=len(self._segments),
            failed=None if self._failure is None else str(self._failure),
            full=self._full,
        )

    def close(self) -> None:
        """Release the lock and the file; wake every pending waiter with JournalClosed.

        Buffered records not yet written are dropped: await ``wait_synced`` first to keep them.
        """
        if self._closed:
            return
        self._closed = True
        self._written_event = _fire(self._written_event)
        self._synced_event = _fire(self._synced_event)
        self._work.set()
        if not self._io_busy:
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._fs.close(self._fd)
        self._fs.unlock(self._lock_token)


class _Fatal(OSError):
    """An I/O failure already phrased for the operator."""


class _NoSpace(Exception):
    """A write met ENOSPC and was cut back whole: it can be tried again later."""


def _reservation(segment_bytes: int) -> int:
    """Disk space to allocate for a segment as it is created."""
    return segment_bytes + min(segment_bytes, _RESERVE_HEADROOM)


def _fire(event: trio.Event) -> trio.Event:
    event.set()
    return trio.Event()


async def run_io(fs: FileSystem, fn: Callable[_P, _T], *args: _P.args,
                 **kwargs: _P.kwargs) -> _T:
    """Call ``fn`` for ``fs``: in a worker thread if ``fs`` blocks, else inline."""
    if fs.blocking:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    return fn(*args, **kwargs)


def _read_pid(fs: FileSystem, lock_path: str) -> int | None:
    try:
        return int(fs.read_file(lock_path).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def file_journals(config: Config, fs: FileSystem | None = None) -> OpenJournal:
    """The default :class:`OpenJournal`: shard ``n``'s :class:`Journal` in
    ``Config.journal_dir/shard-NNNN``, on ``fs`` (the harness's simulated disk, or the OS)."""

    async def open_journal(
        shard: int,
        *,
        fault_point: Callable[[str], None] | None,
        on_event: Callable[[str, str], None],
    ) -> JournalBackend:
        return await Journal.open(
            config.journal_dir / f"shard-{shard:04d}",
            shard_id=shard,
            fs=fs,
            segment_bytes=config.segment_bytes,
            repair=config.repair_journal,
            sync_interval=config.journal_sync_interval,
            # ack='memory' acknowledges before any write: batch the writes too.
            write_interval=config.memory_write_interval if config.ack == "memory" else 0.0,
            fault_point=fault_point,
            on_event=on_event,
        )

    return open_journal


async def _in_worker_thread(job: Callable[[], _T]) -> _T:
    """Run ``job`` on trio's thread cache and return its result: ``trio.to_thread.run_sync``
    without what the journal's I/O does not use (a contextvars copy, the capacity limiter,
    and a thread name set and reset per job: two ``prctl`` calls through ctypes, each of
    which gives up the GIL and must win it back from a busy event loop, up to the 5 ms
    switch interval each, on the path of every group commit).

    Like ``to_thread`` without ``abandon_on_cancel``: refused before it starts if the task is
    already cancelled, and never abandoned once started (a cancellation waits for the job,
    then is raised at the task's next checkpoint)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[_T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the run ended: nobody waits
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    trio.lowlevel.start_thread_soon(job, deliver)
    result: _T = await trio.lowlevel.wait_task_rescheduled(
        lambda _raise_cancel: trio.lowlevel.Abort.FAILED
    )
    return result
