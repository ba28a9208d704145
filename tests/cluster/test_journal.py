"""The replicated journal primitive on a real three-node cluster: appends, the fence that
shuts a paused former owner out, replay from a checkpoint, and purge behind it."""

from __future__ import annotations

import contextlib
from typing import Any

import nats.errors
import pytest
import trio

from writebehind._cluster._bridge import NatsConnection, connect
from writebehind._cluster._journal import (
    FENCE,
    RECORDS,
    AppendUncertain,
    Fenced,
    PartitionJournal,
    Unsynced,
    decode_records,
    encode_records,
    open_stream,
    stream_name,
)
from writebehind._core._errors import WritebehindError
from writebehind._journal._codec import JournalRecord, RecordKind

from .nodes import NatsCluster


def put(seq: int, key: str, value: bytes, version: int) -> JournalRecord:
    return JournalRecord(seq=seq, kind=RecordKind.PUT, key=key, value=value, version=version)


def test_a_group_commit_round_trips_through_the_journal_codec() -> None:
    records = [put(1, "a", b"1", 10), JournalRecord(2, RecordKind.DELETE, "b", None, 11),
               put(3, "ключ", b"\x00" * 300, 12)]
    payload = encode_records(records, partition=7)
    assert decode_records(payload, 7) == records
    # Checksums are seeded with the partition: a message on the wrong subject is refused.
    with pytest.raises(WritebehindError, match="checksum mismatch"):
        decode_records(payload, 8)


async def test_the_new_owners_fence_refuses_the_zombies_append(nats_cluster: NatsCluster
                                                               ) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.urls[0]) as c1, connect(nats_cluster.urls[1]) as c2:
            await open_stream(c1, "t1", replicas=3)
            old = PartitionJournal(c1, "t1", 4, epoch=10)
            with pytest.raises(Unsynced, match="no fence"):
                await old.append([put(1, "k", b"never", 1)])
            fence_old = await old.fence()
            first = await old.append([put(1, "k", b"v1", 1)])
            assert first == fence_old + 1

            # The old owner pauses (SIGSTOP, a GC pause); a new owner takes the partition.
            new = PartitionJournal(c2, "t1", 4, epoch=11)
            fence_new = await new.fence()
            assert fence_new > first

            # The zombie wakes up and appends with the expectation it had: refused.
            with pytest.raises(Fenced, match="wrong last sequence"):
                await old.append([put(2, "k", b"zombie", 2)])
            # Nor can it adopt the new owner's sequence to append after it.
            with pytest.raises(Fenced, match="epoch 11 wrote the last message"):
                await old.resync()
            with pytest.raises(Unsynced, match="no fence or resync"):
                await old.append([put(2, "k", b"zombie", 2)])
            after = await new.append([put(1, "k", b"v2", 3)])
            assert await new.resync() == after  # the owner itself may resync

            entries = await new.replay(1)
            assert [(e.kind, e.epoch) for e in entries] == [
                (FENCE, 10), (RECORDS, 10), (FENCE, 11), (RECORDS, 11)]
            assert [e.seq for e in entries] == [fence_old, first, fence_new, after]
            values = [r.value for e in entries for r in e.records]
            assert values == [b"v1", b"v2"]  # the zombie's write is nowhere


async def test_a_fence_after_an_append_it_did_not_see_retries_and_keeps_it(
    nats_cluster: NatsCluster,
) -> None:
    """The old owner appends between the new owner's read and its fence: the fence's own
    check fails, it reads again, and the old append (before the fence) is replayed."""
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            await open_stream(conn, "t2", replicas=3)
            old = PartitionJournal(conn, "t2", 0, epoch=1)
            await old.fence()
            new = PartitionJournal(conn, "t2", 0, epoch=2)
            real_last = new.last_sequence
            raced = False

            async def last_then_race() -> int:
                nonlocal raced
                seen = await real_last()
                if not raced:
                    raced = True
                    await old.append([put(1, "k", b"slipped in", 1)])
                return seen

            new.last_sequence = last_then_race  # type: ignore[method-assign]
            fence = await new.fence()
            assert raced
            entries = await new.replay(1)
            assert [(e.kind, e.epoch) for e in entries] == [(FENCE, 1), (RECORDS, 1), (FENCE, 2)]
            assert entries[-1].seq == fence
            with pytest.raises(Fenced):
                await old.append([put(2, "k", b"late", 2)])


