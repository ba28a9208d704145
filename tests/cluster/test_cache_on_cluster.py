"""A cache whose shards are cluster partitions: journals on the partitions' JetStream
subjects, epochs from the partitions' leases, on a real three-node NATS cluster.

One instance owns every partition, acknowledges writes with ack='fsync' (the publish-ack of
the group commit holding them) and dies without draining; a second instance on the same
cluster and store waits out the leases, fences, replays, and serves every acknowledged write;
the first instance's journal, kept open like a paused process's, can no longer append."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import Config
from writebehind._cluster._bridge import connect
from writebehind._cluster._epochs import LeaseEpochs
from writebehind._cluster._journal import PartitionJournal, open_stream
from writebehind._cluster._lease import PartitionLeases
from writebehind._cluster._member import open_member
from writebehind._cluster._replicated import ReplicatedJournal, replicated_journals
from writebehind._cluster._status import lease_bucket
from writebehind._core._errors import JournalFailed
from writebehind._core._routing import EPOCH_SHIFT, make_version, shard_of
from writebehind._journal._backend import JournalBackend, OpenJournal
from writebehind._runtime._cache import Cache
from writebehind._runtime._seams import Seams
from writebehind._stores._sqlite import SQLiteStore

from .nodes import NatsCluster

CLUSTER = "wire"
SHARDS = 4
# Short leases, so the take-over waits seconds, not the default ten.
LEASES = {"ttl": 3.0, "renew_every": 0.5, "drift": 0.5}
log = logging.getLogger(__name__)


class KeptOpen:
    """A journal whose shard's close() does not close it: what a paused process's journal
    is while a new owner takes over."""

    def __init__(self, inner: ReplicatedJournal) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        pass


def recording(factory: OpenJournal, journals: dict[int, ReplicatedJournal], *,
              keep_open: bool = False, opening: list[float] | None = None) -> OpenJournal:
    async def open_journal(shard: int, **kwargs: Any) -> JournalBackend:
        start = trio.current_time()
        journal = await factory(shard, **kwargs)  # fence, then replay
        if opening is not None:
            opening.append(trio.current_time() - start)
        assert isinstance(journal, ReplicatedJournal)
        journals[shard] = journal
        return KeptOpen(journal) if keep_open else journal  # type: ignore[return-value]

    return open_journal


async def put_all(cache: Cache, items: dict[str, bytes], acked: dict[str, bytes],
                  writers: int = 8) -> None:
    keys = sorted(items)

    async def writer(part: list[str]) -> None:
        for key in part:
            await cache.put(key, items[key])
            acked[key] = items[key]

    async with trio.open_nursery() as nursery:
        for i in range(writers):
            nursery.start_soon(writer, keys[i::writers])


async def test_acknowledged_writes_survive_a_take_over_and_the_old_journal_is_fenced(
    nats_cluster: NatsCluster, tmp_path: Path,
) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=SHARDS, ack="fsync", flush_interval=60.0)
    first = {f"a{i}": b"first %d" % i for i in range(120)}
    second = {f"b{i}": b"second %d" % i for i in range(160)}
    second.update({f"a{i}": b"overwritten %d" % i for i in range(0, 120, 3)})
    acked: dict[str, bytes] = {}
    old: dict[int, ReplicatedJournal] = {}
    new: dict[int, ReplicatedJournal] = {}
    opening: list[float] = []
    zombie_key = next(f"z{i}" for i in range(100) if shard_of(f"z{i}", SHARDS) == 0)

    with trio.fail_after(120):
        async with connect(nats_cluster.servers) as conn1, connect(nats_cluster.servers) as conn2:
            # -- instance 1: owns every partition, acknowledges, then dies -----------------
            with trio.CancelScope() as instance1:
                async with open_member(conn1, CLUSTER, "a", **LEASES) as m1:
                    epochs1 = m1.epochs
                    async with trio.open_nursery() as nursery:
                        cache1 = Cache(config, Seams(), epochs=m1.epochs,
                                       open_journal=recording(m1.open_journal, old,
                                                              keep_open=True))
                        await nursery.start(cache1._serve)
                        await put_all(cache1, first, acked)
                        await cache1.flush()  # in the store; the checkpoint purges behind it
                        await put_all(cache1, second, acked)  # acknowledged, never flushed
                        unflushed = sum(s.unpersisted for s in cache1.statistics().shards)
                        instance1.cancel()  # a crash: no drain, no lease released
                        crashed = trio.current_time()
                        await trio.lowlevel.checkpoint()
            assert instance1.cancelled_caught
            assert unflushed == len(second)
            assert sorted(old) == list(range(SHARDS))
            assert all(j.commits > 0 for j in old.values())
            assert sum(j.purges for j in old.values()) > 0
            old_epochs = {p: j.epoch for p, j in old.items()}
            assert all(epochs1.held()[p].epoch == e for p, e in old_epochs.items())

            # -- instance 2: takes the leases after expiry, fences, replays, serves ----------
            async with open_member(conn2, CLUSTER, "b", **LEASES) as m2:
                async with trio.open_nursery() as nursery:
                    cache2 = Cache(config, Seams(), epochs=m2.epochs,
                                   open_journal=recording(m2.open_journal, new,
                                                          opening=opening))
                    started = trio.current_time()
                    await nursery.start(cache2._serve)
                    takeover = trio.current_time() - crashed
                    log.warning(
                        "take-over of %d partitions: %.2fs after the crash (lease ttl %.1fs), "
                        "%.2fs after the second instance started; fence + replay per "
                        "partition: %s s", SHARDS, takeover, LEASES["ttl"],
                        trio.current_time() - started, ", ".join(f"{t:.3f}" for t in opening),
                    )
                    assert takeover < LEASES["ttl"] + 10
                    for p, journal in new.items():
                        assert journal.epoch > old_epochs[p]  # a newer fencing token
                    # Replayed: exactly the acknowledged records the store did not hold yet
                    # (the first batch lay behind the checkpoint, purged or skipped).
                    stats = cache2.statistics()
                    assert sum(s.recovered_records for s in stats.shards) == len(second)
                    probe = await cache2.put("probe", b"p")
                    acked["probe"] = b"p"
                    assert probe.version >> EPOCH_SHIFT == new[probe.shard].epoch

                    # -- the zombie: instance 1's journal of partition 0, still open -----------
                    zombie = old[0]

                    async def committer() -> None:
                        with pytest.raises(JournalFailed, match="fenced by a newer owner"):
                            await zombie.run()

                    async with trio.open_nursery() as zn:
                        zn.start_soon(committer)
                        zombie_seq = zombie.append_encoded(
                            zombie_key.encode(), b"zombie", make_version(zombie.epoch, 1 << 30)
                        )
                        with pytest.raises(JournalFailed, match="fenced by a newer owner"):
                            await zombie.wait_synced(zombie_seq)
                    assert zombie.statistics().written_seq < zombie_seq

                    for key, value in acked.items():
                        assert await cache2.get(key) == value, key
                    assert await cache2.get(zombie_key) is None
                    await cache2.flush()
                    await cache2.aclose()

            # Nothing of the zombie's on partition 0's subject.
            reader = PartitionJournal(conn2, CLUSTER, 0, epoch=0)
            values = [r.value for e in await reader.replay(1) for r in e.records]
            assert b"zombie" not in values

    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    try:
        stored = store.read_all()
    finally:
        store.close()
    assert {k: r.value for k, r in stored.items()} == acked
    assert zombie_key not in stored


async def test_an_owner_stops_acknowledging_when_its_lease_is_not_renewed(
    nats_cluster: NatsCluster,
) -> None:
    """Without renewals the journal refuses to acknowledge from ttl - drift after the last
    lease write was sent; with them it goes on; a restarted incarnation retakes its own
    lease with a new epoch at once, and the old epoch's journal stops acknowledging."""
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            await open_stream(conn, "lapse", replicas=3)
            leases = await PartitionLeases.open(conn, lease_bucket("lapse"), "m", ttl=1.5,
                                                renew_every=0.3, drift=0.5)
            epochs = LeaseEpochs(leases)
            factory = replicated_journals(conn, "lapse", epochs)

            async def serve(journal: JournalBackend, fails: str | None) -> None:
                if fails is None:
                    await journal.run()
                else:
                    with pytest.raises(JournalFailed, match=fails):
                        await journal.run()

            async with trio.open_nursery() as nursery:
                # No renew loop: partition 0's lease runs out.
                epoch = await epochs.take_epoch(0)
                journal = await factory(0, fault_point=None, on_event=lambda *_: None)
                nursery.start_soon(serve, journal, "lease of epoch .* lapsed")
                await journal.wait_synced(journal.append_encoded(b"k", b"v", epoch << 40 | 1))
                until = epochs.acknowledge_until(0, epoch)
                await trio.sleep(until - epochs.now() + 0.1)
                with pytest.raises(JournalFailed, match="lapsed"):
                    journal.append_encoded(b"k", b"late", epoch << 40 | 2)
                assert not epochs.may_acknowledge(0, epoch)

                # With the renew loop: acknowledging goes on past several TTLs.
                await nursery.start(epochs.run)
                first = await epochs.take_epoch(1)
                kept = await factory(1, fault_point=None, on_event=lambda *_: None)
                nursery.start_soon(serve, kept, "lease of epoch .* lapsed")
                await trio.sleep(2 * leases.ttl)
                await kept.wait_synced(kept.append_encoded(b"k", b"v", first << 40 | 1))
                assert epochs.renewals >= 4

                # A restarted incarnation of shard 1 retakes the lease: a newer epoch, no
                # wait; the old incarnation's journal may no longer acknowledge.
                start = trio.current_time()
                second = await epochs.take_epoch(1)
                assert second > first and trio.current_time() - start < 1.0
                with pytest.raises(JournalFailed, match="lapsed"):
                    await kept.wait_synced(kept.append_encoded(b"k", b"old", first << 40 | 2))
                fresh = await factory(1, fault_point=None, on_event=lambda *_: None)
                nursery.start_soon(serve, fresh, None)
                assert [r.value for r in fresh.replay().records] == [b"v", b"old"]
                await fresh.wait_synced(fresh.append_encoded(b"k", b"new", second << 40 | 1))
                fresh.close()
                nursery.cancel_scope.cancel()


