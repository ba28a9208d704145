"""Opening a journal directory: scan, cut a torn tail, optionally repair (blocking I/O).

Runs in a worker thread for :class:`OsFileSystem`; every change it makes is a truncation of
the log's tail, and the cut bytes are first copied to a side file and synced.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import secrets
from collections.abc import Callable, Iterator

import attrs

from .._core._errors import JournalCorruption, JournalFull
from ._codec import HEADER_SIZE, JournalRecord, Manifest, SegmentHeader
from ._fs import FileSystem, write_file_atomic
from ._scan import (
    MANIFEST_NAME,
    SEGMENT_RE,
    JournalScan,
    TornTail,
    count_valid_frames,
    scan_journal,
    segment_name,
)


@attrs.frozen
class RepairReport:
    """What ``repair=True`` cut: the log from ``offset`` in ``path`` onwards, kept in
    ``side_files``."""

    path: str
    offset: int
    reason: str
    dropped_bytes: int
    side_files: tuple[str, ...]
    dropped_records: int = 0  # checksum-valid records in what was cut


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


def describe_cuts(report: RecoveryReport) -> list[tuple[str, str]]:
    """``(kind, message)`` for every byte recovery cut: the torn tail (``"torn_tail"``) and
    each repair (``"repair"``), with file, offset and what was dropped, for logs and alerts."""
    cuts: list[tuple[str, str]] = []
    torn = report.torn_tail
    if torn is not None:
        cuts.append(("torn_tail", (
            f"{torn.path}: cut a torn tail at offset {torn.offset}: {torn.length} bytes holding "
            f"no complete record, kept in {report.torn_tail_copy} (a write cut short by a "
            "crash looks like this; so does damage running to the end of the file)"
        )))
    for repair in report.repairs:
        cuts.append(("repair", (
            f"{repair.path}: repair cut the journal at offset {repair.offset}: "
            f"{repair.dropped_records} records ({repair.dropped_bytes} bytes) dropped, kept "
            f"in {', '.join(repair.side_files)}; the damage: {repair.reason}"
        )))
    return cuts


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


def _read(fs: FileSystem, path: str) -> bytes:
    """A journal file's bytes; a file that cannot be read (a directory or a FIFO in its
    place, no permission) is damage to the journal, reported with its path and why."""
    try:
        return fs.read_file(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise JournalCorruption(
            f"{path}: offset 0: cannot read this journal file: {reason}", path=path, offset=0
        ) from exc


def read_journal(
    fs: FileSystem, directory: str, *, shard_id: int | None = None
) -> tuple[JournalScan, list[tuple[str, bytes]]]:
    """Scan a journal without modifying anything (used by the operator tools too)."""
    files = [(p, _read(fs, p)) for p in list_segments(fs, directory)]
    manifest_path = os.path.join(directory, MANIFEST_NAME)
    manifest = (manifest_path, _read(fs, manifest_path)) if fs.exists(manifest_path) else None
    return scan_journal(files, shard_id=shard_id, manifest=manifest), files


def publish_newest(fs: FileSystem, directory: str, header: SegmentHeader) -> None:
    """Record, atomically and durably, that the segment of ``header`` is the newest.

    Only once that segment's header and directory entry are synced: a manifest naming a
    segment a power loss could still take away would make a correct journal look corrupt.
    """
    manifest = Manifest(shard_id=header.shard_id, salt=header.salt, newest_seq=header.first_seq)
    write_file_atomic(fs, os.path.join(directory, MANIFEST_NAME), manifest.encode())


def create_segment(
    fs: FileSystem, directory: str, header: SegmentHeader, *, reserve: int = 0
) -> tuple[str, int]:
    """Create a segment holding only ``header``, durable (file and directory entry), and
    name it the newest in the manifest.

    ``reserve`` bytes of disk space are allocated for it first, so a full disk shows here,
    at rotation, rather than in the middle of an append; on ENOSPC the file is removed again
    and the error raised."""
    path = os.path.join(directory, segment_name(header.first_seq))
    fd = fs.open_append(path, create=True)
    try:
        try:
            fs.reserve(fd, reserve)
        except OSError:
            fs.unlink(path)  # empty: a power loss that keeps it leaves a torn, unnamed header
            raise
        data = header.encode()
        while data:
            data = data[fs.write(fd, data) :]
        fs.fdatasync(fd)
        fs.fsync_dir(directory)
        publish_newest(fs, directory, header)
    except BaseException:
        fs.close(fd)
        raise
    return path, fd


def _set_manifest_aside(fs: FileSystem, directory: str) -> str | None:
    """Before a repair moves segments: keep the manifest as ``MANIFEST.corrupt-0`` (synced),
    so no power loss can leave it naming a segment the repair moved away. Recovery writes a
    new one once the repaired directory is settled."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not fs.exists(path):
        return None
    side = f"{path}.corrupt-0"
    fs.rename(path, side)
    fs.fsync_dir(directory)
    return side


