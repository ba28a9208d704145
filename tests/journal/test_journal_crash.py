"""Crash consistency on SimulatedFileSystem: lose power at every operation, in every mode.

The rules checked after each crash and reopen:
* every record reported synced is recovered (or covered by the recovered persisted mark);
* nothing that was not appended appears, and each record is exactly what was appended;
* order is preserved; next_seq is above every seq reported synced or recovered;
* the persisted mark is one that was checkpointed, and at least every mark reported synced;
* the reopened journal accepts appends and recovers again cleanly.
"""

from __future__ import annotations

import errno

import attrs
import pytest
import trio
import trio.testing

from writebehind._core._errors import JournalClosed, JournalFailed, JournalFull
from writebehind._journal import Journal, JournalRecord, RecordKind
from writebehind._journal._fs import CRASH_MODES, CrashMode, SimulatedCrash, SimulatedFileSystem

DIR = "/data/journal"


@attrs.define
class Observed:
    appended: dict[int, JournalRecord] = attrs.Factory(dict)
    synced: set[int] = attrs.Factory(set)
    marks: set[int] = attrs.Factory(lambda: {0})
    synced_marks: set[int] = attrs.Factory(lambda: {0})
    completed: bool = False


def run_trio(fn, *args):  # type: ignore[no-untyped-def]
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


async def workload(fs: SimulatedFileSystem, seen: Observed) -> None:
    journal = await Journal.open(DIR, shard_id=7, fs=fs, segment_bytes=4096)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)

            async def writer(w: int) -> None:
                for i in range(24):
                    kind = RecordKind.DELETE if i % 6 == 5 else RecordKind.PUT
                    value = None if kind == RecordKind.DELETE else bytes([w]) * (60 + i)
                    seq = journal.append_nowait(kind, f"w{w}:{i % 5}", value, i)
                    seen.appended[seq] = JournalRecord(seq, kind, f"w{w}:{i % 5}", value, i)
                    if i % 4 == 3:
                        await journal.wait_written(seq)
                    else:
                        await journal.wait_synced(seq)
                        seen.synced.add(seq)
                    if w == 0 and i % 8 == 7 and seen.synced:
                        mark = max(seen.synced) - 3
                        seen.marks.add(mark)
                        cseq = journal.checkpoint_nowait(mark)
                        await journal.wait_synced(cseq)
                        seen.synced_marks.add(mark)

            async with trio.open_nursery() as writers:
                for w in range(4):
                    writers.start_soon(writer, w)
            seen.completed = True
            journal.close()
    finally:
        journal.close()


async def reopen_and_check(fs: SimulatedFileSystem, seen: Observed) -> None:
    journal = await Journal.open(DIR, shard_id=7, fs=fs, segment_bytes=4096)
    rec = journal.recovery
    seqs = [r.seq for r in rec.records]
    assert seqs == sorted(set(seqs)), "order preserved, no duplicates"
    for record in rec.records:
        assert seen.appended.get(record.seq) == record, "only what was appended"
    assert rec.persisted_seq in seen.marks
    assert rec.persisted_seq >= max(seen.synced_marks)
    lost = {s for s in seen.synced if s > rec.persisted_seq} - set(seqs)
    assert not lost, f"records reported synced were lost: {sorted(lost)}"
    assert rec.next_seq > max([*seen.synced, *seqs, rec.persisted_seq])
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        seq = journal.append_nowait(RecordKind.PUT, "after", b"crash", 1)
        await journal.wait_synced(seq)
        journal.close()
    again = await Journal.open(DIR, shard_id=7, fs=fs)
    assert again.recovery.records[-1] == JournalRecord(seq, RecordKind.PUT, "after", b"crash", 1)
    assert again.recovery.torn_tail is None
    again.close()


@pytest.mark.parametrize("mode", CRASH_MODES)
def test_every_synced_record_survives_a_crash_at_every_operation(mode: CrashMode) -> None:
    crashes = 0
    for point in range(10_000):
        fs = SimulatedFileSystem(seed=point)
        fs.crash_after_ops = point
        seen = Observed()
        try:
            run_trio(workload, fs, seen)
        except* SimulatedCrash:
            crashes += 1
        if seen.completed:
            break
        fs.crash(mode)
        run_trio(reopen_and_check, fs, seen)
    assert seen.completed and crashes > 50
    print(f"{crashes} crash points")


@pytest.mark.parametrize("mode", CRASH_MODES)
def test_crash_during_replay_and_segment_delete_is_recoverable(mode: CrashMode) -> None:
    fs = SimulatedFileSystem(seed=1)
    seen = Observed()
    run_trio(workload, fs, seen)

    class Boom(Exception):
        pass

    def crash_on(point: str):  # type: ignore[no-untyped-def]
        def fault(name: str) -> None:
            if name == point:
                raise Boom(name)
        return fault

    async def open_with(fault) -> None:  # type: ignore[no-untyped-def]
        await Journal.open(DIR, shard_id=7, fs=fs, fault_point=fault)

    with pytest.raises(Boom):
        run_trio(open_with, crash_on("journal.replay"))
    fs.crash(mode)
    run_trio(reopen_and_check, fs, seen)


