"""``writebehind chaos run|replay``: seeded chaos suites, and replaying one failing sub-run."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Mapping
from typing import Any

import attrs
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from writebehind import ACK_MODES, Config, ConfigError
from writebehind._cli import is_interrupt
from writebehind.harness._audit import check_sim_store
from writebehind.harness._simulation import quiet_runtime_logs

from ._report import (
    ALLOWED,
    ALLOWED_WHY,
    coverage_line,
    summary,
    verdict_table,
    write_json,
    write_junit,
)
from ._runs import RunOptions, RunRecord, fault_count, run_kill, run_simulation
from ._suites import SUITES, SuiteReport, run_suite

#: Settings a ``--config`` file cannot bring into a chaos run: the runs own their store and
#: journal directory (temporary, or ``--store``), their ack mode (``--ack``) and their seeds.
NOT_FROM_CONFIG = frozenset({"store", "journal_dir", "ack", "seed", "requires", "on_alert"})

RUN_HELP = """\
Run a seeded chaos suite and print a verdict table. The default is the smoke suite (under a
minute) at ack=fsync on the embedded default (SQLite and local journals in a temporary
directory), plus a short ack=memory row showing the loss that mode allows. Exits 1 on any
violation of the durability contract and prints the command that replays it."""


def _minutes(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"


def suite_help() -> str:
    """``--suite``'s help, from the suites' own budgets so the two never disagree."""
    return "; ".join(
        f"{name}: {_minutes(suite.duration)} of faults on three NATS nodes and three "
        "instances (about 20 s more to set up, drain and check)" if suite.cluster else
        f"{name}{' (default)' if name == 'smoke' else ''}: a {_minutes(suite.duration)} budget"
        for name, suite in sorted(SUITES.items(), key=lambda item: item[1].duration)
    ) + ". The budget bounds the whole run, SIGKILL runs included"


def register(subparsers: Any) -> None:
    """Add the ``chaos`` command to the ``writebehind`` argument parser."""
    parser = subparsers.add_parser("chaos", help="seeded chaos suites that check the contract")
    sub = parser.add_subparsers(dest="chaos_command", required=True)

    run = sub.add_parser("run", help="run a chaos suite", description=RUN_HELP)
    run.add_argument("--suite", choices=sorted(SUITES), default="smoke", help=suite_help())
    run.add_argument("--seed", type=int, help="root seed (default: random, printed)")
    run.add_argument("--duration", type=float, metavar="S",
                     help="time budget for the whole run in seconds, SIGKILL runs included: "
                     "sub-runs start only while they fit (default: the suite's)")
    _common(run)
    run.add_argument("--kills", type=int, metavar="N",
                     help="SIGKILL rounds per kill run; 0 runs none (default: the suite's)")
    run.add_argument("--json", metavar="PATH", help="write the results as JSON")
    run.add_argument("--junit", metavar="PATH", help="write JUnit XML, one testcase per sub-run")
    run.add_argument("--inspect", metavar="HOST:PORT",
                     help="serve the live inspector there from each SIGKILL worker while it "
                     "runs (simulations run on a mock clock and are not shown)")
    run.add_argument("--faults", metavar="KINDS",
                     help="the cluster suite only: the fault kinds to draw, comma-separated "
                     "(default: all: sigkill,zombie,nats,store,stall,skew,pause)")
    run.add_argument("--fail-fast", action="store_true",
                     help="stop at the first failing sub-run (no new simulation or SIGKILL "
                     "run starts; one already going finishes) and print its plan unshrunk")
    run.set_defaults(func=_run)

    replay = sub.add_parser(
        "replay", help="replay one sub-run (the command a failed run prints)",
        description="Replay one sub-run. Simulations replay exactly; SIGKILL runs repeat the "
        "seeded schedule and workload (a real process's interleaving can differ). Exits 1 if "
        "the contract is violated, 0 if not.",
    )
    replay.add_argument("--plan", help="the fault plan as printed, e.g. \"FaultPlan(7, ...)\"")
    replay.add_argument("--seed", type=int, help="without --plan: FaultPlan.buggify(seed)")
    replay.add_argument("--kill", action="store_true", help="replay a SIGKILL run")
    replay.add_argument("--rounds", type=int, default=4, help="SIGKILL rounds (with --kill)")
    replay.add_argument("--operations", type=int, default=2000, help="simulated operations")
    replay.add_argument("--shards", type=int, default=2, help="simulated shards")
    replay.add_argument("--intensity", type=float, default=1.0, help="with --seed, no --plan")
    replay.add_argument("--sim-store", default="memory", metavar="STORE",
                        help="the store a simulation runs over: memory (default), sqlite, or "
                        "a postgresql:// URL (as the failing run printed it)")
    _common(replay)
    replay.add_argument("--json", metavar="PATH", help="write the result as JSON")
    replay.set_defaults(func=_replay)

    from . import _mutants

    _mutants.register(sub)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ack", choices=ACK_MODES, help="ack mode (default: fsync)")
    parser.add_argument("--store", metavar="URL",
                        help="store for SIGKILL runs (default: SQLite in a temporary directory); "
                        "use a scratch database: the runs write test keys into it")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML settings for every run (Config.from_toml); its store and "
                        "journal_dir are not used, its ack is the default --ack")
    parser.add_argument("--variant", help="testing the harness: simulate a deliberately broken "
                        "runtime (a name from writebehind.harness.BROKEN_VARIANTS)")
    parser.add_argument("--break", dest="kill_break", metavar="NAME",
                        help="testing the harness: a deliberately broken SIGKILL worker "
                        "(skip-replay, drop-writes)")


def config_settings(path: str) -> tuple[dict[str, Any], str]:
    """The settings of a TOML file that differ from the defaults, and the file's ack mode."""
    config = Config.from_toml(path)
    default = Config()
    settings = {
        field.name: getattr(config, field.name)
        for field in attrs.fields(Config)
        if field.name not in NOT_FROM_CONFIG
        and getattr(config, field.name) != getattr(default, field.name)
    }
    return settings, config.ack