def _repair(
    fs: FileSystem, directory: str, exc: JournalCorruption, shard_id: int
) -> RepairReport:
    paths = list_segments(fs, directory)
    manifest_path = os.path.join(directory, MANIFEST_NAME)
    if exc.path not in paths:
        if exc.path != manifest_path and os.path.dirname(exc.path) != directory:
            raise exc
        # The manifest is damaged or names a segment that is gone: what was in that segment
        # cannot be brought back; keep the manifest aside and carry on with what is there.
        side = _set_manifest_aside(fs, directory)
        if side is None:
            raise exc
        return RepairReport(exc.path, exc.offset, str(exc), 0, (side,))
    try:
        data: bytes | None = fs.read_file(exc.path)
    except OSError:
        data = None  # not a regular file: it can only be moved aside whole
    header = SegmentHeader.decode(data) if data is not None else None
    if isinstance(header, SegmentHeader) and header.shard_id != shard_id:
        raise exc  # another shard's journal: cutting it would destroy someone else's data
    salt = header.salt if isinstance(header, SegmentHeader) else None
    side_files: list[str] = []
    manifest_side = _set_manifest_aside(fs, directory)
    cut = exc.offset if exc.offset >= HEADER_SIZE and data is not None else 0
    dropped = len(data) - cut if data is not None else 0
    records = 0
    if data is not None and salt is not None:
        records = count_valid_frames(data, max(cut, HEADER_SIZE), salt)
    if cut:
        assert data is not None
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
        if salt is not None:
            try:
                records += count_valid_frames(fs.read_file(later), HEADER_SIZE, salt)
            except OSError:
                pass  # counted as bytes only
        fs.rename(later, f"{later}.cut")
        side_files.append(f"{later}.cut")
    fs.fsync_dir(directory)
    if manifest_side is not None:
        side_files.append(manifest_side)
    return RepairReport(exc.path, exc.offset, str(exc), dropped, tuple(side_files), records)


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


def _free_name(fs: FileSystem, path: str) -> str:
    """``path``, or ``path.2``, ``path.3``... if taken: a second tear at the same offset (the
    process died again before writing past it) keeps the first copy too, for forensics."""
    candidate, n = path, 1
    while fs.exists(candidate):
        n += 1
        candidate = f"{path}.{n}"
    return candidate


@paused_gc()
def recover(
    fs: FileSystem,
    directory: str,
    *,
    shard_id: int,
    repair: bool,
    fault_point: Callable[[str], None] | None = None,
    reserve: int = 0,
) -> Recovered:
    """Scan the directory, cut a torn tail, repair if asked, open the last segment (with
    ``reserve`` bytes of disk space allocated, as :func:`create_segment` does)."""
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
        torn_copy = _free_name(fs, f"{torn.path}.torn-{torn.offset}")
        fs.write_file(torn_copy, files[-1][1][torn.offset :])
        fs.fsync_dir(directory)
        if scan.segments[-1].header is None:
            fs.unlink(torn.path)  # not even the header made it: the segment never existed
        else:
            fs.truncate(torn.path, torn.offset)
        fs.fsync_dir(directory)
    salt = scan.salt if scan.salt is not None else secrets.randbits(64)
    created = not segments
    if segments:
        fd = fs.open_append(segments[-1].path)
        # What we read may sit only in the page cache of a crashed process: make it durable
        # before anyone builds on it.
        fs.fdatasync(fd)
        try:
            fs.reserve(fd, reserve)  # a torn-tail cut gave back what was reserved
        except OSError:
            pass  # the disk is full: the journal then refuses new records until space returns
    else:
        header = SegmentHeader(shard_id=shard_id, salt=salt, first_seq=scan.next_seq)
        try:
            path, fd = create_segment(fs, directory, header, reserve=reserve)  # and manifest
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise JournalFull(
                f"no space left on device for the first journal segment in {directory} "
                f"(it reserves {reserve} bytes: Config.segment_bytes and room for the batch "
                "that crosses it): free space on that disk, or point Config.journal_dir at "
                "one with room, then start again"
            ) from exc
        segments.append(Segment(path, header.first_seq, HEADER_SIZE))
    last = segments[-1]
    manifest = scan.manifest
    if not created and (
        manifest is None or (manifest.newest_seq, manifest.salt) != (last.first_seq, salt)
    ):
        # No manifest yet (a new or older journal, or a crash before it was written) or an
        # older one: the last segment was synced above, so it may now be named the newest.
        try:
            publish_newest(fs, directory, SegmentHeader(shard_id=shard_id, salt=salt,
                                                        first_seq=last.first_seq))
        except BaseException:
            fs.close(fd)
            raise
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
