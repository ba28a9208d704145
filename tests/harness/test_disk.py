"""The faulty disk: one-shot I/O errors, and byte flips the journal must detect."""

import errno
import random

import pytest
import trio

from writebehind import JournalCorruption
from writebehind._journal import Journal, RecordKind
from writebehind.harness import FaultyDisk

ROOT = "/j"


async def fill(disk: FaultyDisk, shard: int, count: int) -> None:
    journal = await Journal.open(f"{ROOT}/shard-{shard:04d}", shard_id=shard, fs=disk,
                                 segment_bytes=4096)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(count):
            seq = journal.append_nowait(RecordKind.PUT, f"k{i}", b"x" * 40, i + 1)
        await journal.wait_synced(seq)
        journal.close()


async def test_every_flip_the_harness_makes_is_detected_at_open(
    autojump_clock: trio.abc.Clock,
) -> None:
    for seed in range(30):
        disk = FaultyDisk(seed)
        await fill(disk, 0, 1 + seed * 7)  # from one record to several segments
        flip = disk.flip_detectable(ROOT, random.Random(seed))
        assert flip is not None
        with pytest.raises(JournalCorruption):
            await Journal.open(f"{ROOT}/shard-0000", shard_id=0, fs=disk)
        assert disk.restore_flips() == 1
        journal = await Journal.open(f"{ROOT}/shard-0000", shard_id=0, fs=disk)
        assert len(journal.recovery.records) == 1 + seed * 7
        journal.close()


def test_fsync_errors_and_a_full_disk_fire_once() -> None:
    disk = FaultyDisk()
    disk.makedirs("/d")
    fd = disk.open_append("/d/f", create=True)
    disk.fail_fsyncs = 1
    with pytest.raises(OSError) as eio:
        disk.fdatasync(fd)
    assert eio.value.errno == errno.EIO
    disk.fdatasync(fd)  # the next one works
    disk.fill_after(3)
    assert disk.write(fd, b"abcdef") == 3
    with pytest.raises(OSError) as full:
        disk.write(fd, b"def")
    assert full.value.errno == errno.ENOSPC
    assert disk.write(fd, b"def") == 3  # space came back
