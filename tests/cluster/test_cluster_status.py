"""``writebehind cluster status`` against the fixture cluster, with and without fsync."""

from __future__ import annotations

import json

import pytest
import trio

from writebehind._cli import main
from writebehind._cluster._bridge import connect
from writebehind._cluster._journal import open_stream
from writebehind._cluster._lease import open_bucket
from writebehind._cluster._status import lease_bucket

from .nodes import NatsCluster


def status(cluster: NatsCluster, capsys: pytest.CaptureFixture[str], *extra: str
           ) -> tuple[int, str]:
    monitors = ",".join(n.monitor_url for n in cluster.nodes)
    code = main(["cluster", "status", "--cluster", cluster.servers, "--monitor", monitors,
                 "--name", "shop", *extra])
    return code, capsys.readouterr().out


def create_assets(cluster: NatsCluster) -> None:
    async def create() -> None:
        with trio.fail_after(30):
            async with connect(cluster.servers) as conn:
                await open_stream(conn, "shop", replicas=3)
                await open_bucket(conn, lease_bucket("shop"), replicas=3)

    trio.run(create)


@pytest.mark.parametrize("sync_always", [True])
def test_a_healthy_cluster_with_fsync_always(nats_cluster: NatsCluster,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out = status(nats_cluster, capsys)
    assert code == 0, out
    assert out.count(" up ") == 3 and "fsync always" in out and "2.15" in out
    assert "not created yet" in out  # neither the stream nor the bucket exists
    assert "WARNING" not in out
    create_assets(nats_cluster)
    code, out = status(nats_cluster, capsys, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["warnings"] == []
    assert report["meta_leader"] in {n.name for n in nats_cluster.nodes}
    assert report["stream"]["name"] == "WB_shop" and report["stream"]["replicas"] == 3
    assert report["bucket"]["name"] == "KV_wb-shop-leases"


@pytest.mark.parametrize("sync_always", [False])
def test_lazy_fsync_is_warned_about(nats_cluster: NatsCluster,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out = status(nats_cluster, capsys)
    assert code == 0, out  # a warning, not a failure
    assert out.count("fsync LAZY") == 3
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 3, out
    assert all("every 120 s" in w and "sync_interval: always" in w for w in warnings)


def test_a_dead_node_and_an_unreadable_monitor(nats_cluster: NatsCluster,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    nats_cluster.kill("n3")
    code, out = status(nats_cluster, capsys)
    assert code == 1, out
    assert f"{nats_cluster.nodes[2].url}  DOWN" in out
    assert "cannot tell whether" in out  # its monitoring endpoint died with it
    assert out.count(" up ") == 2
