"""The worked example in specs/journal-format.md is what the codec produces."""

from __future__ import annotations

import re
from pathlib import Path

from writebehind._journal._codec import JournalRecord, RecordKind, SegmentHeader

SPEC = Path(__file__).resolve().parents[2] / "specs" / "journal-format.md"
SALT = 0x0123456789ABCDEF


def worked_example() -> str:
    parts = [
        ("segment header", SegmentHeader(shard_id=1, salt=SALT, first_seq=1).encode()),
        ("PUT seq=1 key='a' value=b'hi' version=7",
         JournalRecord(1, RecordKind.PUT, "a", b"hi", 7).encode(SALT)),
        ("DELETE seq=2 key='a' version=8",
         JournalRecord(2, RecordKind.DELETE, "a", None, 8).encode(SALT)),
        ("CHECKPOINT seq=3 persisted mark=2",
         JournalRecord(3, RecordKind.CHECKPOINT, "", None, 2).encode(SALT)),
    ]
    lines, offset = [], 0
    for name, data in parts:
        lines.append(f"# {name} ({len(data)} bytes)")
        for i in range(0, len(data), 16):
            lines.append(f"{offset + i:04x}: {data[i:i + 16].hex(' ')}")
        offset += len(data)
    return "\n".join(lines)


def test_spec_hex_example_matches_the_codec() -> None:
    text = SPEC.read_text()
    match = re.search(r"<!-- hex:begin -->\n```\n(.*?)\n```\n<!-- hex:end -->", text, re.S)
    assert match is not None, "the hex example markers are missing from the spec"
    assert match.group(1) == worked_example()
