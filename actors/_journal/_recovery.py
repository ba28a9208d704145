"""Opening a journal directory: scan, cut a torn tail, optionally repair (blocking I/O).

Runs in a worker thread for :class:`OsFileSystem`; every change it makes is a truncation of
the log's tail, and the cut bytes are first copied to a side file and synced.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
from collections.abc import Callable, Iterator

import attrs

from .._errors import JournalCorruption
from ._codec import HEADER_SIZE, JournalRecord, SegmentHeader
from ._fs import FileSystem
from ._scan import SEGMENT_RE, JournalScan, TornTail, scan_journal, segment_name


@attrs.frozen
class RepairReport:
    """What ``repair=True`` cut: the log from ``offset`` in ``path`` onwards, kept in
    ``side_files``."""

    path: str
    offset: int
    reason: str
    dropped_bytes: int
    side_files: tuple[str, ...]


@attrs.frozen
class RecoveryReport:
    """What :meth:`Journal.open` found.

    ``records`` are the PUT/DELETE records above ``persisted_seq``, in order; ``next_seq`` is
    above every sequence number found on disk.
    """

    records: tuple[JournalRecord, ...]
    persisted_seq: int
    next_seq: int
    torn_tail: TornTail | None
    segments: tuple[str, ...]
    torn_tail_copy: str | None = None
    repairs: tuple[RepairReport, ...] = ()


@attrs.define
class Segment:
    """A live segment file, as the shell tracks it."""

    path: str
    first_seq: int
    size: int


@attrs.define
class Recovered:
    """Everything :class:`Journal` needs to start appending."""

    report: RecoveryReport
    salt: int
    segments: list[Segment]
    fd: int


def list_segments(fs: FileSystem, directory: str) -> list[str]:
    """Segment paths of ``directory`` in sequence order (side files are ignored)."""
    names = sorted(n for n in fs.listdir(directory) if SEGMENT_RE.match(n))
    return [os.path.join(directory, n) for n in names]


def read_journal(
    fs: FileSystem, directory: str, *, shard_id: int | None = None
) -> tuple[JournalScan, list[tuple[str, bytes]]]:
    """Scan a journal without modifying anything (used by the operator tools too)."""
    files = [(p, fs.read_file(p)) for p in list_segments(fs, directory)]
    return scan_journal(files, shard_id=shard_id), files


def create_segment(fs: FileSystem, directory: str, header: SegmentHeader) -> tuple[str, int]:
    """Create a segment holding only ``header``, durable (file and directory entry)."""
    path = os.path.join(directory, segment_name(header.first_seq))
    fd = fs.open_append(path, create=True)
    try:
        data = header.encode()
        while data:
            data = data[fs.write(fd, data) :]
        fs.fdatasync(fd)
        fs.fsync_dir(directory)
    except BaseException:
        fs.close(fd)
        raise
    return path, fd


def _repair(
    fs: FileSystem, directory: str, exc: JournalCorruption, shard_id: int
) -> RepairReport:
    paths = list_segments(fs, directory)
    if exc.path not in paths:
        raise exc
    data = fs.read_file(exc.path)
    header = SegmentHeader.decode(data)
    if isinstance(header, SegmentHeader) and header.shard_id != shard_id:
        raise exc  # another shard's journal: cutting it would destroy someone else's data
    side_files: list[str] = []
    cut = exc.offset if exc.offset >= HEADER_SIZE else 0
    dropped = len(data) - cut
    if cut:
        side = f"{exc.path}.corrupt-{cut}"
        fs.write_file(side, data[cut:])
        fs.fsync_dir(directory)
        fs.truncate(exc.path, cut)
        side_files.append(side)
    else:
        fs.rename(exc.path, f"{exc.path}.corrupt-0")
        side_files.append(f"{exc.path}.corrupt-0")
    for later in paths[paths.index(exc.path) + 1 :]:
        dropped += fs.size(later)
        fs.rename(later, f"{later}.cut")
        side_files.append(f"{later}.cut")
    fs.fsync_dir(directory)
    return RepairReport(exc.path, exc.offset, str(exc), dropped, tuple(side_files))


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while a recovery builds one object per record and frees none:
    collecting would only rescan them over and over (it halved the recovery rate)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@paused_gc()
def recover(
    fs: FileSystem,
    directory: str,
    *,
    shard_id: int,
    repair: bool,
    fault_point: Callable[[str], None] | None = None,
) -> Recovered:
    """Scan the directory, cut a torn tail, repair if asked, open the last segment."""
    repairs: list[RepairReport] = []
    while True:
        try:
            scan, files = read_journal(fs, directory, shard_id=shard_id)
            break
        except JournalCorruption as exc:
            # Each repair removes at least one byte of damage; the bound only guards bugs.
            if not repair or len(repairs) >= 16:
                raise
            repairs.append(_repair(fs, directory, exc, shard_id))
    if fault_point is not None:
        for _record in scan.records:
            fault_point("journal.replay")
    torn_copy: str | None = None
    segments = [
        Segment(s.path, s.header.first_seq, s.valid_bytes)
        for s in scan.segments
        if s.header is not None
    ]
    if scan.torn_tail is not None:
        torn = scan.torn_tail
        torn_copy = f"{torn.path}.torn-{torn.offset}"
        fs.write_file(torn_copy, files[-1][1][torn.offset :])
        fs.fsync_dir(directory)
        if scan.segments[-1].header is None:
            fs.unlink(torn.path)  # not even the header made it: the segment never existed
        else:
            fs.truncate(torn.path, torn.offset)
        fs.fsync_dir(directory)
    salt = scan.salt if scan.salt is not None else secrets.randbits(64)
    if segments:
        fd = fs.open_append(segments[-1].path)
        # What we read may sit only in the page cache of a crashed process: make it durable
        # before anyone builds on it.
        fs.fdatasync(fd)
    else:
        header = SegmentHeader(shard_id=shard_id, salt=salt, first_seq=scan.next_seq)
        path, fd = create_segment(fs, directory, header)
        segments.append(Segment(path, header.first_seq, HEADER_SIZE))
    report = RecoveryReport(
        records=scan.records,
        persisted_seq=scan.persisted_seq,
        next_seq=scan.next_seq,
        torn_tail=scan.torn_tail,
        segments=tuple(s.path for s in segments),
        torn_tail_copy=torn_copy,
        repairs=tuple(repairs),
    )
    return Recovered(report=report, salt=salt, segments=segments, fd=fd)
