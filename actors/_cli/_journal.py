"""``writebehind journal dump|check|demo``: operator tools, read only (except ``demo``).

``dump`` and ``check`` never take the lock or modify a file, so they are safe on a live
cache; they may see a torn tail that is merely a batch still being written.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

import trio

from .._core._errors import JournalCorruption
from .._journal._codec import JournalRecord, RecordKind, SegmentHeader
from .._journal._fs import OsFileSystem
from .._journal._journal import Journal
from .._journal._recovery import list_segments, read_journal
from .._journal._scan import MANIFEST_NAME, JournalScan


def register(subparsers: Any) -> None:
    """Add the ``journal`` command to the ``writebehind`` argument parser."""
    parser = subparsers.add_parser("journal", help="inspect or check journal directories")
    sub = parser.add_subparsers(dest="journal_command", required=True)
    dump = sub.add_parser("dump", help="print records, sequence range, persisted mark, torn tail")
    dump.add_argument("directory", help="a journal directory, or a parent of shard-NNNN/ ones")
    dump.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dump.add_argument("--limit", type=_count, metavar="N",
                      help="show at most N records per journal (and how many more there are)")
    dump.add_argument("--key", metavar="KEY", help="show only the records of this key")
    dump.set_defaults(func=_dump)
    check = sub.add_parser("check", help="exit 0 if clean or only a torn tail, 1 on corruption")
    check.add_argument("directory")
    check.set_defaults(func=_check)
    demo = sub.add_parser("demo", help="write a small demo journal (with a torn tail), dump it")
    demo.add_argument("directory")
    demo.set_defaults(func=_demo)


REPAIR_HINT = (
    "next step: stop the cache, then run `writebehind recover --config <its config> --repair`: "
    "it cuts each damaged journal at the damage (the cut bytes are kept in "
    "<segment>.corrupt-<offset> and <segment>.cut side files), replays the intact records into "
    "the store and checkpoints them. Records after the damage are not replayed: check the side "
    "files first if they matter."
)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _shown(records: list[JournalRecord], args: argparse.Namespace) -> list[JournalRecord]:
    """The records ``--key`` selects (checkpoints have no key), before ``--limit``."""
    key = getattr(args, "key", None)
    if key is None:
        return records
    return [r for r in records if r.kind != RecordKind.CHECKPOINT and r.key == key]


def _is_journal(fs: OsFileSystem, directory: str) -> bool:
    # A manifest alone is a journal whose every segment is gone: check must say so.
    return bool(list_segments(fs, directory)) or fs.exists(os.path.join(directory, MANIFEST_NAME))


def _journal_dirs(directory: str) -> list[str]:
    fs = OsFileSystem()
    if not os.path.isdir(directory):
        return []
    if _is_journal(fs, directory):
        return [directory]
    shards = sorted(
        n for n in os.listdir(directory)
        if n.startswith("shard-") and os.path.isdir(os.path.join(directory, n))
    )
    return [os.path.join(directory, n) for n in shards]


def _scan_all(directory: str) -> list[tuple[str, JournalScan | JournalCorruption]]:
    results: list[tuple[str, JournalScan | JournalCorruption]] = []
    for path in _journal_dirs(directory):
        try:
            results.append((path, read_journal(OsFileSystem(), path)[0]))
        except JournalCorruption as exc:
            results.append((path, exc))
    return results


def _no_journal(directory: str) -> int:
    print(f"{directory}: no journal segments here or in shard-NNNN/ subdirectories",
          file=sys.stderr)
    return 2


def _record_json(record: JournalRecord, persisted: int) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "kind": record.kind.name,
        "key": record.key,
        "version": record.version,
        "value_b64": None if record.value is None else base64.b64encode(record.value).decode(),
        "persisted": record.seq <= persisted or record.kind == RecordKind.CHECKPOINT,
    }


def _scan_json(path: str, scan: JournalScan | JournalCorruption,
               args: argparse.Namespace | None = None) -> dict[str, Any]:
    if isinstance(scan, JournalCorruption):
        return {"directory": path, "error": str(scan), "error_path": scan.path,
                "error_offset": scan.offset}
    torn = scan.torn_tail
    shown = _shown([r for s in scan.segments for r in s.records], args or argparse.Namespace())
    limit = getattr(args, "limit", None)
    return {
        "directory": path,
        "error": None,
        "shard_id": scan.shard_id,
        "persisted_seq": scan.persisted_seq,
        "next_seq": scan.next_seq,
        "segments": [
            {"path": s.path, "first_seq": None if s.header is None else s.header.first_seq,
             "records": len(s.records), "valid_bytes": s.valid_bytes}
            for s in scan.segments
        ],
        "torn_tail": None if torn is None else
        {"path": torn.path, "offset": torn.offset, "length": torn.length},
        "records": [_record_json(r, scan.persisted_seq) for r in shown[:limit]],
        "records_matching": len(shown),
    }


def _print_table(path: str, scan: JournalScan, args: argparse.Namespace) -> None:
    records = [r for s in scan.segments for r in s.records]
    first = records[0].seq if records else None
    print(f"journal {path}  shard {scan.shard_id}  segments {len(scan.segments)}  "
          f"seq {first}..{scan.next_seq - 1}  persisted <= {scan.persisted_seq}  "
          f"dirty {len(scan.records)}")
    print(f"{'SEQ':>8}  {'KIND':<10}  {'VERSION':>8}  {'STATE':<9}  {'KEY':<20}  VALUE")
    shown = _shown(records, args)
    limit = args.limit if getattr(args, "limit", None) is not None else len(shown)
    for r in shown[:limit]:
        state = "-" if r.kind == RecordKind.CHECKPOINT else (
            "persisted" if r.seq <= scan.persisted_seq else "dirty")
        value = "" if r.value is None else repr(r.value[:24]) + ("…" if len(r.value) > 24 else "")
        print(f"{r.seq:>8}  {r.kind.name:<10}  {r.version:>8}  {state:<9}  {r.key:<20}  {value}")
    if len(shown) > limit:
        print(f"… {len(shown) - limit} more records (--limit {limit})")
    if getattr(args, "key", None) is not None and not shown:
        print(f"no records of key {args.key!r}")
    if scan.torn_tail is not None:
        t = scan.torn_tail
        print(f"torn tail: {t.path} offset {t.offset}, {t.length} bytes "
              "(cut on the next open, copy kept in a .torn-<offset> side file)")
    else:
        print("torn tail: none")


def _dump(args: argparse.Namespace) -> int:
    results = _scan_all(args.directory)
    if not results:
        return _no_journal(args.directory)
    if args.json:
        print(json.dumps({"journals": [_scan_json(p, s, args) for p, s in results]}, indent=2))
    else:
        for index, (path, scan) in enumerate(results):
            if index:
                print()
            if isinstance(scan, JournalCorruption):
                print(f"journal {path}: CORRUPT: {scan}")
            else:
                _print_table(path, scan, args)
    if any(isinstance(s, JournalCorruption) for _, s in results):
        print(REPAIR_HINT, file=sys.stderr)
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    results = _scan_all(args.directory)
    if not results:
        return _no_journal(args.directory)
    status = 0
    for path, scan in results:
        if isinstance(scan, JournalCorruption):
            print(f"{path}: corrupt: {scan}")
            status = 1
            continue
        tail = "" if scan.torn_tail is None else (
            f", torn tail at {scan.torn_tail.path} offset {scan.torn_tail.offset} "
            f"({scan.torn_tail.length} bytes, not an error)")
        print(f"{path}: ok, {len(scan.records)} dirty records, persisted <= "
              f"{scan.persisted_seq}, next seq {scan.next_seq}{tail}")
    if status:
        print(REPAIR_HINT)
    return status


async def _write_demo(directory: str) -> None:
    journal = await Journal.open(directory, shard_id=0, segment_bytes=8192)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        seq = 0
        for i in range(300):
            key = f"user:{i % 40}"
            if i % 7 == 3:
                seq = journal.append_nowait(RecordKind.DELETE, key, None, i + 1)
            else:
                seq = journal.append_nowait(RecordKind.PUT, key, f"v{i}".encode() * 4, i + 1)
            if i % 50 == 49:
                await journal.wait_synced(seq)  # one batch per 50: rotation happens between
            if i == 120:
                journal.checkpoint_nowait(100)
        await journal.wait_synced(seq)
        journal.close()
    # The writer "dies" halfway through one more record: a torn tail.
    last = list_segments(OsFileSystem(), directory)[-1]
    with open(last, "rb") as f:
        header = SegmentHeader.decode(f.read())
    assert isinstance(header, SegmentHeader)
    frame = JournalRecord(seq=seq + 2, kind=RecordKind.PUT, key="user:torn", value=b"x" * 40,
                          version=999).encode(header.salt)
    with open(last, "ab") as f:
        f.write(frame[: len(frame) // 2])


def _demo(args: argparse.Namespace) -> int:
    if _journal_dirs(args.directory):
        print(f"{args.directory}: already holds a journal; demo needs an empty directory",
              file=sys.stderr)
        return 2
    trio.run(_write_demo, args.directory)
    print(f"wrote a demo journal to {args.directory}\n")
    return _dump(argparse.Namespace(directory=args.directory, json=False, limit=None, key=None))