async def test_replay_from_the_checkpoint_and_purge_behind_it(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            await open_stream(conn, "t3", replicas=3)
            journal = PartitionJournal(conn, "t3", 9, epoch=5)
            await journal.fence()
            seqs = [await journal.append([put(i, f"k{i}", b"v%d" % i, i)]) for i in range(1, 301)]
            # Another partition's subject on the same stream is not replayed with this one.
            other = PartitionJournal(conn, "t3", 10, epoch=5)
            await other.fence()
            await other.append([put(1, "elsewhere", b"x", 1)])

            checkpoint = seqs[199]  # the store holds everything up to the 200th append
            tail = await journal.replay(checkpoint + 1)
            assert [r.key for e in tail for r in e.records] == [f"k{i}" for i in range(201, 301)]

            await journal.purge(checkpoint)
            everything = await journal.replay(1)
            assert [e.seq for e in everything] == seqs[200:]
            info = await conn.run(conn.js.stream_info, stream_name("t3"))
            assert info.state.messages == 100 + 2  # this tail, the other subject's two

            # Purging past the end keeps the last message: the fence check still has its anchor.
            await journal.purge(seqs[-1])
            kept = await journal.replay(1)
            assert [e.seq for e in kept] == [seqs[-1]]
            assert await journal.append([put(301, "k301", b"v", 301)]) > seqs[-1]


async def test_appends_go_on_when_one_of_three_nodes_dies(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(90):
        async with connect(nats_cluster.servers) as conn:
            await open_stream(conn, "t4", replicas=3)
            journal = PartitionJournal(conn, "t4", 1, epoch=1)
            await journal.fence()
            before = await journal.append([put(1, "a", b"1", 1)])
            victim = next(n for n in nats_cluster.nodes if n.url != conn.connected_url)
            victim.kill()
            appended = None
            with trio.move_on_after(30):  # the stream may elect a new leader first
                while appended is None:
                    try:
                        appended = await journal.append([put(2, "b", b"2", 2)])
                    except Fenced:
                        raise
                    except Exception:  # no answer or no leader yet: the kinds vary
                        with contextlib.suppress(Exception):
                            await journal.resync()  # learn where the subject is
                        await trio.sleep(0.2)
            assert appended is not None and appended > before
            keys = [r.key for e in await journal.replay(1) for r in e.records]
            assert keys[0] == "a" and keys[-1] == "b"


class LosesAnAck(NatsConnection):
    """A connection whose next JetStream publish lands but whose ack is "lost": the caller
    sees a timeout, as when the connection drops between the store and the answer."""

    def __init__(self, conn: NatsConnection, losses: int) -> None:
        super().__init__(conn.bridge, conn.client)
        self.losses = losses

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        result = await super().run(fn, *args, **kwargs)
        if fn == self.js.publish and self.losses > 0:
            self.losses -= 1
            raise nats.errors.TimeoutError
        return result


async def test_a_retried_append_whose_first_ack_was_lost_is_stored_once(
    nats_cluster: NatsCluster,
) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            await open_stream(conn, "t5", replicas=3)
            flaky = LosesAnAck(conn, losses=0)
            journal = PartitionJournal(flaky, "t5", 2, epoch=7)
            await journal.fence()
            flaky.losses = 1
            seq = await journal.append([put(1, "once", b"v", 1)])  # landed, ack lost, retried
            assert flaky.losses == 0
            entries = await journal.replay(1)
            assert [(e.kind, e.seq) for e in entries] == [(FENCE, seq - 1), (RECORDS, seq)]
            assert await journal.append([put(2, "next", b"v", 2)]) > seq  # and it goes on

            flaky.losses = 3  # every attempt loses its ack: the outcome is unknown
            with pytest.raises(AppendUncertain):
                await journal.append([put(3, "unknown", b"v", 3)])
            with pytest.raises(Unsynced, match="no fence or resync"):
                await journal.append([put(4, "x", b"v", 4)])
            last = await journal.resync()  # its own epoch wrote the last message: it may go on
            with trio.move_on_after(0):  # cancelled in flight: just as uncertain
                await journal.append([put(4, "cancelled", b"v", 4)])
            assert journal.last is None
            last = await journal.resync()
            keys = [r.key for e in await journal.replay(1) for r in e.records]
            assert keys[:3] == ["once", "next", "unknown"] and len(keys) <= 4
            assert await journal.append([put(4, "after", b"v", 4)]) > last
