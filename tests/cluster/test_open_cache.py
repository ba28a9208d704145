"""Cluster mode through the public way in: ``open_cache(Config(cluster=...))`` on a real
three-node NATS cluster, and the ``Config`` fields that ask for it.

An instance in its own process acknowledges writes with ack='replicated' and is killed
(SIGKILL); a second ``open_cache`` on the same cluster and store waits out the partition
leases, replays, and serves every acknowledged write with a newer epoch; after a graceful
stop the next one starts at once. (Several live instances: ``test_members.py``.)"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from writebehind import Config, ConfigError, open_cache
from writebehind._core._errors import ClusterUnavailable
from writebehind._core._routing import EPOCH_SHIFT
from writebehind._stores._sqlite import SQLiteStore

from .nodes import NatsCluster

log = logging.getLogger(__name__)
PARTITIONS = 4
TTL = 3.0  # partition leases: renewed every 0.6 s, acknowledging stops 0.6 s before the end

CHILD = textwrap.dedent("""
    import sys, trio
    from writebehind import Config, open_cache

    async def main() -> None:
        config = Config(cluster=sys.argv[1], cluster_name="pub", partitions=int(sys.argv[2]),
                        ack="replicated", lease_ttl=float(sys.argv[3]),
                        store=f"sqlite:///{sys.argv[4]}/store.db",
                        journal_dir=f"{sys.argv[4]}/journal", flush_interval=3600.0)
        async with open_cache(config) as cache:
            for i in range(200):
                await cache.put(f"k{i}", b"v%d" % i)
            await cache.delete("k7")
            print("acknowledged", flush=True)
            await trio.sleep_forever()

    trio.run(main)
