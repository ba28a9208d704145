"""Codec and scanner properties: round trips, truncation, single-byte flips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from writebehind._core._errors import JournalCorruption
from writebehind._journal._codec import (
    HEADER_SIZE,
    INCOMPLETE,
    Decoded,
    Invalid,
    JournalRecord,
    RecordKind,
    SegmentHeader,
    decode_frame,
    decode_run,
    encode_frame,
    salt_seed,
)
from writebehind._journal._scan import TornTail, scan_journal, scan_segment

from .helpers import SALT, make_records, segment_bytes

PATH = "j/00000000000000000001.wal"

records_st = st.builds(
    lambda seq, kind, key, value, version: JournalRecord(
        seq, kind, "" if kind == RecordKind.CHECKPOINT else key,
        value if kind == RecordKind.PUT else None, version),
    st.integers(0, 2**64 - 1),
    st.sampled_from(RecordKind),
    st.text(max_size=30),
    st.binary(max_size=200),
    st.integers(-(2**63), 2**63 - 1),
)


@given(records_st, st.integers(0, 2**64 - 1))
def test_encode_decode_round_trip(record: JournalRecord, salt: int) -> None:
    frame = record.encode(salt)
    assert JournalRecord.decode(b"xx" + frame, 2, salt) == Decoded(record, len(frame) + 2)


@given(records_st)
def test_record_repr_is_valid_python(record: JournalRecord) -> None:
    assert eval(repr(record), {"JournalRecord": JournalRecord, "RecordKind": RecordKind}) == record


@given(records_st, st.integers(0, 2**64 - 1))
def test_frame_from_another_generation_never_validates(record: JournalRecord, salt: int) -> None:
    other = salt ^ 1
    assert isinstance(JournalRecord.decode(record.encode(salt), 0, other), Invalid)


def test_partial_frame_is_left_untouched_until_complete() -> None:
    frame = make_records(1)[0].encode(SALT)
    for cut in range(len(frame)):
        assert JournalRecord.decode(frame[:cut], 0, SALT) is INCOMPLETE


def test_header_round_trip_and_checksum() -> None:
    header = SegmentHeader(shard_id=9, salt=SALT, first_seq=42)
    data = header.encode()
    assert len(data) == HEADER_SIZE
    assert SegmentHeader.decode(data) == header
    damaged = bytearray(data)
    damaged[20] ^= 1
    assert isinstance(SegmentHeader.decode(bytes(damaged)), Invalid)


def test_invalid_records_are_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="a PUT record needs a value"):
        JournalRecord(1, RecordKind.PUT, "k", None, 1)
    with pytest.raises(ValueError, match="a DELETE record carries no value"):
        JournalRecord(1, RecordKind.DELETE, "k", b"", 1)


@settings(max_examples=60)
@given(st.integers(1, 12), st.data())
def test_any_truncation_recovers_exactly_a_prefix(count: int, data: st.DataObject) -> None:
    records = make_records(count)
    log, offsets = segment_bytes(records)
    cut = data.draw(st.integers(0, len(log)))
    scan = scan_segment(log[:cut], path=PATH, is_last=True)
    boundaries = [*offsets[1:], len(log)]
    whole = sum(1 for end in boundaries if end <= cut)
    assert list(scan.records) == records[:whole]
    at_boundary = cut >= HEADER_SIZE and (cut in boundaries or cut == HEADER_SIZE)
    assert (scan.torn_tail is None) == at_boundary
    if scan.torn_tail is not None:
        start = offsets[whole] if cut >= HEADER_SIZE else 0
        assert scan.torn_tail == TornTail(PATH, start, cut - start)


@settings(max_examples=60)
@given(st.integers(1, 8), st.data())
def test_zero_filled_tail_recovers_exactly_a_prefix(count: int, data: st.DataObject) -> None:
    records = make_records(count)
    log, offsets = segment_bytes(records)
    cut = data.draw(st.integers(HEADER_SIZE, len(log)))
    zeros = data.draw(st.integers(1, 300))
    scan = scan_segment(log[:cut] + b"\0" * zeros, path=PATH, is_last=True)
    whole = sum(1 for end in [*offsets[1:], len(log)] if end <= cut)
    # Zeros can complete a frame whose own last bytes were zeros (an empty value's length
    # field): then the checksum proves it is the original record, so a longer prefix is fine.
    assert list(scan.records) == records[: len(scan.records)]
    assert len(scan.records) >= whole


@settings(max_examples=200)
@given(st.integers(2, 10), st.data())
def test_flip_followed_by_valid_data_is_corruption_and_final_frame_flip_is_torn_tail(
    count: int, data: st.DataObject
) -> None:
    """The rule: a damaged byte in any frame but the last of the last segment (or in the
    header) is JournalCorruption at that frame's offset. A damaged byte in the final frame
    is indistinguishable from a torn write: it is a TornTail starting at that frame."""
    records = make_records(count)
    log, offsets = segment_bytes(records)
    pos = data.draw(st.integers(0, len(log) - 1))
    xor = data.draw(st.integers(1, 255))
    damaged = bytearray(log)
    damaged[pos] ^= xor
    if pos >= offsets[-1]:
        scan = scan_segment(bytes(damaged), path=PATH, is_last=True)
        assert list(scan.records) == records[:-1]
        assert scan.torn_tail == TornTail(PATH, offsets[-1], len(log) - offsets[-1])
        return
    frame_start = max([0] + [o for o in offsets if o <= pos]) if pos >= HEADER_SIZE else 0
    with pytest.raises(JournalCorruption) as info:
        scan_segment(bytes(damaged), path=PATH, is_last=True)
    assert info.value.offset == frame_start
    assert info.value.path == PATH
    assert str(info.value).startswith(f"{PATH}: offset {frame_start}: ")


@settings(max_examples=60)
@given(st.data())
def test_any_flip_in_a_segment_that_is_not_the_last_is_corruption(data: st.DataObject) -> None:
    first = make_records(4)
    second = make_records(3, first_seq=5)
    a, _ = segment_bytes(first)
    b, _ = segment_bytes(second)
    pos = data.draw(st.integers(0, len(a) - 1))
    damaged = bytearray(a)
    damaged[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(JournalCorruption) as info:
        scan_journal([("d/00000000000000000001.wal", bytes(damaged)),
                      ("d/00000000000000000005.wal", b)])
    assert info.value.path == "d/00000000000000000001.wal"


def test_truncated_trailing_record_is_ignored() -> None:
    records = make_records(3)
    log, offsets = segment_bytes(records)
    scan = scan_segment(log[:-1], path=PATH, is_last=True)
    assert list(scan.records) == records[:2]
    assert scan.torn_tail == TornTail(PATH, offsets[2], len(log) - 1 - offsets[2])


def test_truncated_record_in_a_segment_that_is_not_the_last_is_corruption() -> None:
    log, _ = segment_bytes(make_records(3))
    with pytest.raises(JournalCorruption, match=r"offset \d+: truncated record in a segment"):
        scan_segment(log[:-1], path=PATH, is_last=False)


def test_sequence_gap_between_segments_is_corruption() -> None:
    a, _ = segment_bytes(make_records(3))
    b, _ = segment_bytes(make_records(2, first_seq=5))
    with pytest.raises(JournalCorruption, match="sequence gap: segment starts at seq 5, "
                       "expected 4"):
        scan_journal([("d/00000000000000000001.wal", a), ("d/00000000000000000005.wal", b)])


def test_segment_of_another_shard_or_generation_is_refused() -> None:
    a, _ = segment_bytes(make_records(3))
    b, _ = segment_bytes(make_records(2, first_seq=4), salt=SALT + 1)
    with pytest.raises(JournalCorruption, match="another generation"):
        scan_journal([("d/00000000000000000001.wal", a), ("d/00000000000000000004.wal", b)])
    with pytest.raises(JournalCorruption, match="belongs to shard 3, expected shard 4"):
        scan_journal([("d/00000000000000000001.wal", a)], shard_id=4)


def test_checkpoint_hides_persisted_records_and_keeps_next_seq() -> None:
    records = make_records(4)
    records.append(JournalRecord(5, RecordKind.CHECKPOINT, "", None, 3))
    log, _ = segment_bytes(records)
    scan = scan_journal([(PATH, log)])
    assert scan.persisted_seq == 3
    assert [r.seq for r in scan.records] == [4]
    assert scan.next_seq == 6


raw_frames_st = st.lists(
    st.tuples(
        st.integers(0, 5),  # kind byte, including ones no record has
        st.binary(max_size=12),  # key bytes, not always UTF-8
        st.one_of(st.none(), st.binary(max_size=40)),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(0, 2),  # 0: next seq; else a gap or a repeat
    ),
    max_size=8,
)


@settings(max_examples=300)
@given(raw_frames_st, st.lists(st.integers(0, 10**6), max_size=3), st.integers(1, 2**40))
def test_bulk_decoder_accepts_exactly_what_the_careful_one_does(
    frames: list[tuple[int, bytes, bytes | None, int, int]], flips: list[int], first: int
) -> None:
    """Recovery's fast path (``decode_run``) must stop where ``decode_frame`` would refuse a
    frame (or see a sequence gap), and agree on every record before that."""
    seed = salt_seed(SALT)
    buf = bytearray(b"pad")
    seq = first
    for kind, key, value, version, step in frames:
        seq += (0, 2, -1)[step]
        buf += encode_frame(max(seq, 0), kind, key, value, version, seed)
        seq += 1
    for flip in flips:
        if len(buf) > 3:
            buf[3 + flip % (len(buf) - 3)] ^= 0x41
    data = bytes(buf)
    expected: list[JournalRecord] = []
    offset = 3
    while True:
        result = decode_frame(data, offset, SALT)
        if not isinstance(result, Decoded) or result.record.seq != first + len(expected):
            break
        expected.append(result.record)
        offset = result.end
    assert decode_run(data, 3, SALT, first) == (expected, offset)