async def test_after_a_graceful_stop_the_next_instance_does_not_wait(
    nats_cluster: NatsCluster, tmp_path: Path,
) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=SHARDS, ack="fsync", flush_interval=60.0)
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            async with open_member(conn, CLUSTER, "a", **LEASES) as m1:
                async with trio.open_nursery() as nursery:
                    cache1 = Cache(config, Seams(), epochs=m1.epochs,
                                   open_journal=m1.open_journal)
                    await nursery.start(cache1._serve)
                    await cache1.put("k", b"v")
                    await cache1.aclose()  # drains: flushes and checkpoints
            assert m1.epochs.held() == {}  # released on the way out
            stopped = trio.current_time()
            async with open_member(conn, CLUSTER, "b", **LEASES) as m2:
                async with trio.open_nursery() as nursery:
                    cache2 = Cache(config, Seams(), epochs=m2.epochs,
                                   open_journal=m2.open_journal)
                    await nursery.start(cache2._serve)
                    assert trio.current_time() - stopped < LEASES["ttl"] / 2
                    assert sum(s.recovered_records for s in cache2.statistics().shards) == 0
                    assert await cache2.get("k") == b"v"  # from the store
                    await cache2.aclose()


async def test_put_many_on_partition_journals_survives_a_take_over(
    nats_cluster: NatsCluster, tmp_path: Path,
) -> None:
    # put_many appends each shard's part as one batch of records on its partition's subject.
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=SHARDS, ack="fsync", flush_interval=3600.0)
    items = {f"many-{i}": f"v{i}".encode() for i in range(60)}
    with trio.fail_after(90):
        async with connect(nats_cluster.servers) as conn:
            async with open_member(conn, CLUSTER, "a", **LEASES) as m1:
                async with trio.open_nursery() as nursery:
                    cache1 = Cache(config, Seams(), epochs=m1.epochs,
                                   open_journal=m1.open_journal)
                    await nursery.start(cache1._serve)
                    receipts = await cache1.put_many(items)
                    assert [r.key for r in receipts] == list(items)
                    nursery.cancel_scope.cancel()  # dies: nothing flushed, nothing drained
            async with open_member(conn, CLUSTER, "b", **LEASES) as m2:
                async with trio.open_nursery() as nursery:
                    cache2 = Cache(config, Seams(), epochs=m2.epochs,
                                   open_journal=m2.open_journal)
                    await nursery.start(cache2._serve)
                    assert await cache2.get_many(items) == items
                    await cache2.flush()
                    stored = SQLiteStore(tmp_path / "store.db")
                    stored.connect()
                    try:
                        assert {k: r.value for k, r in stored.read_all().items()} == items
                    finally:
                        stored.close()
                    await cache2.aclose()
