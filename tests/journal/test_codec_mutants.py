"""Rules of the frame codec that mutation testing found unchecked.

Frames here are built by hand from the format in ``specs/journal-format.md`` (``length crc kind
payload``, the CRC seeded with the generation salt), so a test can make a frame whose checksum
is valid and whose fields are not.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from writebehind._journal import _codec
from writebehind._journal._codec import (
    FRAME_HEADER_SIZE,
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

from .helpers import SALT

TOMBSTONE = 0xFFFFFFFF


def frame(payload: bytes, kind: int, *, length: int | None = None, salt: int = SALT) -> bytes:
    """A frame around ``payload`` whose checksum is valid for what is there."""
    length = len(payload) if length is None else length
    seed = zlib.crc32(salt.to_bytes(8, "little"))
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<IB", length, kind), seed))
    return struct.pack("<IIB", length, crc, kind) + payload


def payload(seq: int, key: bytes, value: bytes | None, *, version: int = 1,
            key_len: int | None = None, value_len: int | None = None) -> bytes:
    key_len = len(key) if key_len is None else key_len
    if value_len is None:
        value_len = TOMBSTONE if value is None else len(value)
    return struct.pack("<QqI", seq, version, key_len) + key + struct.pack("<I", value_len) + (
        value or b""
    )


def refused(buf: bytes, reason: str) -> None:
    """``decode_frame`` names the damage, and ``decode_run`` stops there without raising."""
    assert decode_frame(buf, 0, SALT) == Invalid(reason)
    assert decode_run(buf, 0, SALT, 1) == ([], 0)


def test_the_size_limit_is_inclusive_for_encoder_and_both_decoders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 64)
    record = JournalRecord(1, RecordKind.PUT, "k", b"v" * 39, 1)  # 20 + 1 + 4 + 39 = 64
    data = record.encode(SALT)
    assert decode_frame(data, 0, SALT) == Decoded(record, len(data))
    assert decode_run(data, 0, SALT, 1) == ([record], len(data))
    with pytest.raises(ValueError, match=r"^record too large: 65 bytes > 64$"):
        encode_frame(1, RecordKind.PUT, b"k", b"v" * 40, 1, salt_seed(SALT))
    too_long = frame(payload(1, b"k", b"v" * 40), RecordKind.PUT)
    refused(too_long, "impossible record length 65")


def test_record_fields_must_fit_their_frame_fields() -> None:
    for seq in (0, 2**64 - 1):
        JournalRecord(seq, RecordKind.DELETE, "k", None, 1)
    for seq in (-1, 2**64):
        with pytest.raises(ValueError, match=rf"^seq must fit in 64 unsigned bits, got {seq}$"):
            JournalRecord(seq, RecordKind.DELETE, "k", None, 1)
    for version in (-(2**63), 2**63 - 1):
        JournalRecord(1, RecordKind.DELETE, "k", None, version)
    for version in (-(2**63) - 1, 2**63):
        with pytest.raises(
            ValueError, match=rf"^version must fit in 64 signed bits, got {version}$"
        ):
            JournalRecord(1, RecordKind.DELETE, "k", None, version)
    with pytest.raises(ValueError, match=r"^a CHECKPOINT record has key '', got 'k'$"):
        JournalRecord(1, RecordKind.CHECKPOINT, "k", None, 1)


def test_incomplete_has_a_readable_repr() -> None:
    assert repr(INCOMPLETE) == "INCOMPLETE"


def test_a_frame_header_with_an_impossible_length_is_invalid_as_soon_as_it_is_read() -> None:
    header = struct.pack("<IIB", 5, 0, RecordKind.PUT)
    assert len(header) == FRAME_HEADER_SIZE
    assert decode_frame(header, 0, SALT) == Invalid("impossible record length 5")
    assert decode_frame(header[:-1], 0, SALT) is INCOMPLETE


def test_a_frame_too_short_for_the_fixed_fields_is_refused_even_with_a_valid_checksum() -> None:
    refused(frame(b"\x01\x00\x00\x00", RecordKind.PUT), "impossible record length 4")


def test_a_frame_the_buffer_ends_inside_is_incomplete_whatever_its_checksum() -> None:
    body = payload(1, b"k", b"value")
    cut = body[:-2]  # the CRC below is right for the bytes present, not for the frame
    data = frame(cut, RecordKind.PUT, length=len(body))
    assert decode_frame(data, 0, SALT) is INCOMPLETE
    assert decode_run(data, 0, SALT, 1) == ([], 0)


def test_an_unknown_kind_is_refused() -> None:
    refused(encode_frame(1, 9, b"k", b"v", 1, salt_seed(SALT)), "unknown record kind 9")


def test_a_key_length_running_past_the_record_is_refused() -> None:
    # 30 bytes of payload, but the key claims 10 of the last 10: no room for value_len.
    refused(frame(payload(1, b"k" * 6, b"", key_len=10), RecordKind.PUT),
            "key length runs past the record")
    refused(frame(payload(1, b"k" * 6, b"", key_len=1000), RecordKind.PUT),
            "key length runs past the record")
    # The key ends two bytes into where value_len would be.
    refused(frame(payload(1, b"k" * 6, b"", key_len=8), RecordKind.PUT),
            "key length runs past the record")


def test_a_value_length_that_disagrees_with_the_record_length_is_refused() -> None:
    refused(frame(payload(1, b"k", b"abc", value_len=5), RecordKind.PUT),
            "value length does not match the record length")
    refused(frame(payload(1, b"k", b"abc", value_len=1), RecordKind.PUT),
            "value length does not match the record length")


def test_bytes_after_a_tombstone_are_refused() -> None:
    refused(frame(payload(1, b"k", None) + b"xx", RecordKind.DELETE),
            "trailing bytes inside the record")


def test_fields_that_make_no_record_are_refused_as_malformed() -> None:
    refused(frame(payload(1, b"k", None), RecordKind.PUT),
            "malformed record: a PUT record needs a value, got value=None for key 'k'")
    refused(frame(payload(1, b"k", b"v"), RecordKind.DELETE),
            "malformed record: a DELETE record carries no value, got b'v'")
    refused(frame(payload(1, b"k", None), RecordKind.CHECKPOINT),
            "malformed record: a CHECKPOINT record has key '', got 'k'")
    bad_utf8 = decode_frame(frame(payload(1, b"\xff", None), RecordKind.DELETE), 0, SALT)
    assert isinstance(bad_utf8, Invalid)
    assert bad_utf8.reason.startswith("malformed record: 'utf-8' codec can't decode byte 0xff")
    assert decode_run(frame(payload(1, b"\xff", None), RecordKind.DELETE), 0, SALT, 1) == ([], 0)


def test_the_fast_path_decodes_a_run_of_every_kind_to_its_end() -> None:
    records = [
        JournalRecord(41, RecordKind.PUT, "a", b"1", 7),
        JournalRecord(42, RecordKind.DELETE, "a", None, 8),
        JournalRecord(43, RecordKind.CHECKPOINT, "", None, 42),
        JournalRecord(44, RecordKind.PUT, "é", b"", -3),
        JournalRecord(45, RecordKind.PUT, "", b"x" * 300, 9),
    ]
    data = b"".join(r.encode(SALT) for r in records)
    assert decode_run(b"pad" + data, 3, SALT, 41) == (records, 3 + len(data))
    assert decode_run(data, 0, SALT, 40) == ([], 0)  # the first seq is not the expected one
    second = len(records[0].encode(SALT))
    assert decode_run(data, second, SALT, 42) == (records[1:], len(data))


def test_a_header_names_what_is_wrong_with_it() -> None:
    good = SegmentHeader(shard_id=1, salt=SALT, first_seq=1).encode()
    assert SegmentHeader.decode(b"XXXXXXXX" + good[8:]) == Invalid(
        "bad magic b'XXXXXXXX', expected b'WBJOURNL'"
    )
    damaged = bytearray(good)
    damaged[12] ^= 1
    assert SegmentHeader.decode(bytes(damaged)) == Invalid("segment header checksum mismatch")
    future = SegmentHeader(shard_id=1, salt=SALT, first_seq=1, format_version=2).encode()
    assert SegmentHeader.decode(future) == Invalid(
        "unsupported format version 2, this build reads 1"
    )
