"""``writebehind chaos run|replay`` through the real entry point, with tiny budgets.

Every run here is short: a one-second simulation budget (at least one simulation runs) and
zero or one SIGKILL round. Broken runtimes come from the harness's named variants
(simulations) and the worker's ``--break`` switch (real kills).
"""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from writebehind._cli import main
from writebehind.chaos import SUITES, derive_seed
from writebehind.chaos._cli import config_settings
from writebehind.chaos._runs import RunOptions, cluster_replay, run_simulation


def replay_args(output: str) -> list[str]:
    """The replay command the run printed, as argv for ``main`` (without ``writebehind``)."""
    lines = [line for line in output.splitlines() if line.startswith("writebehind chaos replay")]
    assert len(lines) == 1, output
    args = shlex.split(lines[0])
    assert args[:3] == ["writebehind", "chaos", "replay"]
    return args[1:]


def test_a_passing_run_exits_0_and_writes_well_formed_json_and_junit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_xml = tmp_path / "chaos.json", tmp_path / "chaos.xml"
    code = main(["chaos", "run", "--seed", "7", "--duration", "1", "--kills", "1",
                 "--json", str(out_json), "--junit", str(out_xml)])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "--seed 7" in output and "PASS" in output
    data = json.loads(out_json.read_text())
    assert data["seed"] == 7 and data["suite"] == "smoke"
    assert data["verdict"] == "PASS" and data["ok"] is True
    assert data["lost"] == 0
    assert data["acked"] == sum(run["acked"] for run in data["runs"]) > 0
    assert data["faults"]["sigkill"] == 2  # one round at fsync, one for the memory comparison
    kinds = {(run["kind"], run["ack"], run["comparison"]) for run in data["runs"]}
    assert {("simulation", "fsync", False), ("sigkill", "fsync", False),
            ("sigkill", "memory", True)} <= kinds
    first_sim = next(run for run in data["runs"] if run["kind"] == "simulation")
    assert first_sim["seed"] == derive_seed(7, "sim", "fsync", 0)
    for run in data["runs"]:
        assert {"acked", "lost", "faults", "seed", "verdict", "replay"} <= set(run)
        assert run["replay"].startswith("writebehind chaos replay ")
    suite = ET.parse(out_xml).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(data["runs"]) == int(suite.get("tests", "-1"))
    assert suite.get("failures") == "0" and suite.get("errors") == "0"


def test_a_sub_run_is_reproducible_from_its_seed() -> None:
    options = RunOptions(operations=600)
    first = run_simulation("a", 1234, "fsync", options)
    second = run_simulation("b", 1234, "fsync", options)
    assert first.plan == second.plan
    assert (first.acked, first.faults, first.recoveries, first.label) == (
        second.acked, second.faults, second.recoveries, second.label)
    assert sum(first.faults.values()) > 0


def test_a_broken_runtime_fails_the_run_and_the_printed_replay_reproduces_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["chaos", "run", "--seed", "1", "--duration", "0.1", "--kills", "0",
                 "--variant", "skip_replay"])
    output = capsys.readouterr().out
    assert code == 1, output
    assert "FAIL" in output
    args = replay_args(output)
    assert "--plan" in args and "--variant" in args
    plan = args[args.index("--plan") + 1]
    assert plan.startswith("FaultPlan(seed=")
    assert main(args) == 1  # the replay fails the same way
    replayed = capsys.readouterr().out
    assert "FAIL" in replayed
    # The shrunk plan keeps only kinds needed for the failure: the same runtime, fixed, passes.
    fixed = [a for i, a in enumerate(args) if a != "--variant" and args[i - 1] != "--variant"]
    assert main(fixed) == 0, capsys.readouterr().out


def test_a_real_kill_run_catches_a_store_that_drops_writes_and_replays_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["chaos", "run", "--seed", "2", "--duration", "0.1", "--kills", "1",
                 "--break", "drop-writes"])
    output = capsys.readouterr().out
    assert code == 1, output
    args = replay_args(output)
    assert "--kill" in args and args[args.index("--break") + 1] == "drop-writes"
    assert main(args) == 1
    assert "FAIL" in capsys.readouterr().out


def test_config_file_settings_apply_except_those_a_chaos_run_owns(tmp_path: Path) -> None:
    path = tmp_path / "writebehind.toml"
    path.write_text('store = "sqlite:///prod.db"\nack = "journal"\nbatch_size = 64\n'
                    'journal_dir = "j"\n')
    settings, ack = config_settings(str(path))
    assert settings == {"batch_size": 64}
    assert ack == "journal"


def test_bad_flags_exit_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chaos", "run", "--store", "mysql://x", "--duration", "0"]) == 2
    assert "Config.store must be a URL" in capsys.readouterr().out
    assert main(["chaos", "run", "--inspect", "0.0.0.0:9000", "--duration", "0"]) == 2
    assert "inspector" in capsys.readouterr().out
    assert main(["chaos", "replay", "--ack", "fsync"]) == 2
    assert "needs --plan" in capsys.readouterr().out


def test_the_cluster_suite_is_registered_and_refuses_another_ack_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = SUITES["cluster"]
    assert cluster.cluster and cluster.acks == ("replicated",)
    assert main(["chaos", "run", "--suite", "cluster", "--ack", "fsync", "--seed", "1"]) == 2
    assert "the cluster suite runs ack='replicated', not 'fsync'" in capsys.readouterr().out
    assert main(["chaos", "run", "--suite", "cluster", "--faults", "skew,meteor"]) == 2
    assert "--faults 'skew,meteor': valid kinds are sigkill, zombie" in capsys.readouterr().out
    assert main(["chaos", "run", "--faults", "skew", "--seed", "1"]) == 2
    assert "the smoke suite draws its own" in capsys.readouterr().out
    assert cluster_replay(3, 40, None, ("skew", "zombie")) == (
        "writebehind chaos run --suite cluster --seed 3 --duration 40 --faults skew,zombie")


def test_the_smoke_suite_is_the_default_and_full_is_bigger() -> None:
    smoke, full = SUITES["smoke"], SUITES["full"]
    assert smoke.acks == ("fsync",) and smoke.memory_comparison
    assert full.duration > smoke.duration and full.kill_rounds > smoke.kill_rounds
    assert set(full.acks) == {"memory", "journal", "fsync", "store"}
