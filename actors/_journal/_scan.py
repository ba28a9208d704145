"""Reading a journal back: torn tails versus corruption (pure, no I/O).

The rule, stated once (``specs/journal-format.md`` explains why):

* In the **last** segment, let T be the first offset where a valid frame does not parse
  (the buffer ends inside it, its checksum fails, its fields are impossible, or it is zeros).
  If **no** checksum-valid frame of this generation starts anywhere after T, then
  ``[T, EOF)`` is a :class:`TornTail`: the writer died mid-write. It is not an error.
* Otherwise it is :class:`JournalCorruption` at T: damage followed by valid data cannot be a
  crash artifact of an append-only writer.
* In any segment but the last, every failure is corruption, and so is a wrong magic, shard id,
  generation salt, file name, or a gap in the sequence numbers.

Consequence: damage confined to the final frame of the last segment cannot be told apart from
a torn write and is reported as a torn tail (its bytes are kept in a side file on truncation).

The ``MANIFEST`` names the newest segment that was durable when it was written: a directory
whose newest segment (with a readable header) is older than that lost its tail segment, which
is corruption too.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence

import attrs

from .._core._errors import JournalCorruption
from ._codec import (
    FRAME_HEADER_SIZE,
    HEADER_SIZE,
    INCOMPLETE,
    MIN_PAYLOAD,
    Decoded,
    Invalid,
    JournalRecord,
    Manifest,
    RecordKind,
    SegmentHeader,
    decode_frame,
    decode_run,
)

SEGMENT_RE = re.compile(r"^(\d{20})\.wal$")
MANIFEST_NAME = "MANIFEST"


def segment_name(first_seq: int) -> str:
    """The file name of the segment whose first record has sequence number ``first_seq``."""
    return f"{first_seq:020d}.wal"


@attrs.frozen
class TornTail:
    """The end of the last segment holds a partly written frame: ``length`` bytes from
    ``offset`` are cut on recovery (and kept in a side file)."""

    path: str
    offset: int
    length: int


@attrs.frozen
class SegmentScan:
    """What one segment holds. ``header`` is None only for a torn (incomplete) header."""

    path: str
    header: SegmentHeader | None
    records: tuple[JournalRecord, ...]
    valid_bytes: int
    torn_tail: TornTail | None
    marks: tuple[int, ...] = ()  # the persisted marks of its CHECKPOINT records, in order


@attrs.frozen
class JournalScan:
    """What a whole journal directory holds, read without modifying anything."""

    segments: tuple[SegmentScan, ...]
    records: tuple[JournalRecord, ...]  # PUT/DELETE above the persisted mark, in order
    persisted_seq: int
    next_seq: int
    torn_tail: TornTail | None
    shard_id: int | None
    salt: int | None
    manifest: Manifest | None = None


def _corrupt(path: str, offset: int, what: str) -> JournalCorruption:
    return JournalCorruption(f"{path}: offset {offset}: {what}", path=path, offset=offset)


def _find_valid_frame(data: bytes, start: int, salt: int) -> int | None:
    """The first offset >= start where a checksum-valid frame of this generation begins."""
    end = len(data)
    for pos in range(start, end - FRAME_HEADER_SIZE - MIN_PAYLOAD + 1):
        length = int.from_bytes(data[pos : pos + 4], "little")
        # Cheap filter first: most offsets cannot hold a frame that fits.
        if length < MIN_PAYLOAD or pos + FRAME_HEADER_SIZE + length > end:
            continue
        if isinstance(decode_frame(data, pos, salt), Decoded):
            return pos
    return None


def count_valid_frames(data: bytes, start: int, salt: int) -> int:
    """How many checksum-valid frames of this generation lie in ``data[start:]``: the records
    a repair drops with those bytes (linear in their length; only run on repair)."""
    count = 0
    pos = _find_valid_frame(data, start, salt)
    while pos is not None:
        result = decode_frame(data, pos, salt)
        assert isinstance(result, Decoded)
        count += 1
        pos = _find_valid_frame(data, result.end, salt)
    return count


def scan_segment(
    data: bytes,
    *,
    path: str,
    is_last: bool,
    shard_id: int | None = None,
    salt: int | None = None,
    first_seq: int | None = None,
) -> SegmentScan:
    """Decode one segment; raise :class:`JournalCorruption` naming ``path`` and the offset.

    ``shard_id``, ``salt`` and ``first_seq``, when given, must match the header.
    """
    header = SegmentHeader.decode(data)
    if header is INCOMPLETE or (isinstance(header, Invalid) and not data.strip(b"\0")):
        if is_last:
            return SegmentScan(path, None, (), 0, TornTail(path, 0, len(data)))
        raise _corrupt(path, 0, "segment header is missing in a segment that is not the last")
    if isinstance(header, Invalid):
        raise _corrupt(path, 0, header.reason)
    if shard_id is not None and header.shard_id != shard_id:
        raise _corrupt(
            path, 0, f"segment belongs to shard {header.shard_id}, expected shard {shard_id}"
        )
    if salt is not None and header.salt != salt:
        raise _corrupt(
            path,
            0,
            f"segment is from another generation (salt {header.salt:#018x}, "
            f"expected {salt:#018x})",
        )
    if first_seq is not None and header.first_seq != first_seq:
        raise _corrupt(
            path, 0, f"sequence gap: segment starts at seq {header.first_seq}, expected {first_seq}"
        )
    records: list[JournalRecord] = []
    marks: list[int] = []
    offset = HEADER_SIZE
    expected = header.first_seq
    torn: TornTail | None = None
    while True:
        run, offset = decode_run(data, offset, header.salt, expected, marks)
        records += run
        expected += len(run)
        if offset >= len(data):
            break
        # The fast path stopped: the careful decoder says why (or accepts the frame).
        result = decode_frame(data, offset, header.salt)
        if isinstance(result, Decoded):
            if result.record.seq != expected:
                raise _corrupt(
                    path, offset, f"sequence gap: record has seq {result.record.seq}, "
                    f"expected {expected}"
                )
            records.append(result.record)
            if result.record.kind is RecordKind.CHECKPOINT:
                marks.append(result.record.version)
            offset = result.end
            expected += 1
            continue
        reason = "truncated record" if result is INCOMPLETE else result.reason
        if not is_last:
            raise _corrupt(path, offset, f"{reason} in a segment that is not the last")
        later = _find_valid_frame(data, offset + 1, header.salt)
        if later is not None:
            raise _corrupt(path, offset, f"{reason}, followed by a valid record at offset {later}")
        torn = TornTail(path, offset, len(data) - offset)
        break
    return SegmentScan(path, header, tuple(records), offset, torn, tuple(marks))


def scan_journal(
    files: Sequence[tuple[str, bytes]],
    *,
    shard_id: int | None = None,
    manifest: tuple[str, bytes] | None = None,
) -> JournalScan:
    """Scan the segments of one journal, given as ``(path, bytes)`` in file-name order, and
    its ``MANIFEST`` as ``(path, bytes)`` if there is one."""
    segments: list[SegmentScan] = []
    salt: int | None = None
    expected: int | None = None
    next_seq = 1
    for index, (path, data) in enumerate(files):
        match = SEGMENT_RE.match(os.path.basename(path))
        if match is None:
            raise _corrupt(path, 0, "not a segment file name (expected 20 digits + '.wal')")
        named_seq = int(match.group(1))
        seg = scan_segment(
            data,
            path=path,
            is_last=index == len(files) - 1,
            shard_id=shard_id,
            salt=salt,
            first_seq=expected,
        )
        next_seq = max(next_seq, named_seq)
        if seg.header is not None:
            if seg.header.first_seq != named_seq:
                raise _corrupt(
                    path, 0, f"file name says first seq {named_seq}, header says "
                    f"{seg.header.first_seq}"
                )
            shard_id = seg.header.shard_id
            salt = seg.header.salt
            expected = seg.header.first_seq + len(seg.records)
            next_seq = max(next_seq, expected)
        segments.append(seg)
    checkpoint = RecordKind.CHECKPOINT
    marks = [mark for s in segments for mark in s.marks]
    persisted = max(marks, default=0)
    first = segments[0] if segments else None
    if first is not None and first.header is not None and first.header.first_seq - 1 > persisted:
        raise _corrupt(
            first.path,
            0,
            f"records before seq {first.header.first_seq} are missing and no checkpoint "
            f"covers them (persisted mark is {persisted})",
        )
    newest = None
    if manifest is not None:
        newest = _check_manifest(manifest, segments, files, shard_id, salt)
    if marks:
        records = tuple(
            r
            for s in segments
            for r in s.records
            if r.kind is not checkpoint and r.seq > persisted
        )
    else:  # nothing to drop: join the segments' records without looking at each again
        records = tuple(itertools.chain.from_iterable(s.records for s in segments))
    return JournalScan(
        segments=tuple(segments),
        records=records,
        persisted_seq=persisted,
        next_seq=max(next_seq, persisted + 1),
        torn_tail=segments[-1].torn_tail if segments else None,
        shard_id=shard_id,
        salt=salt,
        manifest=newest,
    )


def _check_manifest(
    manifest: tuple[str, bytes],
    segments: Sequence[SegmentScan],
    files: Sequence[tuple[str, bytes]],
    shard_id: int | None,
    salt: int | None,
) -> Manifest:
    """Decode the manifest and check that the segment it names as the newest is there."""
    path, data = manifest
    decoded = Manifest.decode(data)
    if isinstance(decoded, Invalid):
        raise _corrupt(path, 0, decoded.reason)
    if shard_id is not None and decoded.shard_id != shard_id:
        raise _corrupt(
            path, 0, f"manifest belongs to shard {decoded.shard_id}, expected shard {shard_id}"
        )
    if salt is not None and decoded.salt != salt:
        raise _corrupt(
            path, 0, f"manifest is from another generation (salt {decoded.salt:#018x}, the "
            f"segments have {salt:#018x})"
        )
    # Only a segment whose header made it counts: the manifest is written after the header
    # of the segment it names is synced, so a power loss cannot leave that header torn.
    present = [s.header.first_seq for s in segments if s.header is not None]
    if not present or present[-1] < decoded.newest_seq:
        missing = os.path.join(os.path.dirname(path), segment_name(decoded.newest_seq))
        torn = any(p == missing for p, _ in files)
        found = (
            f"the newest readable segment starts at seq {present[-1]}" if present
            else "no readable segment is left"
        )
        what = "has no header" if torn else "is missing"
        raise _corrupt(
            missing, 0,
            f"segment {what}, but {path} says it was the newest durable segment ({found}): "
            f"acknowledged records from seq {decoded.newest_seq} on are lost",
        )
    return decoded
