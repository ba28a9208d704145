"""What ``bench --cluster`` shows: the cells side by side, the targets with PASS/MISS, and what
the CPU per acknowledged write implies for N machines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from ._cluster import WRITERS, ClusterCell, ClusterRun
from ._report import Target, _num, _ratio, _shown


def _paired_raw(run: ClusterRun, cell: ClusterCell) -> ClusterCell | None:
    """The raw loop a cache cell is compared with: same replicas and writers (R3 for the
    local fsync cell: the cluster's production setting)."""
    return run.cell("raw", cell.replicas or 3, cell.writers)


def targets(run: ClusterRun) -> list[Target]:
    """Issue 14's targets, each from figures of this one run."""
    found = []
    for replicas in (1, 3):
        repl, raw = run.cell("replicated", replicas), run.cell("raw", replicas)
        found.append(Target(
            f"ack=replicated R{replicas} {WRITERS}w acks/s vs the raw publish-ack loop "
            f"(R{replicas}, {WRITERS}w)",
            _ratio(None if repl is None else repl.acks_s, None if raw is None else raw.acks_s),
            0.5, True))
    routed, local = run.cell("routed", 3, 1), run.cell("local", 3, 1)
    found.append(Target(
        "routed put p50 latency vs a local put's (1 writer)",
        _ratio(None if routed is None else routed.p50_ms,
               None if local is None else local.p50_ms),
        2, False))
    return found


def scaling(run: ClusterRun) -> list[str]:
    """What the per-write CPU cost implies for N machines, and what limits scaling."""
    repl = run.cell("replicated", 3)
    if repl is None or not repl.acks:
        return []
    client, servers, leader = (repl.cpu_us_per_ack, repl.server_cpu_us_per_ack,
                               repl.leader_cpu_us_per_ack)
    follower = (servers - leader) / 2
    lines = [
        f"ack=replicated R3, {WRITERS} writers: {_num(client)} µs of this process's CPU and "
        f"{_num(servers)} µs of the NATS servers' (the busiest, the stream leader, "
        f"{_num(leader)} µs; each follower about {_num(follower)} µs) per acknowledged write.",
        f"One instance: its trio thread and the bridge's loop thread share one interpreter "
        f"(the GIL), so an instance tops out near 1e6 / {_num(client)} µs = "
        f"{_num(1e6 / client if client else 0.0)} acks/s however many cores it has; it "
        f"measured {_num(repl.acks_s)} here with the servers on the same 2 cores.",
        f"N machines, one instance and one NATS server each: a write costs "
        f"{_num(client + servers)} µs of CPU in all (its instance's and its three replicas'), "
        f"so if the work spread evenly N machines of k cores would take about N x k x "
        f"{_num(1e6 / (client + servers) if client + servers else 0.0)} acks/s (each "
        f"instance owns 1/N of the partitions; a put on a non-owner adds a request/reply "
        f"hop, for (N-1)/N of the keys a client does not route itself).",
        f"What limits it today: the cluster's partitions are all subjects of one stream "
        f"(WB_<cluster>), one Raft group with one leader that every publish of every member "
        f"goes through: at this run's group-commit sizes {_num(leader)} µs per write on "
        f"that one server caps the cluster near {_num(1e6 / leader if leader else 0.0)} "
        f"acks/s per core the leader can use, whatever N is. Past that, partitions must "
        f"spread over several streams (their leaders on different servers). Then each "
        f"partition publishes one group commit at a time (the expected-sequence check needs "
        f"the previous ack), so a partition's rate is its batch size over the publish round "
        f"trip: more partitions, more commits in flight. Lease renewals add "
        f"{run.partitions} KV writes per renew interval per member: "
        f"negligible.",
    ]
    return lines


def tables(run: ClusterRun) -> list[Table]:
    cells = Table(title=f"Cluster mode side by side ({run.scale} run, {run.cell_seconds:g} s per "
                        f"cell, 3 nats-server {run.nats_version} on loopback with "
                        f"sync_interval: always, {run.partitions} partitions, seed {run.seed})")
    cells.caption = (
        "xRaw: acks/s over the raw publish-ack loop with the same replicas and writers, "
        "measured right before (R3 for the local fsync cell); acks/msg: acknowledged writes "
        "per message published to the stream (a group commit's size); latencies per write, call to "
        "return; CPU per acknowledged write: this process (trio, the bridge's loop thread, "
        "nats-py) and the three NATS servers summed (max: the busiest one); the local and "
        "routed put cells run two instances of one cluster in this process (both counted), "
        "8 partitions, alternating rounds, puts on the first instance")
    cells.add_column("cell")
    for name in ("writers", "acks/s", "xRaw", "acks/msg", "p50 ms", "p99 ms", "CPU µs/ack",
                 "NATS CPU µs/ack", "(max)"):
        cells.add_column(name, justify="right")
    for c in run.cells:
        raw = _paired_raw(run, c) if c.kind != "raw" else None
        cells.add_row(
            c.name, str(c.writers), _num(c.acks_s),
            _num(_ratio(c.acks_s, None if raw is None else raw.acks_s)),
            _num(c.acks_per_message), _num(c.p50_ms), _num(c.p99_ms), _num(c.cpu_us_per_ack),
            _num(c.server_cpu_us_per_ack), _num(c.leader_cpu_us_per_ack),
        )

    goals = Table(title="Targets (ratios from this one run)")
    goals.add_column("target")
    goals.add_column("measured", justify="right")
    goals.add_column("bound", justify="right")
    goals.add_column("verdict")
    for t in targets(run):
        colour = "green" if t.ok else ("yellow" if t.measured is None else "red")
        measured = "-" if t.measured is None else f"{_shown(t)}x"
        goals.add_row(t.name, measured, t.describe_bound(), f"[{colour}]{t.verdict}[/]")
    return [cells, goals]


def print_report(run: ClusterRun, console: Console) -> None:
    for table in tables(run):
        console.print(table)
    console.print(f"the three NATS servers idle (no client writing) used "
                  f"{run.idle_server_cpu * 1e3:.1f} ms of CPU per second: part of every "
                  "cell's NATS figure, a larger part per write of the slower cells")
    for kind, reason in run.skipped.items():
        console.print(f"not measured ({kind}): {reason}")
    for line in scaling(run):
        console.print(line)
    console.print(f"{run.scale} run took {run.wall_seconds:.1f} s")


def to_json(run: ClusterRun) -> dict[str, Any]:
    return {
        "scale": run.scale, "seed": run.seed, "cell_seconds": run.cell_seconds,
        "nats_version": run.nats_version, "partitions": run.partitions,
        "idle_server_cpu": run.idle_server_cpu,
        "wall_seconds": run.wall_seconds,
        "cells": [
            {**attrs.asdict(c), "name": c.name, "acks_s": c.acks_s,
             "acks_per_message": c.acks_per_message,
             "cpu_us_per_ack": c.cpu_us_per_ack,
             "server_cpu_us_per_ack": c.server_cpu_us_per_ack,
             "leader_cpu_us_per_ack": c.leader_cpu_us_per_ack}
            for c in run.cells
        ],
        "skipped": run.skipped,
        "targets": [
            {"name": t.name, "measured": t.measured, "bound": t.bound,
             "at_least": t.at_least, "verdict": t.verdict}
            for t in targets(run)
        ],
        "scaling": scaling(run),
    }


def write_json(run: ClusterRun, path: Path) -> None:
    path.write_text(json.dumps(to_json(run), indent=2) + "\n")
