"""A suite's time budget is true: it bounds the whole run, SIGKILL runs included, and the
command line says what it is.

The sub-runs here are stand-ins that take a fixed short time (real ones take seconds to
minutes): the rules under test are the suite's scheduling, not the runs.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from writebehind._cli import main
from writebehind.chaos import _suites
from writebehind.chaos._runs import RunOptions, RunRecord, shrink_plan
from writebehind.chaos._suites import SUITES, Suite, run_suite

KILL_SECONDS = 0.4
SIM_SECONDS = 0.05


def _record(kind: Any, name: str, seed: int, ack: str, seconds: float) -> RunRecord:
    return RunRecord(kind=kind, name=name, seed=seed, ack=ack, acked=1, lost=0, faults={},
                     recoveries=0, label="PASS", ok=True, replay="writebehind chaos replay",
                     seconds=seconds)


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the suite's sub-runs with short sleeps; returns the kill runs' names, in order."""
    kills: list[str] = []

    def run_kill(name: str, seed: int, ack: str, rounds: int, options: Any,
                 **_: Any) -> RunRecord:
        started = time.monotonic()
        time.sleep(KILL_SECONDS)
        kills.append(name)
        return _record("sigkill", name, seed, ack, time.monotonic() - started)

    def run_simulation(name: str, seed: int, ack: str, options: Any, **_: Any) -> RunRecord:
        started = time.monotonic()
        time.sleep(SIM_SECONDS)
        return _record("simulation", name, seed, ack, time.monotonic() - started)

    monkeypatch.setattr(_suites, "run_kill", run_kill)
    monkeypatch.setattr(_suites, "run_simulation", run_simulation)
    return kills


SUITE = Suite(name="budgeted", duration=2.0, simulations=1000, operations=10, intensity=1.0,
              kill_runs=10, kill_rounds=1, acks=("fsync", "journal"), memory_comparison=False)


def test_the_budget_bounds_the_whole_run_sigkill_runs_included(stand_ins: list[str]) -> None:
    # 20 kill runs of 0.4 s would take 8 s: far over a 2 s budget.
    report = run_suite(SUITE, seed=1, options=RunOptions(operations=10))
    assert report.budget == 2.0
    assert report.seconds < SUITE.duration + KILL_SECONDS + 0.5
    assert report.skipped, "every kill run started, whatever the budget"
    assert sorted([*stand_ins, *report.skipped]) == sorted(
        f"kill-{ack}-{i:02d}" for ack in SUITE.acks for i in range(SUITE.kill_runs))
    # One run per mode however small the budget; then modes in turn, so a cut is even.
    assert stand_ins[:2] == ["kill-fsync-00", "kill-journal-00"]
    per_mode = collections.Counter(name.split("-")[1] for name in stand_ins)
    assert max(per_mode.values()) - min(per_mode.values()) <= 1
    assert any(run.kind == "simulation" for run in report.runs)


def test_a_tiny_budget_still_runs_one_of_each_per_ack_mode(stand_ins: list[str]) -> None:
    report = run_suite(SUITE, seed=1, options=RunOptions(operations=10), duration=0.01)
    assert stand_ins == ["kill-fsync-00", "kill-journal-00"]
    assert {(r.kind, r.ack) for r in report.runs} == {
        ("simulation", "fsync"), ("simulation", "journal"),
        ("sigkill", "fsync"), ("sigkill", "journal")}


def test_the_run_shows_its_budget_and_what_did_not_fit(
    stand_ins: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(SUITES, "full", SUITE)
    out_json = tmp_path / "chaos.json"
    code = main(["chaos", "run", "--suite", "full", "--seed", "3", "--json", str(out_json)])
    output = capsys.readouterr().out.replace("\n", " ")
    assert code == 0, output
    assert "budget: 2 s for the whole run (--duration)" in output
    assert "(budget 2s)" in output
    assert "SIGKILL runs did not fit the budget and did not start: kill-" in output
    data = json.loads(out_json.read_text())
    assert data["budget"] == 2.0 and data["skipped"]


def test_the_help_states_each_suite_budget_for_the_whole_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["chaos", "run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"full: a {SUITES['full'].duration / 60:g} min budget" in text
    assert f"smoke (default): a {SUITES['smoke'].duration:g} s budget" in text
    assert "The budget bounds the whole run, SIGKILL runs included" in text
    assert "about ten minutes" not in text


def test_shrinking_tries_no_smaller_plan_after_the_deadline() -> None:
    from writebehind.harness import FaultPlan

    tried: list[Any] = []
    plan = FaultPlan.buggify(5)
    smaller, _ = shrink_plan(plan, "failing", tried.append, deadline=time.monotonic() - 1)
    assert smaller == plan and tried == []


def test_ctrl_c_while_a_sigkill_run_is_going_writes_the_partial_reports_and_starts_no_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    # The simulations are done and the main thread waits for the SIGKILL thread when Ctrl-C
    # comes: the runs that finished are written, as JSON and as JUnit, and the SIGKILL thread
    # starts no further run (here: the memory comparison) behind the user's back.
    started: list[str] = []

    def run_simulation(name: str, seed: int, ack: str, options: Any, **_: Any) -> RunRecord:
        return _record("simulation", name, seed, ack, 0.0)

    def run_kill(name: str, seed: int, ack: str, rounds: int, options: Any,
                 **_: Any) -> RunRecord:
        started.append(name)
        if len(started) == 1:
            time.sleep(0.3)  # the main thread is in join() by now
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
        return _record("sigkill", name, seed, ack, 0.6)

    monkeypatch.setattr(_suites, "run_simulation", run_simulation)
    monkeypatch.setattr(_suites, "run_kill", run_kill)
    out_json, out_xml = tmp_path / "chaos.json", tmp_path / "chaos.xml"
    # Python leaves SIGINT ignored when it started ignored (pytest run in the background
    # of a non-interactive shell, or under nohup): then Ctrl-C, as the user asked, does
    # nothing. This test is about Ctrl-C, so it makes it act as in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    try:
        code = main(["chaos", "run", "--seed", "4", "--duration", "0.01", "--kills", "1",
                     "--json", str(out_json), "--junit", str(out_xml)])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped without writing the partial reports")
    time.sleep(1.0)  # time for the SIGKILL thread to start another run, if it would
    assert code == 130, capsys.readouterr().out
    assert started == ["kill-fsync-00"]
    data = json.loads(out_json.read_text())
    assert data["interrupted"] is True and data["verdict"] == "INTERRUPTED"
    assert data["runs"] and {run["kind"] for run in data["runs"]} == {"simulation"}
    assert out_xml.read_text().count("<testcase ") == len(data["runs"])
