"""Reports of a suite: the verdict table (rich), JSON and JUnit XML."""

from __future__ import annotations

import collections
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

from ._runs import RunRecord, is_breakdown
from ._suites import SuiteReport

ALLOWED = "LOSS (allowed by ack mode)"
#: Why each ack mode may lose acknowledged writes: the footnote under its LOSS row.
ALLOWED_WHY = {
    "memory": "ack='memory' acknowledges before its journal record is written, so a crash "
    "loses a bounded window of writes",
    "journal": "ack='journal' acknowledges once its journal record is written to the OS, "
    "before fdatasync, so a power loss (simulated: the disk keeps only synced bytes) drops "
    "the unsynced tail; a process crash loses nothing",
}
_RANK = {"PASS": 0, ALLOWED: 1, "FAIL": 2, "ERROR": 3}


def fault_group(kind: str) -> str:
    """Fault kinds grouped for the table (the JSON keeps every kind)."""
    if kind.startswith("crash:"):
        return "actor crash"
    if kind.startswith("store."):
        return "store"
    if kind.startswith("disk."):
        return "disk"
    if kind.startswith("power_loss"):
        return "power loss"  # from a chaos tick, or cut by the disk at a sync boundary
    return {
        "process_crash": "process crash",
        "power_loss": "power loss",
        "crash_loop": "crash loop",
        "time.jump": "clock jump",
        "sigkill": "SIGKILL",
        "zombie": "zombie (SIGSTOP, SIGCONT)",
        "nats": "NATS node killed",
        "store": "store outage",
        "stall": "store stall (past the routing deadline)",
    }.get(kind, kind)


