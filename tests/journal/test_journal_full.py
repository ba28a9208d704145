"""A full disk refuses new writes and nothing else, and the cache resumes by itself.

Issue 12, item 6: ENOSPC used to fail the journal, crash the shard, and crash-loop it into
TooManyRestarts within a fraction of a second; after space came back, the newest segment
filled it again. Now a segment's space is reserved as it is created, so ENOSPC shows at
rotation; puts get JournalFull (retryable) while flushing and checkpointing go on, and the
journal retries on its own until there is room again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from writebehind import Config, JournalFull, Seams, ShardCrashed, open_cache
from writebehind._journal import Journal, OsFileSystem, RecordKind, SimulatedFileSystem
from writebehind._journal._fs import CRASH_MODES
from writebehind._journal._journal import FULL_RETRY
from writebehind.harness import MemoryStore

DIR = "/data/journal"


class NoReserveFileSystem(SimulatedFileSystem):
    """A file system that cannot reserve space (fallocate unsupported): appends meet ENOSPC."""

    def reserve(self, fd: int, length: int) -> None:
        pass


async def _fill_until_full(journal: Journal) -> list[str]:
    """Append synced puts until the journal refuses one; return the keys it took."""
    keys = []
    for i in range(10_000):
        try:
            seq = journal.append_nowait(RecordKind.PUT, f"k{i}", b"x" * 100, i + 1)
        except JournalFull:
            return keys
        keys.append(f"k{i}")
        await journal.wait_synced(seq)
    pytest.fail("the journal never refused a record")


async def test_a_full_disk_shows_at_rotation_refuses_records_keeps_checkpoints_and_resumes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs, events = SimulatedFileSystem(), []
    journal = await Journal.open(DIR, shard_id=0, fs=fs, segment_bytes=4096,
                                 on_event=lambda kind, message: events.append((kind, message)))
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.wait_synced(journal.append_nowait(RecordKind.PUT, "first", b"1", 1))
        fs.space_left = 0  # from now on only the current segment's reserved space is left
        keys = ["first", *await _fill_until_full(journal)]
        stats = journal.statistics()
        assert stats.failed is None and stats.full is not None
        assert [kind for kind, _ in events] == ["journal_full"]
        assert "no space left on device for a new segment in /data/journal" in events[0][1]
        with pytest.raises(JournalFull, match="new writes are refused until space returns"):
            journal.append_nowait(RecordKind.DELETE, "k1", None, 99)
        # The flusher's checkpoints still land (they are what lets old segments go).
        await journal.wait_synced(journal.checkpoint_nowait(3))
        assert journal.statistics().persisted_seq == 3
        await trio.sleep(FULL_RETRY * 3)
        assert journal.statistics().full is not None  # still no space: still refused
        fs.space_left = None  # the operator freed space
        await trio.sleep(FULL_RETRY * 1.5)
        assert journal.statistics().full is None
        assert [kind for kind, _ in events] == ["journal_full", "journal_resumed"]
        seq = journal.append_nowait(RecordKind.PUT, "after", b"2", 1)
        await journal.wait_synced(seq)
        assert journal.statistics().segments == 2
        journal.close()
    for mode in CRASH_MODES:
        fs.crash(mode)
        again = await Journal.open(DIR, shard_id=0, fs=fs, segment_bytes=4096)
        assert [r.key for r in again.recovery.records] == [*keys, "after"][3:]
        again.close()


async def test_a_write_that_meets_enospc_is_kept_and_written_once_space_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Where space cannot be reserved, an append can meet ENOSPC: its bytes are cut back and
    # written again later; nobody waiting on them is told anything false meanwhile.
    fs = NoReserveFileSystem()
    journal = await Journal.open(DIR, shard_id=0, fs=fs, segment_bytes=1 << 20)
    synced: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.wait_synced(journal.append_nowait(RecordKind.PUT, "a", b"1" * 50, 1))
        fs.space_left = 30  # less than one record

        async def writer(key: str) -> None:
            seq = journal.append_nowait(RecordKind.PUT, key, b"2" * 50, 2)
            await journal.wait_synced(seq)
            synced.append(seq)

        nursery.start_soon(writer, "b")
        nursery.start_soon(writer, "c")
        await trio.sleep(FULL_RETRY * 3)
        assert synced == [] and journal.statistics().full is not None
        assert journal.statistics().failed is None
        with pytest.raises(JournalFull, match="no space left on device writing"):
            journal.append_nowait(RecordKind.PUT, "d", b"3", 3)
        fs.space_left = None
        await trio.sleep(FULL_RETRY * 1.5)
        assert sorted(synced) == [2, 3] and journal.statistics().full is None
        journal.close()
    fs.crash("drop_unsynced")
    again = await Journal.open(DIR, shard_id=0, fs=fs)
    assert sorted(r.key for r in again.recovery.records) == ["a", "b", "c"]
    again.close()


async def test_the_cache_refuses_puts_while_the_disk_is_full_and_resumes_without_a_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs, db, alerts = SimulatedFileSystem(), MemoryStore(), []
    config = Config(store="sqlite:///unused.db", journal_dir="/j", shards=1,
                    segment_bytes=4096, flush_interval=0.05, on_alert=alerts.append)
    async with open_cache(config, seams=Seams(store_factory=db.factory, filesystem=fs)) as cache:
        await cache.put("before", b"v")
        fs.space_left = 0
        refused = 0
        for i in range(2000):
            try:
                await cache.put(f"k{i % 50}", b"x" * 100)
            except JournalFull:
                refused += 1
                if refused == 5:
                    break
            except ShardCrashed:
                pytest.fail("a full disk crashed the shard")
        assert refused == 5
        assert any("no space left on device for a new segment" in a for a in alerts), alerts
        await cache.flush()  # the flusher drains and checkpoints while the disk is full
        assert db.values()["before"] == b"v"
        fs.space_left = None
        await trio.sleep(FULL_RETRY * 1.5)
        await cache.put("after", b"w")
        assert cache.statistics().shards[0].restarts == 0
        assert any("space is back" in a for a in alerts), alerts
    assert db.values()["after"] == b"w"


def test_os_reserve_allocates_without_changing_the_size(tmp_path: Path) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "segment")
    fd = fs.open_append(path, create=True)
    try:
        fs.write(fd, b"header")
        before = os.fstat(fd).st_blocks
        fs.reserve(fd, 1 << 20)
        fs.write(fd, b"more")
        assert os.fstat(fd).st_size == 10  # appends still go to the end of the data
        assert os.fstat(fd).st_blocks >= before  # more where the file system can reserve
    finally:
        fs.close(fd)
    assert Path(path).read_bytes() == b"headermore"


async def test_a_first_segment_on_a_full_disk_is_refused_with_what_to_do(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Before: a bare "OSError: [Errno 28]" in an exception group, naming no path.
    fs, db = SimulatedFileSystem(), MemoryStore()
    fs.space_left = 0
    config = Config(store="sqlite:///unused.db", journal_dir="/j", shards=1, segment_bytes=4096)
    with pytest.raises(JournalFull, match=r"^no space left on device for the first journal "
                       r"segment in /j/shard-0000 \(it reserves \d+ bytes.*free space on that "
                       r"disk, or point Config.journal_dir at one with room, then start again$"):
        async with open_cache(config, seams=Seams(store_factory=db.factory, filesystem=fs)):
            pytest.fail("the cache started without a journal segment")
    assert "MANIFEST" not in fs.listdir("/j/shard-0000")  # no segment was named the newest
