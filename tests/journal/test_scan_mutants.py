"""Rules of the recovery scan that mutation testing found unchecked.

Every refusal is a :class:`JournalCorruption` that names the file, the offset and what is wrong
(the operator's only clue); every torn tail says exactly which bytes recovery cuts.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from writebehind._core._errors import JournalCorruption
from writebehind._journal._codec import HEADER_SIZE, JournalRecord, RecordKind
from writebehind._journal._scan import SegmentScan, TornTail, scan_journal, scan_segment

from .helpers import SALT, make_records, segment_bytes

A = "d/00000000000000000001.wal"


def name(first_seq: int) -> str:
    return f"d/{first_seq:020d}.wal"


def corrupt(call: Callable[[], object], path: str, offset: int, what: str) -> None:
    with pytest.raises(JournalCorruption) as info:
        call()
    assert (info.value.path, info.value.offset) == (path, offset)
    assert str(info.value) == f"{path}: offset {offset}: {what}"


def checkpoint(seq: int, mark: int) -> JournalRecord:
    return JournalRecord(seq, RecordKind.CHECKPOINT, "", None, mark)


# -- headers --------------------------------------------------------------------------------


def test_a_last_segment_whose_header_never_reached_the_disk_is_a_torn_tail() -> None:
    for data in (b"", b"WBJ", b"\0" * (HEADER_SIZE + 50)):
        assert scan_segment(data, path=A, is_last=True) == SegmentScan(
            A, None, (), 0, TornTail(A, 0, len(data))
        )


def test_a_missing_header_in_a_segment_that_is_not_the_last_is_corruption() -> None:
    for data in (b"WBJ", b"\0" * (HEADER_SIZE + 50)):
        corrupt(lambda data=data: scan_segment(data, path=A, is_last=False), A, 0,
                "segment header is missing in a segment that is not the last")


@pytest.mark.parametrize("filler", [b"X", b"\0X", b" ", b"\t\n"])
def test_a_garbage_header_is_corruption_even_in_the_last_segment(filler: bytes) -> None:
    data = (filler * HEADER_SIZE)[:HEADER_SIZE] + b"\0" * 40
    corrupt(lambda: scan_segment(data, path=A, is_last=True), A, 0,
            f"bad magic {data[:8]!r}, expected b'WBJOURNL'")


def test_header_mismatches_are_corruption_at_offset_zero_of_that_file() -> None:
    log, _ = segment_bytes(make_records(2))
    corrupt(lambda: scan_segment(log, path=A, is_last=True, shard_id=4), A, 0,
            "segment belongs to shard 3, expected shard 4")
    corrupt(lambda: scan_segment(log, path=A, is_last=True, salt=SALT + 1), A, 0,
            f"segment is from another generation (salt {SALT:#018x}, expected {SALT + 1:#018x})")
    corrupt(lambda: scan_segment(log, path=A, is_last=True, first_seq=2), A, 0,
            "sequence gap: segment starts at seq 1, expected 2")


# -- frames ---------------------------------------------------------------------------------


def test_a_sequence_gap_inside_one_segment_is_corruption_at_that_frame() -> None:
    records = [*make_records(3), *make_records(2, first_seq=5)]
    log, offsets = segment_bytes(records)
    for is_last in (True, False):
        corrupt(lambda is_last=is_last: scan_segment(log, path=A, is_last=is_last), A,
                offsets[3], "sequence gap: record has seq 5, expected 4")
    repeat = [*make_records(3), *make_records(1, first_seq=3)]
    log, offsets = segment_bytes(repeat)
    corrupt(lambda: scan_segment(log, path=A, is_last=True), A, offsets[3],
            "sequence gap: record has seq 3, expected 4")


def test_a_stray_byte_followed_by_a_valid_frame_is_corruption() -> None:
    log, offsets = segment_bytes(make_records(3))
    data = log[: offsets[2]] + b"\x07" + log[offsets[2]:]
    # Read as a frame, the stray byte and the next frame's first bytes claim a length that
    # runs past the end of the file.
    corrupt(lambda: scan_segment(data, path=A, is_last=True), A, offsets[2],
            f"truncated record, followed by a valid record at offset {offsets[2] + 1}")


def test_damage_followed_by_a_smallest_possible_frame_at_the_very_end_is_corruption() -> None:
    smallest = JournalRecord(3, RecordKind.DELETE, "", None, 1)  # a 24-byte payload
    log, offsets = segment_bytes([*make_records(2), smallest])
    assert len(log) - offsets[2] == 9 + 24
    data = log[: offsets[2]] + b"\xff" * 12 + log[offsets[2]:]
    corrupt(lambda: scan_segment(data, path=A, is_last=True), A, offsets[2],
            f"impossible record length {0xFFFFFFFF}, followed by a valid record at offset "
            f"{offsets[2] + 12}")


def test_the_search_for_later_frames_starts_after_the_damaged_frame_not_before_it() -> None:
    # The previous record's last byte, with the damaged bytes after it, spells a valid frame:
    # that frame starts before the damage, so it is not "valid data after it".
    hidden = JournalRecord(9, RecordKind.DELETE, "x", None, 1).encode(SALT)
    records = [*make_records(2), JournalRecord(3, RecordKind.PUT, "k", b"v" + hidden[:1], 3)]
    log, _ = segment_bytes(records)
    data = log + hidden[1:]
    assert data.endswith(hidden)
    scan = scan_segment(data, path=A, is_last=True)
    assert list(scan.records) == records
    assert scan.torn_tail == TornTail(A, len(log), len(hidden) - 1)


def test_damage_in_the_final_frame_is_a_torn_tail_that_keeps_every_record_before_it() -> None:
    records = make_records(4)
    log, offsets = segment_bytes(records)
    data = bytearray(log)
    data[-1] ^= 0x55
    scan = scan_segment(bytes(data), path=A, is_last=True)
    assert scan == SegmentScan(scan.path, scan.header, tuple(records[:3]), offsets[3],
                               TornTail(A, offsets[3], len(log) - offsets[3]))
    assert scan.path == A and scan.header is not None and scan.header.first_seq == 1


# -- the journal ----------------------------------------------------------------------------


def test_a_file_that_is_not_named_like_a_segment_is_corruption() -> None:
    log, _ = segment_bytes(make_records(1))
    corrupt(lambda: scan_journal([("d/1.wal", log)]), "d/1.wal", 0,
            "not a segment file name (expected 20 digits + '.wal')")


def test_a_segment_whose_name_and_header_disagree_is_corruption() -> None:
    log, _ = segment_bytes(make_records(2))
    corrupt(lambda: scan_journal([(name(2), log)]), name(2), 0,
            "file name says first seq 2, header says 1")


def test_every_segment_must_belong_to_the_shard_of_the_first() -> None:
    a, _ = segment_bytes(make_records(2), shard_id=3)
    b, _ = segment_bytes(make_records(2, first_seq=3), shard_id=5)
    corrupt(lambda: scan_journal([(A, a), (name(3), b)]), name(3), 0,
            "segment belongs to shard 5, expected shard 3")
    scan = scan_journal([(A, a)])
    assert (scan.shard_id, scan.salt) == (3, SALT)
    assert scan_journal([]).shard_id is None


def test_records_missing_before_the_first_segment_need_a_checkpoint_that_covers_them() -> None:
    late, _ = segment_bytes(make_records(3, first_seq=5))
    corrupt(lambda: scan_journal([(name(5), late)]), name(5), 0,
            "records before seq 5 are missing and no checkpoint covers them (persisted mark "
            "is 0)")
    short, _ = segment_bytes([*make_records(2, first_seq=5), checkpoint(7, 3)])
    corrupt(lambda: scan_journal([(name(5), short)]), name(5), 0,
            "records before seq 5 are missing and no checkpoint covers them (persisted mark "
            "is 3)")
    covered, _ = segment_bytes([*make_records(2, first_seq=5), checkpoint(7, 4)])
    scan = scan_journal([(name(5), covered)])
    assert [r.seq for r in scan.records] == [5, 6]
    assert scan.persisted_seq == 4 and scan.next_seq == 8


def test_a_lone_segment_with_a_torn_header_is_an_empty_journal_not_corruption() -> None:
    scan = scan_journal([(name(5), b"WBJ")])
    assert scan.records == () and scan.torn_tail == TornTail(name(5), 0, 3)
    assert scan.next_seq == 5


def test_next_seq_stays_above_the_persisted_mark() -> None:
    # A checkpoint that claims more than the journal holds: new records must still get
    # seqs above the mark, or the next recovery would hide them as already persisted.
    log, _ = segment_bytes([*make_records(2), checkpoint(3, 10)])
    scan = scan_journal([(A, log)])
    assert scan.persisted_seq == 10
    assert scan.records == ()
    assert scan.next_seq == 11


def test_a_scan_finds_the_checkpoint_marks_as_it_decodes() -> None:
    """The persisted mark comes from the marks each segment's decode collected (no second
    pass over every record), newest checkpoint winning, across segments."""
    first = [*make_records(3), JournalRecord(4, RecordKind.CHECKPOINT, "", None, 2)]
    second = [JournalRecord(5, RecordKind.PUT, "k", b"v", 5),
              JournalRecord(6, RecordKind.CHECKPOINT, "", None, 4)]
    a, _ = segment_bytes(first)
    b, _ = segment_bytes(second)
    seg = scan_segment(a, path="00000000000000000001.wal", is_last=False)
    assert seg.marks == (2,)
    scan = scan_journal([("d/00000000000000000001.wal", a), ("d/00000000000000000005.wal", b)])
    assert scan.persisted_seq == 4
    assert [r.seq for r in scan.records] == [5]  # records above the mark, checkpoints left out