def total_faults(runs: Iterable[RunRecord]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for run in runs:
        counts.update(run.faults)
    return dict(sorted(counts.items()))


def _format_faults(faults: Mapping[str, int]) -> str:
    groups: collections.Counter[str] = collections.Counter()
    for kind, count in faults.items():
        if not is_breakdown(kind, faults):
            groups[fault_group(kind)] += count
    if not groups:
        return "none"
    return "\n".join(f"{name} {count}" for name, count in groups.most_common() if count)


def worst(labels: Iterable[str]) -> str:
    return max(labels, key=lambda label: _RANK.get(label, 3), default="PASS")


def _row_key(run: RunRecord) -> tuple[int, str, str]:
    return (int(run.comparison), run.ack, run.kind)


def verdict_table(report: SuiteReport) -> Table:
    """One row per ack mode and runner: the README's table."""
    table = Table(title=f"writebehind chaos {report.suite} — seed {report.seed}")
    table.add_column("ack mode", no_wrap=True)
    table.add_column("runner", no_wrap=True)
    table.add_column("acknowledged\nwrites", justify="right", no_wrap=True)
    table.add_column("faults injected", no_wrap=True)
    table.add_column("recoveries", justify="right", no_wrap=True)
    cluster = bool(report.runs) and all(run.kind == "cluster" for run in report.runs)
    # A cluster run counts violations of its rules there, lost writes among them.
    table.add_column("violations" if cluster else "acknowledged\nwrites lost", justify="right",
                     no_wrap=True)
    table.add_column("verdict", min_width=16)
    groups: dict[tuple[int, str, str], list[RunRecord]] = {}
    for run in sorted(report.runs, key=_row_key):
        groups.setdefault(_row_key(run), []).append(run)
    for (comparison, ack, kind), runs in groups.items():
        label = worst(run.label for run in runs)
        lost = sum(run.lost for run in runs)
        lost_text = f"{lost} (allowed)" if label == ALLOWED else str(lost)
        style = {"PASS": "green", ALLOWED: "yellow"}.get(label, "bold red")
        runner = (f"simulated ×{len(runs)}" if kind == "simulation"
                  else f"3 instances ×{len(runs)}" if kind == "cluster"
                  else f"SIGKILL ×{sum(run.faults.get('sigkill', 0) for run in runs)}")
        table.add_row(
            f"{ack}\n(comparison)" if comparison else ack,
            runner,
            str(sum(run.acked for run in runs)),
            _format_faults(total_faults(runs)),
            str(sum(run.recoveries for run in runs)),
            lost_text,
            f"[{style}]{label}[/]",
        )
    return table


def coverage(runs: Iterable[RunRecord]) -> dict[str, dict[str, int]]:
    """Per fault kind, over the simulations: how often it had a chance to fire and how often
    it fired. A kind with no opportunity was never reached: the suite tested nothing there."""
    from writebehind.harness import FAULT_KINDS

    sims = [run for run in runs if run.kind == "simulation"]
    chances: collections.Counter[str] = collections.Counter()
    fired: collections.Counter[str] = collections.Counter()
    for run in sims:
        chances.update(run.opportunities)
        fired.update(run.faults)
    table = {
        kind: {"opportunities": chances[kind], "fired": fired[kind]} for kind in FAULT_KINDS
    }
    for kind in sorted(fired):  # breakdowns: power_loss.before_sync:zero_fill_tail, ...
        if kind not in table and is_breakdown(kind, fired):
            table[kind] = {"opportunities": 0, "fired": fired[kind]}
    return table


def coverage_line(report: SuiteReport) -> str | None:
    """One line for the console: how many fault kinds fired, and which never did."""
    table = coverage(report.runs)
    kinds = {k: v for k, v in table.items() if ":" not in k or k.startswith("crash:")}
    if not any(v["opportunities"] for v in kinds.values()):
        return None
    never = sorted(k for k, v in kinds.items() if not v["fired"])
    line = f"fault coverage: {len(kinds) - len(never)} of {len(kinds)} kinds fired"
    if never:
        unreached = [k for k in never if not kinds[k]["opportunities"]]
        line += "; never fired: " + ", ".join(
            f"{k} (never reached)" if k in unreached else k for k in never
        )
    return line


def summary(report: SuiteReport) -> dict[str, Any]:
    """The JSON document: overall numbers, then one entry per sub-run."""
    forbidden = sum(run.lost for run in report.runs if run.label in ("FAIL", "ERROR"))
    allowed = sum(run.lost for run in report.runs if run.label == ALLOWED)
    return {
        "suite": report.suite,
        "seed": report.seed,
        "acks": list(report.acks),
        "verdict": "FAIL" if not report.ok else "INTERRUPTED" if report.interrupted else "PASS",
        "ok": report.ok and not report.interrupted,
        "interrupted": report.interrupted,
        "acked": sum(run.acked for run in report.runs),
        "lost": forbidden,
        "lost_allowed": allowed,
        "faults": total_faults(report.runs),
        "recoveries": sum(run.recoveries for run in report.runs),
        "seconds": round(report.seconds, 3),
        "budget": report.budget,
        "skipped": list(report.skipped),
        "coverage": coverage(report.runs),
        "runs": [run.to_json() for run in report.runs],
    }


def write_json(report: SuiteReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(summary(report), indent=2) + "\n")


def write_junit(report: SuiteReport, path: str | Path) -> None:
    """JUnit XML: one testcase per sub-run; a violation is a failure, a worker error an error."""
    runs = report.runs
    suite = ET.Element("testsuite", {
        "name": f"writebehind chaos {report.suite}",
        "tests": str(len(runs)),
        "failures": str(sum(run.label == "FAIL" for run in runs)),
        "errors": str(sum(run.label == "ERROR" for run in runs)),
        "time": f"{report.seconds:.3f}",
    })
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "seed", "value": str(report.seed)})
    if report.budget is not None:
        ET.SubElement(props, "property", {"name": "budget", "value": f"{report.budget:g}"})
    if report.interrupted:
        ET.SubElement(props, "property", {"name": "interrupted", "value": "true"})
    for run in runs:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"writebehind.chaos.{report.suite}.{run.kind}.{run.ack}",
            "name": f"{run.name} seed={run.seed}",
            "time": f"{run.seconds:.3f}",
        })
        if not run.ok:
            tag = "error" if run.label == "ERROR" else "failure"
            node = ET.SubElement(case, tag, {
                "message": f"{run.label}: {run.lost} acknowledged writes lost",
                "type": run.label,
            })
            node.text = f"{run.detail}\nreplay: {run.replay}"
        out = ET.SubElement(case, "system-out")
        out.text = (f"verdict={run.label} acked={run.acked} lost={run.lost} "
                    f"faults={dict(run.faults)}\nreplay: {run.replay}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