def _options(args: argparse.Namespace, **extra: Any) -> tuple[RunOptions, str | None]:
    inspect = getattr(args, "inspect", None)
    if inspect:
        Config(inspector=inspect)  # refuses, with the reason, what a cache would refuse
    settings: Mapping[str, Any] = {}
    ack = args.ack
    if args.config:
        settings, file_ack = config_settings(args.config)
        ack = ack or file_ack
    if args.store:
        Config(store=args.store)  # the same validation, and message, as a cache gets
    if args.variant is not None:
        from writebehind.harness import BROKEN_VARIANTS

        if args.variant not in BROKEN_VARIANTS:
            raise ConfigError(
                f"--variant {args.variant!r} is not a broken variant; valid names: "
                f"{', '.join(sorted(BROKEN_VARIANTS))}"
            )
    if args.kill_break is not None:
        from writebehind.harness._worker import BREAKS

        if args.kill_break not in BREAKS:
            raise ConfigError(
                f"--break {args.kill_break!r} is not a broken SIGKILL worker; valid names: "
                f"{', '.join(BREAKS)}"
            )
    options = RunOptions(config=settings, config_file=args.config, store=args.store,
                         variant=args.variant, kill_break=args.kill_break, inspect=inspect,
                         **extra)
    return options, ack


