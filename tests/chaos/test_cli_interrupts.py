"""``writebehind chaos`` as a user meets it: Ctrl-C, a mistyped --variant, the footnotes."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from writebehind._cli import main
from writebehind.chaos import _suites
from writebehind.chaos._cli import _print_outcome
from writebehind.chaos._report import ALLOWED
from writebehind.chaos._runs import RunRecord
from writebehind.chaos._suites import SuiteReport


def test_an_interrupted_run_writes_the_partial_json_and_junit_it_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _suites.run_simulation
    calls = 0

    def interrupted_on_the_third(*args: Any, **kwargs: Any) -> RunRecord:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real(*args, **kwargs)

    monkeypatch.setattr(_suites, "run_simulation", interrupted_on_the_third)
    out_json, out_xml = tmp_path / "chaos.json", tmp_path / "chaos.xml"
    try:
        code = main(["chaos", "run", "--seed", "7", "--duration", "60", "--kills", "0",
                     "--json", str(out_json), "--junit", str(out_xml)])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped without writing the partial reports")
    output = capsys.readouterr().out
    assert code == 130, output
    assert f"interrupted after 2 finished sub-runs; their results are in {out_json} and " \
        f"{out_xml}" in output.replace("\n", "")
    data = json.loads(out_json.read_text())
    assert data["interrupted"] is True and data["verdict"] == "INTERRUPTED"
    assert data["ok"] is False and len(data["runs"]) == 2
    suite = ET.parse(out_xml).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["interrupted"] == "true"


@pytest.mark.parametrize("command", ["run", "replay"])
def test_an_unknown_variant_exits_2_listing_the_valid_names(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--duration", "1", "--kills", "0"] if command == "run" else ["--seed", "1"]
    code = main(["chaos", command, "--variant", "no_such_bug", *extra])
    captured = capsys.readouterr()
    assert code == 2
    assert "--variant 'no_such_bug' is not a broken variant; valid names:" in captured.out
    assert "skip_replay" in captured.out
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("command", ["run", "replay"])
def test_an_unknown_break_exits_2_listing_the_valid_names(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--duration", "1", "--kills", "1"] if command == "run" else ["--kill", "--seed", "1"]
    code = main(["chaos", command, "--break", "no-such-break", *extra])
    captured = capsys.readouterr()
    assert code == 2
    assert "--break 'no-such-break' is not a broken SIGKILL worker; valid names: " \
        "skip-replay, drop-writes" in captured.out.replace("\n", "")
    assert "Traceback" not in captured.out + captured.err


def _allowed(ack: str) -> RunRecord:
    return RunRecord(kind="simulation", name=f"sim-{ack}-0000", seed=1, ack=ack, acked=10,
                     lost=2, faults={"power_loss": 1}, recoveries=1, label=ALLOWED, ok=True,
                     replay="writebehind chaos replay --seed 1")


def _outcome(*runs: RunRecord) -> str:
    console = Console(file=io.StringIO(), width=200)
    report = SuiteReport(suite="smoke", seed=1, acks=tuple(r.ack for r in runs), runs=runs,
                         seconds=1.0)
    _print_outcome(console, report)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def test_the_footnote_under_a_journal_loss_row_explains_the_journal_mode() -> None:
    text = _outcome(_allowed("journal"))
    assert "ack='journal' acknowledges once its journal record is written to the OS" in text
    assert "power loss" in text
    assert "ack='memory'" not in text
    both = _outcome(_allowed("memory"), _allowed("journal"))
    assert "ack='memory' acknowledges before its journal record is written" in both
    assert "ack='journal' acknowledges once" in both
