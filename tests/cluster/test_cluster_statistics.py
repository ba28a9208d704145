"""``Cache.statistics().cluster`` on a real three-node NATS cluster: the member, its leases
and epochs, and the counters a take-over and a graceful hand-over move; the same snapshot as
the inspector's state message and as Prometheus samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest

from writebehind import CacheCollector, ClusterStatistics, Config, open_cache
from writebehind._cluster._bridge import connect
from writebehind._cluster._member import open_member
from writebehind._inspector._protocol import state_message
from writebehind._runtime._cache import Cache
from writebehind._runtime._seams import Seams

from .nodes import NatsCluster

SHARDS = 3
LEASES = {"ttl": 3.0, "renew_every": 0.5, "drift": 0.5}


def _config(cluster: NatsCluster, tmp_path: Path, name: str) -> Config:
    return Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                  cluster=cluster.servers, cluster_name=name, partitions=SHARDS, replicas=3,
                  ack="replicated", lease_ttl=3.0)


async def test_open_cache_reports_its_member_leases_and_epochs(
    nats_cluster: NatsCluster, tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with open_cache(_config(nats_cluster, tmp_path, "stats1")) as cache:
            await cache.put("k", b"v")
            stats = cache.statistics().cluster
            assert isinstance(stats, ClusterStatistics)
            assert stats.cluster == "stats1" and stats.partitions == SHARDS
            assert stats.live == (stats.member,)
            assert stats.hosted == stats.owned == tuple(range(SHARDS)) and stats.starting == ()
            # A new cluster: each partition's first acquisition, epoch 1, nobody taken over.
            assert [lease.epoch for lease in stats.leases] == [1] * SHARDS
            assert stats.acquisitions == SHARDS and stats.takeovers == 0
            assert stats.losses == 0
            for lease in stats.leases:
                # Renewed every 0.6 s of a 3 s lease, stopping 0.6 s before its end.
                assert 0 < lease.acknowledge_for < lease.expires_in <= 3.0
                assert lease.expires_in - lease.acknowledge_for == pytest.approx(0.6)
            renewals = stats.renewals
            await trio.sleep(1.5)
            assert cache.statistics().cluster.renewals > renewals  # type: ignore[union-attr]


async def test_a_take_over_and_a_hand_over_are_counted_apart(
    nats_cluster: NatsCluster, tmp_path: Path,
) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=SHARDS, ack="fsync", flush_interval=60.0)
    with trio.fail_after(90):
        async with connect(nats_cluster.servers) as conn:
            # -- a member that dies holding every lease ----------------------------------
            with trio.CancelScope() as crash:
                async with open_member(conn, "stats2", "a", **LEASES) as m1:
                    async with trio.open_nursery() as nursery:
                        cache1 = Cache(config, Seams(), epochs=m1.epochs,
                                       open_journal=m1.open_journal,
                                       cluster_view=m1.view)
                        await nursery.start(cache1._serve)
                        await cache1.put("k", b"v1")
                        first = cache1.statistics().cluster
                        crash.cancel()  # no drain, no release
                        await trio.lowlevel.checkpoint()
            assert first is not None and first.takeovers == 0

            # -- the next takes each lapsed lease over, with a newer epoch -----------------
            async with open_member(conn, "stats2", "b", **LEASES) as m2:
                async with trio.open_nursery() as nursery:
                    cache2 = Cache(config, Seams(), epochs=m2.epochs,
                                   open_journal=m2.open_journal,
                                   cluster_view=m2.view)
                    await nursery.start(cache2._serve)
                    assert await cache2.get("k") == b"v1"
                    second = cache2.statistics().cluster
                    assert second is not None and second.member == "b"
                    assert second.takeovers == second.acquisitions == SHARDS
                    assert [lease.epoch for lease in second.leases] == [
                        lease.epoch + 1 for lease in first.leases]
                    await cache2.aclose()  # drains; open_member then releases the leases

            # -- after a graceful stop, acquiring a released lease is no take-over ---------
            async with open_member(conn, "stats2", "c", **LEASES) as m3:
                async with trio.open_nursery() as nursery:
                    cache3 = Cache(config, Seams(), epochs=m3.epochs,
                                   open_journal=m3.open_journal,
                                   cluster_view=m3.view)
                    await nursery.start(cache3._serve)
                    third = cache3.statistics().cluster
                    assert third is not None
                    assert third.acquisitions == SHARDS and third.takeovers == 0
                    assert [lease.epoch for lease in third.leases] == [
                        lease.epoch + 1 for lease in second.leases]

                    # The inspector's state message and the metrics carry the same view.
                    stats = cache3.statistics()
                    message = state_message("update", stats, seq=1, now=0.0)
                    assert message["cluster"]["member"] == "c"
                    assert message["cluster"]["owned"] == list(range(SHARDS))
                    assert [lease["epoch"] for lease in message["cluster"]["leases"]] == [
                        lease.epoch for lease in third.leases]
                    registry = CollectorRegistry(auto_describe=False)
                    registry.register(CacheCollector(cache3))
                    text = generate_latest(registry).decode()
                    assert 'writebehind_cluster_member{cluster="stats2",member="c"} 1.0' in text
                    assert f"writebehind_cluster_owned_partitions {float(SHARDS)}" in text
                    epoch = third.leases[0].epoch
                    assert f'writebehind_partition_epoch{{partition="0"}} {float(epoch)}' in text
                    await cache3.aclose()