""")


def _config(nats_cluster: NatsCluster, tmp_path: Path, **overrides: object) -> Config:
    fields: dict[str, object] = {
        "cluster": nats_cluster.servers, "cluster_name": "pub", "partitions": PARTITIONS,
        "ack": "replicated", "lease_ttl": TTL, "store": f"sqlite:///{tmp_path}/store.db",
        "journal_dir": tmp_path / "journal", "flush_interval": 3600.0,
    }
    fields.update(overrides)
    return Config(**fields)  # type: ignore[arg-type]


def _stored(tmp_path: Path) -> dict[str, bytes]:
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    try:
        return {k: r.value for k, r in store.read_all().items()}
    finally:
        store.close()


async def test_a_second_open_cache_takes_over_from_a_killed_one(
    nats_cluster: NatsCluster, tmp_path: Path,
) -> None:
    expected = {f"k{i}": b"v%d" % i for i in range(200) if i != 7}
    with trio.fail_after(120):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, nats_cluster.servers, str(PARTITIONS), str(TTL),
             str(tmp_path)],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            line = await trio.to_thread.run_sync(child.stdout.readline)  # type: ignore[union-attr]
            assert line.strip() == "acknowledged"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            await trio.to_thread.run_sync(child.wait)
        killed = trio.current_time()
        assert _stored(tmp_path) == {}  # nothing was flushed: it is all in the journals

        config = _config(nats_cluster, tmp_path)
        async with open_cache(config) as cache:
            # It hosts its share of the live members at once; the dead one's share once its
            # membership key lapsed and its leases expired.
            while len(cache.cluster_view().hosted) < PARTITIONS:
                await trio.sleep(0.05)
            takeover = trio.current_time() - killed
            log.warning("open_cache took %d partitions over %.2fs after the kill (ttl %.1fs)",
                        PARTITIONS, takeover, TTL)
            # The dead process's leases had to expire: at most ttl after its last renewal.
            assert takeover < TTL + 10
            stats = cache.statistics()
            assert stats.ack == "replicated"
            assert sum(s.recovered_records for s in stats.shards) == 201
            assert await cache.get_many(expected) == expected
            assert await cache.get("k7") is None
            # Each partition was acquired once before: this owner's epoch is the second.
            receipts = await cache.put_many({f"new{i}": b"n" for i in range(20)})
            assert {r.version >> EPOCH_SHIFT for r in receipts} == {2}
            assert {r.shard for r in receipts} == set(range(PARTITIONS))
            await cache.put("after", b"refusal")
        stopped = trio.current_time()

        # A graceful stop drained and released the partitions: the next owner does not wait.
        async with open_cache(config) as cache:
            assert trio.current_time() - stopped < TTL / 2
            assert sum(s.recovered_records for s in cache.statistics().shards) == 0
            assert (await cache.put("third", b"3")).version >> EPOCH_SHIFT == 3
            assert await cache.get("after") == b"refusal"

        # The number of partitions is fixed for the cluster's life.
        with pytest.raises(ConfigError, match="records 4 partitions, and this instance has 2"):
            async with open_cache(_config(nats_cluster, tmp_path, partitions=2)):
                pass

    stored = _stored(tmp_path)
    assert {k: stored[k] for k in expected} == expected
    assert stored["k7"] is None  # the acknowledged delete, stored as a tombstone
    assert stored["after"] == b"refusal" and stored["third"] == b"3"


async def test_unreachable_servers_are_a_clear_error(tmp_path: Path) -> None:
    config = Config(cluster="nats://127.0.0.1:1", ack="replicated",
                    store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal")
    with trio.fail_after(60):
        with pytest.raises(ClusterUnavailable, match="cannot reach the NATS servers"):
            async with open_cache(config):
                pass


# -- Config ----------------------------------------------------------------------------------


def test_cluster_fields_are_validated_with_clear_errors() -> None:
    urls = "nats://h1:4222, nats://h2:4222"
    config = Config(cluster=urls, ack="replicated", partitions=64, replicas=1,
                    cluster_name="orders-eu")
    assert config.shards == config.partitions == 64
    assert config.journal_ack == "fsync"
    assert Config(cluster=urls, ack="replicated", shards=8).partitions is None
    assert Config().cluster is None and Config().journal_ack == "fsync"
    with pytest.raises(ConfigError, match="ack='replicated' needs a cluster"):
        Config(ack="replicated")
    with pytest.raises(ConfigError, match=r"Config\.ack must be 'replicated'.*'fsync'"):
        Config(cluster=urls)
    with pytest.raises(ConfigError, match="'http://h1:4222' is not a NATS server URL"):
        Config(cluster="nats://h0:1,http://h1:4222", ack="replicated")
    with pytest.raises(ConfigError, match="'nats://h1' is not a NATS server URL"):
        Config(cluster="nats://h1", ack="replicated")
    with pytest.raises(ConfigError, match=r"Config\.cluster must be a comma-separated list"):
        Config(cluster=" ", ack="replicated")
    with pytest.raises(ConfigError, match=r"Config\.cluster_name must be 1 to 64 letters"):
        Config(cluster=urls, ack="replicated", cluster_name="a.b")
    with pytest.raises(ConfigError, match=r"Config.partitions \(4\) and Config.shards \(2\)"):
        Config(cluster=urls, ack="replicated", partitions=4, shards=2)
    with pytest.raises(ConfigError, match=r"Config\.partitions must be a positive integer"):
        Config(cluster=urls, ack="replicated", partitions=0)
    with pytest.raises(ConfigError, match=r"Config\.partitions=4 is for cluster mode"):
        Config(partitions=4)
    with pytest.raises(ConfigError, match=r"Config\.replicas must be at most 5"):
        Config(cluster=urls, ack="replicated", replicas=6)
    secret = Config(cluster="nats://app:s3cret@h1:4222", ack="replicated")
    assert "s3cret" not in repr(secret) and "app:***@h1:4222" in repr(secret)


def test_cluster_fields_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "writebehind.toml"
    path.write_text(
        '[writebehind]\ncluster = "nats://10.0.0.1:4222,nats://10.0.0.2:4222"\n'
        'cluster_name = "orders"\npartitions = 16\nreplicas = 3\nack = "replicated"\n'
        "lease_ttl = 10.0\n"
    )
    config = Config.from_toml(path)
    assert config.cluster == "nats://10.0.0.1:4222,nats://10.0.0.2:4222"
    assert (config.cluster_name, config.shards, config.replicas, config.lease_ttl) == (
        "orders", 16, 3, 10.0)


def test_a_single_process_cache_does_not_import_nats(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, trio
        from writebehind import Config, open_cache

        async def main():
            config = Config(store="sqlite:///{tmp_path}/s.db", journal_dir="{tmp_path}/j")
            async with open_cache(config) as cache:
                await cache.put("k", b"v")

        trio.run(main)
        print(sorted(m for m in sys.modules if m == "nats" or m.startswith("nats.")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
