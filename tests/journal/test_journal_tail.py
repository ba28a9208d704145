"""A lost newest segment is corruption, and every cut tail and repair is reported.

Issue 12, item 4: deleting the newest segment used to leave a journal that `journal check`
called ok, with its acknowledged records silently gone. The ``MANIFEST`` names the newest
segment once it is durable; these tests pin down what it catches, and that no power loss makes
a correct journal look as if it lost its tail.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio

from writebehind import Config, JournalCorruption, Seams, open_cache
from writebehind._cli import main
from writebehind._journal import Journal, RecordKind, SimulatedFileSystem
from writebehind._journal._codec import Manifest
from writebehind._journal._fs import CRASH_MODES, CrashMode, SimulatedCrash
from writebehind._journal._scan import MANIFEST_NAME, count_valid_frames, scan_journal
from writebehind.harness import MemoryStore

from .helpers import SALT, make_records, segment_bytes

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI


async def _fill(directory: Path | str, count: int, **kw: object) -> list[str]:
    """Append ``count`` synced puts with small segments; return the segment paths."""
    journal = await Journal.open(directory, shard_id=0, segment_bytes=4096, **kw)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(count):
            seq = journal.append_nowait(RecordKind.PUT, f"k{i}", b"x" * 200, i + 1)
            await journal.wait_synced(seq)
        segments = list(journal.recovery.segments)
        journal.close()
    return segments


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


# -- the pure scan ---------------------------------------------------------------------------


def _manifest(newest: int, *, shard_id: int = 3, salt: int = SALT) -> tuple[str, bytes]:
    return ("/j/MANIFEST", Manifest(shard_id=shard_id, salt=salt, newest_seq=newest).encode())


def test_scan_refuses_a_journal_older_than_its_manifest_and_accepts_one_as_new_or_newer() -> None:
    first, _ = segment_bytes(make_records(5))
    second, _ = segment_bytes(make_records(5, first_seq=6))
    files = [("/j/00000000000000000001.wal", first), ("/j/00000000000000000006.wal", second)]
    assert scan_journal(files, shard_id=3, manifest=_manifest(6)).manifest is not None
    assert scan_journal(files, shard_id=3, manifest=_manifest(1)).next_seq == 11
    assert scan_journal(files, shard_id=3).next_seq == 11  # no manifest: an older journal
    with pytest.raises(JournalCorruption) as info:
        scan_journal(files[:1], shard_id=3, manifest=_manifest(6))
    assert info.value.path == "/j/00000000000000000006.wal"
    assert "segment is missing, but /j/MANIFEST says it was the newest" in str(info.value)
    assert "records from seq 6 on are lost" in str(info.value)
    with pytest.raises(JournalCorruption, match="no readable segment is left"):
        scan_journal([], shard_id=3, manifest=_manifest(6))


def test_scan_refuses_a_torn_header_in_the_segment_the_manifest_names() -> None:
    first, _ = segment_bytes(make_records(5))
    files = [("/j/00000000000000000001.wal", first), ("/j/00000000000000000006.wal", b"WB")]
    # Newer than the manifest: a rotation cut short, the segment never existed.
    assert scan_journal(files, shard_id=3, manifest=_manifest(1)).torn_tail is not None
    with pytest.raises(JournalCorruption, match="segment has no header"):
        scan_journal(files, shard_id=3, manifest=_manifest(6))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "manifest is 0 bytes long"),
        (Manifest(shard_id=3, salt=SALT, newest_seq=1).encode()[:-1] + b"\0",
         "manifest checksum mismatch"),
        (Manifest(shard_id=4, salt=SALT, newest_seq=1).encode(), "belongs to shard 4"),
        (Manifest(shard_id=3, salt=SALT + 1, newest_seq=1).encode(), "another generation"),
    ],
)
def test_a_damaged_or_foreign_manifest_is_corruption_naming_it(data: bytes, reason: str) -> None:
    first, _ = segment_bytes(make_records(5))
    with pytest.raises(JournalCorruption, match=reason) as info:
        scan_journal([("/j/00000000000000000001.wal", first)], shard_id=3,
                     manifest=("/j/MANIFEST", data))
    assert info.value.path == "/j/MANIFEST"


def test_count_valid_frames_counts_the_records_in_cut_bytes() -> None:
    data, offsets = segment_bytes(make_records(6))
    assert count_valid_frames(data, offsets[0], SALT) == 6
    assert count_valid_frames(data, offsets[2] + 1, SALT) == 3
    assert count_valid_frames(data, offsets[0], SALT + 1) == 0


# -- the shell on a real directory -----------------------------------------------------------


async def test_a_deleted_newest_segment_is_refused_by_open_check_and_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(CAP):
        await _fill(tmp_path, 60)
        on_disk = _segments(tmp_path)
        assert len(on_disk) >= 3 and (tmp_path / MANIFEST_NAME).exists()
        on_disk[-1].unlink()
        with pytest.raises(JournalCorruption, match=r"records from seq \d+ on are lost") as info:
            await Journal.open(tmp_path, shard_id=0)
        assert info.value.path == str(on_disk[-1])
        capsys.readouterr()
        assert main(["journal", "check", str(tmp_path)]) == 1
        out = capsys.readouterr().out
        assert f"corrupt: {on_disk[-1]}: offset 0: segment is missing" in out
        assert "recover --config" in out
        assert main(["journal", "dump", str(tmp_path)]) == 1


async def test_every_segment_deleted_is_still_a_journal_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(CAP):
        await _fill(tmp_path, 3)
        for segment in _segments(tmp_path):
            segment.unlink()
        assert main(["journal", "check", str(tmp_path)]) == 1
        assert "no readable segment is left" in capsys.readouterr().out


async def test_repair_sets_the_manifest_aside_and_reports_what_it_names(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        await _fill(tmp_path, 60)
        _segments(tmp_path)[-1].unlink()
        journal = await Journal.open(tmp_path, shard_id=0, repair=True)
        journal.close()
        (repair,) = journal.recovery.repairs
        assert "segment is missing" in repair.reason
        assert repair.side_files == (str(tmp_path / "MANIFEST.corrupt-0"),)
        # The repaired directory has a manifest again, naming what is now the newest segment.
        manifest = Manifest.decode((tmp_path / MANIFEST_NAME).read_bytes())
        assert isinstance(manifest, Manifest)
        assert _segments(tmp_path)[-1].name == f"{manifest.newest_seq:020d}.wal"
        journal = await Journal.open(tmp_path, shard_id=0)
        journal.close()


async def test_repair_counts_the_records_it_drops(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        await _fill(tmp_path, 60)
        first = _segments(tmp_path)[0]
        data = bytearray(first.read_bytes())
        data[600] ^= 1  # in the third record
        first.write_bytes(bytes(data))
        journal = await Journal.open(tmp_path, shard_id=0, repair=True)
        journal.close()
        (repair,) = journal.recovery.repairs
        assert len(journal.recovery.records) == 2
        assert repair.dropped_records == 60 - 2 - 1  # the damaged record is no record at all


async def test_an_old_journal_without_a_manifest_opens_and_gets_one(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        await _fill(tmp_path, 60)
        (tmp_path / MANIFEST_NAME).unlink()
        journal = await Journal.open(tmp_path, shard_id=0)
        journal.close()
        assert len(journal.recovery.records) == 60
        assert (tmp_path / MANIFEST_NAME).exists()


# -- power loss never looks like a lost tail -------------------------------------------------


async def _rotating_run(fs: SimulatedFileSystem) -> None:
    await _fill("/j", 40, fs=fs)


@pytest.mark.parametrize("mode", CRASH_MODES)
def test_a_power_loss_at_any_operation_never_looks_like_a_lost_tail(mode: CrashMode) -> None:
    # The manifest names a segment only after its header and directory entry are synced; in
    # the other order a cut between the two leaves a manifest naming a segment that is gone.
    point = 0
    while True:
        fs = SimulatedFileSystem(seed=point)
        fs.crash_after_ops = point
        try:
            trio.run(_rotating_run, fs)
            finished = True
        except SimulatedCrash:
            finished = False
        except BaseExceptionGroup as group:
            assert group.subgroup(SimulatedCrash) is not None, group
            finished = False
        fs.crash(mode)
        if fs.exists("/j"):
            trio.run(_reopen, fs)  # raises JournalCorruption if the order is wrong
        if finished:
            break
        point += 1
    assert point > 40


async def _reopen(fs: SimulatedFileSystem) -> None:
    journal = await Journal.open("/j", shard_id=0, fs=fs, segment_bytes=4096)
    journal.close()


# -- every cut is logged and alerted ---------------------------------------------------------


async def test_a_cut_tail_is_an_alert_naming_file_offset_and_bytes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Zeros over the end of synced data: indistinguishable from a torn write, so recovery
    # cuts it; it used to do so without a log line.
    alerts: list[str] = []
    fs, db = SimulatedFileSystem(), MemoryStore()
    config = Config(store="sqlite:///unused.db", journal_dir="/j", ack="fsync", shards=1,
                    flush_interval=3600, on_alert=alerts.append)
    seams = Seams(store_factory=db.factory, filesystem=fs)
    async with open_cache(config, seams=seams) as cache:
        for i in range(5):
            await cache.put(f"k{i}", b"v" * 50)
    segment = sorted(p for p in fs.listdir("/j/shard-0000") if p.endswith(".wal"))[-1]
    path = f"/j/shard-0000/{segment}"
    size = fs.size(path)
    for offset in range(size - 30, size):
        fs.flip_byte(path, offset, fs.read_file(path)[offset])  # zero it
    with caplog.at_level(logging.WARNING, logger="writebehind"):
        async with open_cache(config, seams=seams):
            pass
    torn = [a for a in alerts if "cut a torn tail" in a]
    assert torn, alerts
    assert f"{path}: cut a torn tail at offset " in torn[0]
    assert "bytes holding no complete record" in torn[0]
    assert any("cut a torn tail" in r.getMessage() for r in caplog.records)


def test_the_recover_tool_logs_every_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "journal" / "shard-0000"
    trio.run(_fill, directory, 5)
    segment = _segments(directory)[-1]
    end = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(b"\0" * 100)
    from writebehind._runtime._recover import recover_journals

    with caplog.at_level(logging.WARNING, logger="writebehind"):
        store = MemoryStore().factory()
        store.connect()
        trio.run(lambda: recover_journals(tmp_path / "journal", store=store))
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{segment}: cut a torn tail at offset " in m for m in messages), messages
    assert os.path.exists(f"{segment}.torn-{end}")


async def test_a_reshard_alerts_every_cut_it_makes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A shard-count change replays the journals into the store before the shards start:
    # its cuts are alerts too, not only log lines.
    alerts: list[str] = []
    fs, db = SimulatedFileSystem(), MemoryStore()
    seams = Seams(store_factory=db.factory, filesystem=fs)

    def config(shards: int) -> Config:
        return Config(store="sqlite:///unused.db", journal_dir="/j", shards=shards,
                      flush_interval=3600, on_alert=alerts.append)

    async with open_cache(config(1), seams=seams) as cache:
        await cache.put("k", b"v")
    path = "/j/shard-0000/" + sorted(n for n in fs.listdir("/j/shard-0000")
                                     if n.endswith(".wal"))[-1]
    fd = fs.open_append(path)
    fs.write(fd, b"\0" * 40)
    fs.fdatasync(fd)
    fs.close(fd)
    async with open_cache(config(2), seams=seams):
        pass
    assert any(f"{path}: cut a torn tail at offset " in a for a in alerts), alerts