class _RichProgress:
    """:class:`~writebehind.chaos._suites.SuiteProgress` drawn with a rich progress bar."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def add(self, label: str, total: int) -> int:
        return int(self.progress.add_task(label, total=total, note=""))

    def update(self, task: int, *, completed: int, total: int | None = None,
               note: str = "") -> None:
        self.progress.update(TaskID(task), completed=completed, total=total, note=note)


def _run(args: argparse.Namespace) -> int:
    with quiet_runtime_logs():
        return _run_suite(args)


def _console() -> Console:
    console = Console()
    if not console.is_terminal:
        console.width = 140  # a CI log or a file has no width to fit: don't squeeze the table
    return console


def _run_suite(args: argparse.Namespace) -> int:
    console = _console()
    suite = SUITES[args.suite]
    try:
        options, ack = _options(args, operations=suite.operations)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    console.print(f"writebehind chaos run --suite {suite.name} --seed {seed}"
                  f"  [dim](the seed reproduces this run)[/]")
    budget = suite.duration if args.duration is None else args.duration
    if args.faults is not None and not suite.cluster:
        console.print("[red]error:[/] --faults picks the cluster suite's fault kinds; "
                      f"the {suite.name} suite draws its own")
        return 2
    if suite.cluster:
        if ack not in (None, "replicated"):
            console.print(f"[red]error:[/] the cluster suite runs ack='replicated', not {ack!r}")
            return 2
        if args.faults is not None:
            from writebehind.harness._cluster_run import parse_faults

            try:
                options = attrs.evolve(options, cluster_faults=parse_faults(args.faults))
            except ValueError as exc:
                console.print(f"[red]error:[/] {exc}")
                return 2
        console.print(f"faults for {_minutes(budget)} (--duration) on three NATS nodes and "
                      "three writebehind instances; setting up, draining and checking take "
                      "about 20 s more")
    else:
        console.print(f"budget: {_minutes(budget)} for the whole run (--duration); a sub-run "
                      "starts only while it fits")
    if args.inspect:
        console.print(f"inspector: http://{args.inspect}/ shows each SIGKILL worker's cache "
                      "while it runs (it goes away at each kill and comes back with the restart)")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"),
               TimeElapsedColumn())
    finished: list[RunRecord] = []  # what an interrupted run still reports
    started = time.monotonic()
    with Progress(*columns, console=console) as bar:
        def announce(run: RunRecord) -> None:
            finished.append(run)
            if not run.ok:
                bar.console.print(f"[bold red]{run.label}[/] {run.name} seed={run.seed}: "
                                  f"{run.detail}")

        try:
            if suite.cluster:
                options = attrs.evolve(options, cluster_log=bar.console.print)
            report = run_suite(
                suite, seed=seed, options=options, acks=(ack,) if ack else None,
                duration=args.duration, kill_rounds=args.kills, progress=_RichProgress(bar),
                on_run=announce, fail_fast=args.fail_fast,
            )
        except ConfigError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 2
        except BaseException as exc:
            # Ctrl-C (or SIGTERM) inside a simulation's trio.run arrives wrapped in a group.
            if not is_interrupt(exc):
                raise
            report = SuiteReport(
                suite=suite.name, seed=seed, acks=(ack,) if ack else suite.acks,
                runs=tuple(finished), seconds=time.monotonic() - started, interrupted=True,
                budget=budget,
            )
    _print_outcome(console, report)
    if args.json:
        write_json(report, args.json)
    if args.junit:
        write_junit(report, args.junit)
    if report.interrupted:
        written = " and ".join(p for p in (args.json, args.junit) if p)
        console.print(f"[yellow]interrupted[/] after {len(report.runs)} finished sub-runs"
                      + (f"; their results are in {written}" if written else ""))
        return 130
    return 0 if report.ok else 1


def _print_outcome(console: Console, report: SuiteReport) -> None:
    console.print(verdict_table(report))
    line = coverage_line(report)
    if line is not None:
        console.print(line)
    data = summary(report)
    faults = fault_count(data["faults"])
    of_budget = "" if report.budget is None else f" (budget {report.budget:g}s)"
    cluster = any(run.kind == "cluster" for run in report.runs)
    console.print(
        f"{len(report.runs)} sub-runs in {report.seconds:.1f}s{of_budget}: {data['acked']} "
        f"acknowledged writes, {faults} faults injected, {data['recoveries']} "
        + ("take-overs; " if cluster else "recoveries; ")
        + (f"{data['lost']} violations of the cluster rules (the table's 'violations' column)"
           if cluster else
           f"{data['lost']} acknowledged writes lost where the contract forbids it")
    )
    if report.skipped:
        console.print(f"{len(report.skipped)} SIGKILL runs did not fit the budget and did not "
                      f"start: {', '.join(report.skipped)}")
    for mode in ACK_MODES:  # one footnote per mode whose row shows an allowed loss
        if any(run.label == ALLOWED and run.ack == mode for run in report.runs):
            console.print(f"[yellow]{ALLOWED}[/], ack={mode!r}: {ALLOWED_WHY.get(mode, '')}; "
                          "this is measured, not a violation.")
    failures = report.failures
    if not failures and report.interrupted:
        return
    if not failures and any(run.kind == "cluster" for run in report.runs):
        console.print("[green]PASS[/]: no acknowledged write lost, no stale or future read "
                      "(reads while a clock was skewed past the drift margin may miss only "
                      "writes of epochs taken early), no acknowledgement by a fenced owner, no "
                      "store version going back.")
        return
    if not failures:
        console.print("[green]PASS[/]: no acknowledged write was lost where the ack mode "
                      "promises it.")
        return
    console.print(f"[bold red]FAIL[/]: {len(failures)} sub-run(s) violated the contract.")
    for run in failures:
        if run.kind != "cluster":
            continue
        console.print(f"  cluster seed={run.seed}: {len(run.violations)} violation(s)",
                      highlight=False)
        for violation in run.violations[:20]:
            console.print(f"    {violation}", highlight=False, markup=False)
        if len(run.violations) > 20:
            console.print(f"    ... and {len(run.violations) - 20} more (--json has them all)")
    for run in failures[:5]:
        console.print(f"  {run.name} ({run.kind}, ack={run.ack}, seed={run.seed}): {run.detail}")
        if run.shrunk_from:
            console.print(f"    plan shrunk from {run.shrunk_from}")
    console.print("Replay the first failure with:")
    console.print(failures[0].replay, soft_wrap=True, highlight=False, markup=False)


def _replay(args: argparse.Namespace) -> int:
    with quiet_runtime_logs():
        return _replay_run(args)


def _replay_run(args: argparse.Namespace) -> int:
    console = _console()
    try:
        options, ack = _options(args, operations=args.operations, shards=args.shards)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    ack = ack or "fsync"
    if args.kill:
        if args.seed is None:
            console.print("[red]error:[/] replay --kill needs --seed")
            return 2
        record = run_kill("replay", args.seed, ack, args.rounds, options)
    else:
        plan = _parse_plan(args.plan) if args.plan else None
        if plan is None and args.seed is None:
            console.print("[red]error:[/] replay needs --plan (as printed) or --seed")
            return 2
        seed = plan.seed if plan is not None else args.seed
        try:
            store = check_sim_store(args.sim_store)
        except ValueError as exc:
            console.print(f"[red]error:[/] --sim-store: {exc}")
            return 2
        record = run_simulation("replay", seed, ack, options, plan=plan,
                                intensity=args.intensity, shrink=False, store=store)
    report = SuiteReport(suite="replay", seed=record.seed, acks=(ack,), runs=(record,),
                         seconds=record.seconds)
    _print_outcome(console, report)
    if args.json:
        write_json(report, args.json)
    return 0 if record.ok else 1


def _parse_plan(text: str) -> Any:
    """Evaluate a printed plan with only the harness's public names in scope."""
    import writebehind.harness as harness

    # Only the eagerly imported names: the lazy ones (CacheMachine) import Hypothesis, which a
    # plain install (no test extra) does not have and no plan needs.
    names = {name: getattr(harness, name) for name in harness.__all__
             if name not in harness.LAZY_NAMES}
    try:
        return eval(text, {"__builtins__": {}}, names)
    except Exception as exc:
        raise SystemExit(f"--plan {text!r} is not a fault plan as printed: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m writebehind.chaos._cli``: the same commands without the top-level parser."""
    parser = argparse.ArgumentParser(prog="writebehind")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
