"""``Journal.append_encoded_many``: one append of many records, consecutive sequence numbers,
all or nothing (a full disk refuses the whole batch)."""

import pytest
import trio
import trio.testing

from writebehind import JournalFull
from writebehind._journal import Journal, RecordKind, SimulatedFileSystem

DIR = "/data/journal"


async def test_a_batch_replays_as_its_records_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs = SimulatedFileSystem()
    journal = await Journal.open(DIR, shard_id=0, fs=fs)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        first = journal.append_encoded(b"before", b"0", 1)
        last = journal.append_encoded_many(
            [(b"a", b"1", 2), ("\u00e9".encode(), None, 3), (b"c", b"", 4)]
        )
        assert last == first + 3
        await journal.wait_synced(last)
        assert journal.statistics().synced_seq == last
        with pytest.raises(ValueError, match="at least one record"):
            journal.append_encoded_many([])
        journal.close()
    fs.crash("drop_unsynced")
    again = await Journal.open(DIR, shard_id=0, fs=fs)
    records = again.recovery.records
    assert [(r.seq, r.kind, r.key, r.value, r.version) for r in records] == [
        (first, RecordKind.PUT, "before", b"0", 1),
        (first + 1, RecordKind.PUT, "a", b"1", 2),
        (first + 2, RecordKind.DELETE, "\u00e9", None, 3),
        (first + 3, RecordKind.PUT, "c", b"", 4),  # an empty value is a put, not a delete
    ]
    again.close()


async def test_a_full_journal_refuses_the_whole_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs = SimulatedFileSystem()
    journal = await Journal.open(DIR, shard_id=0, fs=fs, segment_bytes=4096)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        fs.space_left = 0  # only the current segment's reserved space is left
        with pytest.raises(JournalFull):
            for i in range(1000):
                await journal.wait_synced(
                    journal.append_encoded_many([(b"k%d" % i, b"x" * 100, i + 1)] * 3)
                )
        before = journal.statistics().next_seq
        with pytest.raises(JournalFull):
            journal.append_encoded_many([(b"late", b"1", 10_000), (b"later", b"2", 10_001)])
        assert journal.statistics().next_seq == before  # nothing was appended
        journal.close()


async def test_replay_hands_the_recovered_records_over_and_keeps_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fs = SimulatedFileSystem()
    journal = await Journal.open(DIR, shard_id=0, fs=fs)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.wait_synced(journal.append_encoded_many([(b"a", b"1", 1), (b"b", b"2", 2)]))
        journal.close()
    again = await Journal.open(DIR, shard_id=0, fs=fs)
    replay = again.replay()
    assert [r.key for r in replay.records] == ["a", "b"]
    # The shard's core holds them from here on; the journal keeps the rest of its report.
    assert again.recovery.records == () and again.recovery.next_seq == replay.next_seq
    again.close()
