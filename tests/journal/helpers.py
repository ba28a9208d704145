"""Shared builders for the journal tests (no I/O unless a FileSystem is passed)."""

from __future__ import annotations

from writebehind._journal._codec import JournalRecord, RecordKind, SegmentHeader

SALT = 0x5EED_0F_5A17


def make_records(count: int, *, first_seq: int = 1) -> list[JournalRecord]:
    records = []
    for i in range(count):
        seq = first_seq + i
        if i % 5 == 4:
            records.append(JournalRecord(seq, RecordKind.DELETE, f"k{i % 7}", None, seq))
        else:
            records.append(JournalRecord(seq, RecordKind.PUT, f"k{i % 7}", b"v" * (i % 13), seq))
    return records


def segment_bytes(records: list[JournalRecord], *, shard_id: int = 3, salt: int = SALT,
                  first_seq: int | None = None) -> tuple[bytes, list[int]]:
    """A segment holding ``records``, and the offset where each frame starts."""
    first = records[0].seq if first_seq is None else first_seq
    data = bytearray(SegmentHeader(shard_id=shard_id, salt=salt, first_seq=first).encode())
    offsets = []
    for record in records:
        offsets.append(len(data))
        data += record.encode(salt)
    return bytes(data), offsets