def test_group_commit_uses_one_fdatasync_per_batch() -> None:
    fs = SimulatedFileSystem()

    async def main() -> None:
        journal = await Journal.open(DIR, shard_id=1, fs=fs)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            before = fs.fdatasyncs

            async def writer(i: int) -> None:
                seq = journal.append_nowait(RecordKind.PUT, f"k{i}", b"x" * 100, 1)
                await journal.wait_synced(seq)

            async with trio.open_nursery() as writers:
                for i in range(64):
                    writers.start_soon(writer, i)
            assert fs.fdatasyncs - before <= 2
            assert journal.statistics().synced_seq == 64
            journal.close()

    run_trio(main)


async def test_sync_interval_syncs_without_a_waiter(autojump_clock: trio.abc.Clock) -> None:
    fs = SimulatedFileSystem()
    journal = await Journal.open(DIR, shard_id=1, fs=fs, sync_interval=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        first = journal.append_nowait(RecordKind.PUT, "k", b"v", 1)
        await journal.wait_synced(first)
        seq = journal.append_nowait(RecordKind.PUT, "k", b"v", 2)
        await journal.wait_written(seq)
        assert journal.statistics().synced_seq < seq
        await trio.sleep(1.0)
        assert journal.statistics().synced_seq < seq
        await trio.sleep(1.5)
        assert journal.statistics().synced_seq == seq
        journal.close()


async def test_eio_on_fsync_fails_the_journal_and_nobody_is_told_durable(
    autojump_clock: trio.abc.Clock,
) -> None:
    fs = SimulatedFileSystem()
    journal = await Journal.open(DIR, shard_id=1, fs=fs)
    with pytest.RaisesGroup(
        pytest.RaisesExc(JournalFailed, match=r"fdatasync of .* failed .*reopen it to recover"),
        flatten_subgroups=True,
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            good = journal.append_nowait(RecordKind.PUT, "good", b"1", 1)
            await journal.wait_synced(good)
            fs.fsync_error = errno.EIO
            bad = journal.append_nowait(RecordKind.PUT, "bad", b"2", 2)
            with pytest.raises(JournalFailed):
                await journal.wait_synced(bad)
            fs.fsync_error = None  # even if the disk "recovers", no retry claims durability
            with pytest.raises(JournalFailed):
                await journal.wait_synced(bad)
            with pytest.raises(JournalFailed):
                journal.append_nowait(RecordKind.PUT, "later", b"3", 3)
    stats = journal.statistics()
    assert stats.synced_seq == good and stats.failed is not None
    await journal.wait_synced(good)  # what was synced before stays true
    journal.close()
    fs.crash("drop_unsynced")
    again = await Journal.open(DIR, shard_id=1, fs=fs)
    assert [r.key for r in again.recovery.records] == ["good"]
    again.close()


async def test_enospc_refuses_new_records_and_synced_records_stay_readable(
    autojump_clock: trio.abc.Clock,
) -> None:
    # ENOSPC at rotation (the segment's space is reserved as it is created): new records are
    # refused with JournalFull, the journal itself goes on. (tests/journal/test_journal_full.py
    # has the rest: checkpoints while full, resuming, a write that meets ENOSPC.)
    fs = SimulatedFileSystem()
    journal = await Journal.open(DIR, shard_id=1, fs=fs, segment_bytes=4096)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        seq = journal.append_nowait(RecordKind.PUT, "kept", b"1" * 50, 1)
        await journal.wait_synced(seq)
        fs.space_left = 100
        with pytest.raises(JournalFull, match="no space left on device for a new segment"):
            for i in range(200):
                await journal.wait_synced(
                    journal.append_nowait(RecordKind.PUT, f"more{i}", b"2" * 50, 1)
                )
        kept = [f"more{j}" for j in range(i)]
        assert journal.statistics().failed is None
        journal.close()
    fs.space_left = None
    for mode in CRASH_MODES:
        fs.crash(mode)
        again = await Journal.open(DIR, shard_id=1, fs=fs)
        assert [r.key for r in again.recovery.records] == ["kept", *kept]
        again.close()


async def test_close_wakes_pending_waiters_with_journal_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = await Journal.open(DIR, shard_id=1, fs=SimulatedFileSystem())
    seq = journal.append_nowait(RecordKind.PUT, "k", b"v", 1)  # run() never started
    async with trio.open_nursery() as nursery:

        async def waiter() -> None:
            with pytest.raises(JournalClosed):
                await journal.wait_synced(seq)

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        journal.close()
    with pytest.raises(JournalClosed):
        journal.append_nowait(RecordKind.PUT, "k", b"v", 1)


async def test_flip_in_synced_region_refuses_to_open_naming_file_and_offset(
    autojump_clock: trio.abc.Clock,
) -> None:
    fs = SimulatedFileSystem()
    journal = await Journal.open(DIR, shard_id=1, fs=fs)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for i in range(5):
            seq = journal.append_nowait(RecordKind.PUT, f"k{i}", b"v" * 20, i)
        await journal.wait_synced(seq)
        journal.close()
    path = journal.recovery.segments[0]
    fs.flip_byte(path, 60)
    from writebehind._core._errors import JournalCorruption

    with pytest.raises(JournalCorruption, match=rf"^{path}: offset 36: checksum mismatch, "
                       r"followed by a valid record at offset \d+$"):
        await Journal.open(DIR, shard_id=1, fs=fs)
    repaired = await Journal.open(DIR, shard_id=1, fs=fs, repair=True)
    (report,) = repaired.recovery.repairs
    assert (report.path, report.offset) == (path, 36)
    assert repaired.recovery.records == ()
    assert fs.read_file(f"{path}.corrupt-36")[:4] != b""
    repaired.close()
