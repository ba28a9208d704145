"""The journal on real files: rotation, checkpoints, the lock, torn tails, repair, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from writebehind._core._errors import JournalCorruption, JournalLocked
from writebehind._journal import Journal, RecordKind, SimulatedFileSystem
from writebehind._journal._codec import JournalRecord

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI


async def fill(journal: Journal, count: int, *, start: int = 0) -> int:
    seq = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(start, start + count):
            seq = journal.append_nowait(RecordKind.PUT, f"k{i}", b"x" * 100, i)
            if i % 20 == 19:
                await journal.wait_synced(seq)
        await journal.wait_synced(seq)
        nursery.cancel_scope.cancel()
    return seq


async def test_segments_rotate_and_are_named_by_first_seq(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        journal = await Journal.open(tmp_path, shard_id=2, segment_bytes=4096)
        await fill(journal, 200)
        journal.close()
        names = sorted(os.listdir(tmp_path))
        segments = [n for n in names if n.endswith(".wal")]
        assert len(segments) > 3 and segments[0] == "00000000000000000001.wal"
        assert all(len(n) == 24 for n in segments) and "LOCK" in names
        again = await Journal.open(tmp_path, shard_id=2)
        assert [r.key for r in again.recovery.records] == [f"k{i}" for i in range(200)]
        assert again.recovery.next_seq == 201
        again.close()


async def test_checkpoint_deletes_persisted_segments_but_never_the_last(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        points: list[str] = []
        journal = await Journal.open(tmp_path, shard_id=0, segment_bytes=4096,
                                     fault_point=points.append)
        last = await fill(journal, 200)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await journal.wait_synced(journal.checkpoint_nowait(150))
            assert journal.statistics().persisted_seq == 150
            while journal.statistics().segments > 3:  # deletion follows the sync
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        stats = journal.statistics()
        assert "journal.segment_delete" in points
        remaining = sorted(n for n in os.listdir(tmp_path) if n.endswith(".wal"))
        assert remaining[0] == "00000000000000000121.wal" and stats.segments == len(remaining)
        journal.close()
        again = await Journal.open(tmp_path, shard_id=0, fault_point=points.append)
        assert [r.seq for r in again.recovery.records] == list(range(151, last + 1))
        assert again.recovery.persisted_seq == 150
        assert points.count("journal.replay") == last - 150
        async with trio.open_nursery() as nursery:  # everything persisted: next_seq survives
            await nursery.start(again.run)
            await again.wait_synced(again.checkpoint_nowait(last + 1))
            nursery.cancel_scope.cancel()
        again.close()
        third = await Journal.open(tmp_path, shard_id=0)
        assert third.recovery.records == () and third.recovery.next_seq == last + 3
        third.close()


async def test_second_opener_is_refused_naming_the_holder_pid(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        journal = await Journal.open(tmp_path, shard_id=0)
        with pytest.raises(
            JournalLocked, match=rf"is in use by another journal \(pid {os.getpid()}\)"
        ) as info:
            await Journal.open(tmp_path, shard_id=0)
        assert info.value.holder_pid == os.getpid()
        journal.close()
        (await Journal.open(tmp_path, shard_id=0)).close()  # released on close


async def test_stale_lock_file_does_not_block_recovery(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        (tmp_path / "LOCK").write_text("99999999\n")
        (await Journal.open(tmp_path, shard_id=0)).close()


async def test_torn_tail_is_cut_and_kept_in_a_side_file(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        journal = await Journal.open(tmp_path, shard_id=0)
        last = await fill(journal, 10)
        journal.close()
        segment = tmp_path / "00000000000000000001.wal"
        size = segment.stat().st_size
        torn = JournalRecord(last + 1, RecordKind.PUT, "torn", b"y" * 50, 1).encode(0)[:30]
        with open(segment, "ab") as f:
            f.write(torn)
        again = await Journal.open(tmp_path, shard_id=0)
        tail = again.recovery.torn_tail
        assert tail is not None and (tail.offset, tail.length) == (size, 30)
        assert segment.stat().st_size == size
        assert (tmp_path / f"00000000000000000001.wal.torn-{size}").read_bytes() == torn
        assert len(again.recovery.records) == 10
        again.close()


async def test_a_second_tear_at_the_same_offset_keeps_both_side_files(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        journal = await Journal.open(tmp_path, shard_id=0)
        last = await fill(journal, 3)
        journal.close()
        segment = tmp_path / "00000000000000000001.wal"
        size = segment.stat().st_size
        tears = []
        for n in (30, 20):  # the process dies twice before writing past the same offset
            torn = JournalRecord(last + 1, RecordKind.PUT, "torn", b"y" * 50, 1).encode(0)[:n]
            with open(segment, "ab") as f:
                f.write(torn)
            tears.append(torn)
            again = await Journal.open(tmp_path, shard_id=0)
            again.close()
        assert again.recovery.torn_tail_copy == f"{segment}.torn-{size}.2"
        assert (tmp_path / f"00000000000000000001.wal.torn-{size}").read_bytes() == tears[0]
        assert (tmp_path / f"00000000000000000001.wal.torn-{size}.2").read_bytes() == tears[1]


async def test_corruption_is_refused_naming_file_and_offset_until_repair(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        journal = await Journal.open(tmp_path, shard_id=0)
        await fill(journal, 10)
        journal.close()
        segment = tmp_path / "00000000000000000001.wal"
        data = bytearray(segment.read_bytes())
        data[200] ^= 0x40
        segment.write_bytes(bytes(data))
        with pytest.raises(JournalCorruption, match=rf"^{segment}: offset \d+: checksum mismatch"
                           ) as info:
            await Journal.open(tmp_path, shard_id=0)
        offset = info.value.offset
        assert info.value.path == str(segment) and offset <= 200
        repaired = await Journal.open(tmp_path, shard_id=0, repair=True)
        (report,) = repaired.recovery.repairs
        assert report.offset == offset and report.dropped_bytes == len(data) - offset
        side_file = tmp_path / f"00000000000000000001.wal.corrupt-{offset}"
        assert side_file.read_bytes() == data[offset:]
        assert [r.seq for r in repaired.recovery.records] == list(range(1, 1 + len(
            repaired.recovery.records)))
        repaired.close()


async def test_wrong_shard_is_refused_even_with_repair(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        journal = await Journal.open(tmp_path, shard_id=1)
        await fill(journal, 3)
        journal.close()
        with pytest.raises(JournalCorruption, match="belongs to shard 1, expected shard 2"):
            await Journal.open(tmp_path, shard_id=2, repair=True)


def test_every_printed_synced_seq_survives_sigkill(tmp_path: Path) -> None:
    child = Path(__file__).with_name("sigkill_child.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(child), str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    printed = []
    for line in proc.stdout:
        printed.append(int(line))
        if len(printed) >= 400:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    printed += [int(line) for line in proc.stdout.read().split()]

    async def reopen() -> Journal:
        return await Journal.open(tmp_path, shard_id=0)

    journal = trio.run(reopen)
    recovered = {r.seq for r in journal.recovery.records}
    assert set(printed) <= recovered
    assert journal.recovery.next_seq > max(printed)
    journal.close()


async def test_a_write_interval_batches_writes_until_someone_waits(
    tmp_path: Path, autojump_clock: object
) -> None:
    fs = SimulatedFileSystem(3)
    journal = await Journal.open(
        str(tmp_path / "j"), shard_id=0, fs=fs, write_interval=0.5, sync_interval=10.0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        first = journal.append_nowait(RecordKind.PUT, "a", b"1", 1)
        await trio.sleep(0.4)
        assert journal.statistics().written_seq < first  # still buffered: the window
        await trio.sleep(0.2)
        assert journal.statistics().written_seq >= first  # written once the interval passed
        second = journal.append_nowait(RecordKind.PUT, "b", b"2", 2)
        await journal.wait_written(second)  # a waiter forces the write at once
        assert trio.current_time() < 0.6 + 0.01
        nursery.cancel_scope.cancel()
    journal.close()
