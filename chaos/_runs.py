"""One sub-run of a suite (an in-process simulation or a run of real SIGKILLs), as a record.

Every sub-run has its own seed, derived from the suite's root seed, and a replay command that
runs it alone: ``writebehind chaos replay ...``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from writebehind._core._config import mask_url
from writebehind.harness._kill import run_kill_rounds

Kind = Literal["simulation", "sigkill", "cluster"]

#: How many simulations a shrink may spend: one per enabled fault kind, at most.
SHRINK_LIMIT = 40
#: A simulation whose progress marker (simulated time, finished operations, disk writes, store
#: batches) stands still this many seconds of wall time is hung: a livelock or a deadlock.
HANG_STALL = 10.0
#: A backstop: no simulation may take this long, progress or not.
HANG_CAP = 300.0


class SimulationHung(Exception):
    """A simulation stopped making progress (see :data:`HANG_STALL`)."""


@attrs.define
class _Alarm:
    fired: bool = False
    why: str = ""


@contextlib.contextmanager
def progress_watch(
    marker: Callable[[], object], describe: Callable[[], str], *, stall: float = HANG_STALL,
    cap: float = HANG_CAP, period: float = 1.0,
) -> Iterator[_Alarm]:
    """Raise :class:`SimulationHung` in the main thread once ``marker()`` has not changed for
    ``stall`` seconds of wall time (or ``cap`` seconds have passed), and again every
    ``period`` after, until it escapes whatever catches it on the way out. The simulation may
    catch it as a crash and finish: ``alarm.fired`` says it hung anyway, ``alarm.why`` how.

    Judged by progress, not by the wall clock alone: a loaded machine runs a healthy
    simulation slowly, but its marker keeps moving. A watcher thread judges; the main thread
    gets a signal only once the run is hung. A signal every ``period`` would not do: trio
    wakes for any signal, and that extra wake-up reorders its seeded schedule, so a run
    would no longer replay exactly (a sub-run of a loaded suite read 636 acknowledged writes
    once and 637 the next time, from one seed)."""
    alarm = _Alarm()
    if threading.current_thread() is not threading.main_thread():
        yield alarm
        return
    main = threading.main_thread().ident
    assert main is not None
    done = threading.Event()

    why = ""  # the watcher's finding; the stuck report is made in the main thread

    def watch() -> None:
        nonlocal why
        started = time.monotonic()
        last_marker, last_change = marker(), started
        while not done.wait(period):
            now = time.monotonic()
            current = marker()
            if current != last_marker:
                last_marker, last_change = current, now
                if now - started < cap:
                    continue
                why = f"it ran past {cap:g}s of wall time while progressing"
            elif now - last_change < stall:
                continue
            break
        else:
            return
        while True:  # again every period, until the main thread leaves the block
            signal.pthread_kill(main, signal.SIGALRM)
            if done.wait(period):
                return

    def hung(signum: int, frame: object) -> None:
        if done.is_set():
            return  # the run finished as the watcher gave up on it
        if not alarm.fired:
            alarm.fired = True
            alarm.why = why or f"no progress for {stall:g}s of wall time: {describe()}"
        raise SimulationHung(f"the simulation hung ({alarm.why})")

    previous = signal.signal(signal.SIGALRM, hung)
    watcher = threading.Thread(target=watch, name="writebehind-progress-watch", daemon=True)
    watcher.start()
    try:
        yield alarm
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGALRM, previous)


def _collect_abandoned_run() -> None:
    """The interrupted trio run left generators that complain when collected without it."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _hung(exc: BaseException) -> bool:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SimulationHung):
            return True
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return False


def is_breakdown(kind: str, faults: Mapping[str, int]) -> bool:
    """``power_loss:drop_unsynced`` details ``power_loss``: not a fault of its own."""
    for sep in (":", "."):
        head = kind.split(sep, 1)[0]
        if head != kind and head in faults:
            return True
    return False


def fault_count(faults: Mapping[str, int]) -> int:
    """Faults injected, not counting breakdowns of a kind into its variants."""
    return sum(n for kind, n in faults.items() if not is_breakdown(kind, faults))


def derive_seed(root: int, *parts: object) -> int:
    """A sub-run's seed: stable for (root, parts), independent of everything else."""
    text = ":".join(map(str, (root, *parts)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


@attrs.frozen(kw_only=True)
class RunRecord:
    """The outcome of one sub-run, in the shape the table, JSON and JUnit reports share."""

    kind: Kind
    name: str
    seed: int
    ack: str
    acked: int
    lost: int
    faults: Mapping[str, int]
    recoveries: int
    label: str  # PASS, FAIL, ERROR or "LOSS (allowed by ack mode)"
    ok: bool
    replay: str
    comparison: bool = False  # the ack='memory' row shown next to the default run
    plan: str | None = None
    shrunk_from: str | None = None
    detail: str = ""
    seconds: float = 0.0
    store: str | None = None  # a simulation's store: memory, sqlite or a (masked) URL
    opportunities: Mapping[str, int] = attrs.Factory(dict)  # fault coverage (simulations)
    violations: tuple[str, ...] = ()  # a cluster run's rule violations, each in full
    events: tuple[str, ...] = ()  # a cluster run's faults as they happened

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "seed": self.seed,
            "ack": self.ack,
            "acked": self.acked,
            "lost": self.lost,
            "faults": dict(self.faults),
            "recoveries": self.recoveries,
            "verdict": self.label,
            "ok": self.ok,
            "comparison": self.comparison,
            "plan": self.plan,
            "shrunk_from": self.shrunk_from,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "store": mask_url(self.store) if self.store else None,
            "replay": self.replay,
            **({"violations": list(self.violations), "events": list(self.events)}
               if self.kind == "cluster" else {}),
        }


@attrs.frozen(kw_only=True)
class RunOptions:
    """What every sub-run of a suite shares."""

    config: Mapping[str, Any] = attrs.Factory(dict)
    config_file: str | None = None  # named in replay commands
    # SIGKILL runs' store; with a PostgreSQL URL, a share of simulations run over it too
    store: str | None = None
    operations: int = 2000
    shards: int = 2
    # Deliberately broken runtimes, to show the harness catches them: a name from
    # ``writebehind.harness.BROKEN_VARIANTS`` for simulations, from the worker's BREAKS for kills.
    variant: str | None = None
    kill_break: str | None = None
    inspect: str | None = None  # HOST:PORT: SIGKILL workers serve the inspector there
    # The cluster suite's fault kinds to draw (None: all of them).
    cluster_faults: tuple[str, ...] | None = None
    # The cluster suite prints each fault here as it is injected (the CLI: above the bar).
    cluster_log: Callable[[str], None] | None = attrs.field(default=None, eq=False)

    def common_args(self) -> list[str]:
        return ["--config", self.config_file] if self.config_file else []


def _quote(arg: str) -> str:
    # A plan's repr is full of single quotes: double quotes read better than shlex's splicing.
    if shlex.quote(arg) != arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def _command(args: list[str]) -> str:
    return " ".join(_quote(a) for a in ["writebehind", "chaos", "replay", *args])


def _detail(losses: Any, extra: tuple[str, ...] = ()) -> str:
    parts = list(extra)
    for loss in list(losses)[:2]:
        parts.append(f"{loss.key!r}: expected {loss.expected!r}, found {loss.found!r}")
    return "; ".join(parts)


def simulation_store(options: RunOptions, n: int) -> str:
    """The store sub-run ``n`` of a suite simulates over: the real SQLite store for half of
    them (the real version guard and batch semantics), the in-memory one for speed; with a
    PostgreSQL ``--store``, half run over PostgreSQL and a quarter over SQLite."""
    if options.store is not None and options.store.startswith(("postgresql://", "postgres://")):
        return options.store if n % 2 == 0 else ("sqlite" if n % 4 == 1 else "memory")
    return "sqlite" if n % 2 == 0 else "memory"


def simulation_replay(plan: str, ack: str, options: RunOptions, store: str = "memory") -> str:
    args = ["--ack", ack, "--operations", str(options.operations), "--shards",
            str(options.shards), *options.common_args()]
    if store != "memory":
        args += ["--sim-store", mask_url(store)]
    if options.variant:
        args += ["--variant", options.variant]
    args += ["--plan", plan]
    return _command(args)


def run_simulation(
    name: str, seed: int, ack: str, options: RunOptions, *, plan: Any = None,
    intensity: float = 1.0, shrink: bool = True, comparison: bool = False,
    store: str = "memory", shrink_deadline: float | None = None,
) -> RunRecord:
    """Simulate ``FaultPlan.buggify(seed)`` (or ``plan``) over ``store`` (see
    :func:`writebehind.harness.simulate`); shrink the plan if it fails, trying no smaller
    plan after ``shrink_deadline`` (``time.monotonic()``; a suite's budget)."""
    from writebehind.harness import FaultPlan, simulate
    from writebehind.harness._simulation import progress, stuck_report

    started = time.monotonic()
    if plan is None:
        plan = FaultPlan.buggify(seed, intensity=intensity)

    def attempt(candidate: Any) -> Any:
        return simulate(candidate, ack=ack, operations=options.operations,
                        shards=options.shards, config=dict(options.config),
                        variant=options.variant, store=store)

    replay = simulation_replay(repr(plan), ack, options, store)
    hung = False
    try:
        with progress_watch(progress, stuck_report) as alarm:
            result = attempt(plan)
        hung = alarm.fired
    except BaseException as exc:
        if not _hung(exc):
            raise
        hung = True
    if hung:
        _collect_abandoned_run()
        # Not shrunk: every attempt would cost the whole stall.
        return RunRecord(
            kind="simulation", name=name, seed=plan.seed, ack=ack, acked=0, lost=0, faults={},
            recoveries=0, label="FAIL", ok=False, replay=replay, comparison=comparison,
            plan=repr(plan), detail=f"the simulation hung ({alarm.why})",
            seconds=time.monotonic() - started, store=store,
        )
    shrunk_from = None
    if not result.ok and shrink:
        smaller, smaller_result = shrink_plan(plan, result, _watched(attempt),
                                              deadline=shrink_deadline)
        if smaller != plan:
            shrunk_from, plan, result = repr(plan), smaller, smaller_result
    verdict = result.verdict
    return RunRecord(
        kind="simulation", name=name, seed=plan.seed, ack=ack, acked=verdict.acked,
        lost=len(verdict.lost) + len(result.read_violations), faults=dict(result.faults),
        recoveries=result.recoveries, label=result.label, ok=result.ok,
        replay=simulation_replay(repr(plan), ack, options, store), comparison=comparison,
        plan=repr(plan), shrunk_from=shrunk_from,
        detail=_detail((*verdict.lost, *result.read_violations), tuple(result.problems)),
        seconds=time.monotonic() - started, store=store,
        opportunities=dict(result.opportunities),
    )


def _watched(attempt: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``attempt`` under the progress watch: None if it hung (a shrinking step that hangs
    proves nothing about the smaller plan, and must not hang the suite)."""
    from writebehind.harness._simulation import progress, stuck_report

    def watched(candidate: Any) -> Any:
        try:
            with progress_watch(progress, stuck_report) as alarm:
                result = attempt(candidate)
        except BaseException as exc:
            if not _hung(exc):
                raise
            _collect_abandoned_run()
            return None
        if alarm.fired:
            _collect_abandoned_run()
            return None
        return result

    return watched


def shrink_plan(
    plan: Any, failing: Any, attempt: Callable[[Any], Any], *, deadline: float | None = None
) -> tuple[Any, Any]:
    """Remove fault kinds one at a time while the run still fails; return the smallest plan
    found and its result (by ``deadline``, if given). Kinds draw from their own generators,
    so removing one keeps the others' draws. ``attempt`` returns None for a run that did
    not finish: not a failure."""
    from writebehind.harness import FaultPlan

    budget = SHRINK_LIMIT
    for kind in plan.kinds:
        if budget == 0 or (deadline is not None and time.monotonic() >= deadline):
            break
        budget -= 1
        candidate = FaultPlan(plan.seed, {k: r for k, r in plan.rates if k != kind},
                              tick=plan.tick)
        result = attempt(candidate)
        if result is not None and not result.ok:
            plan, failing = candidate, result
    return plan, failing


def kill_replay(seed: int, ack: str, rounds: int, options: RunOptions) -> str:
    args = ["--kill", "--seed", str(seed), "--ack", ack, "--rounds", str(rounds),
            *options.common_args()]
    if options.store:
        # Replay commands end up in CI logs and published JSON/JUnit artifacts: never carry
        # the password (the replayer supplies it, or libpq's PGPASSWORD/.pgpass does).
        args += ["--store", mask_url(options.store)]
    if options.kill_break:
        args += ["--break", options.kill_break]
    return _command(args)


def _kill_config(options: RunOptions) -> dict[str, Any]:
    config = dict(options.config)
    if options.inspect:
        config["inspector"] = options.inspect
    return config


def run_kill(
    name: str, seed: int, ack: str, rounds: int, options: RunOptions, *,
    comparison: bool = False, progress: Callable[[int, int, str], None] | None = None,
    restart_server: bool = False,
) -> RunRecord:
    """Real SIGKILL rounds in a fresh temporary directory (journals, and SQLite by default)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="writebehind-chaos-") as tmp:
        result = run_kill_rounds(
            seed=seed, ack=ack, store=options.store, rounds=rounds, workdir=Path(tmp),
            config=_kill_config(options), progress=progress, broken=options.kill_break,
            restart_server=restart_server,
        )
    verdict = result.verdict
    return RunRecord(
        kind="sigkill", name=name, seed=seed, ack=ack, acked=verdict.acked,
        lost=len(verdict.lost), faults=result.faults, recoveries=result.recoveries,
        label=result.label, ok=result.ok, replay=kill_replay(seed, ack, rounds, options),
        comparison=comparison,
        detail=_masked(_detail((*verdict.lost, *result.read_violations), result.worker_errors),
                       options.store),
        seconds=time.monotonic() - started,
    )


def _masked(text: str, store: str | None) -> str:
    """``text`` with the store URL, should a worker error quote it, password masked."""
    return text.replace(store, mask_url(store)) if store else text


def cluster_replay(seed: int, duration: float, store: str | None,
                   faults: Sequence[str] | None = None) -> str:
    """The command that runs this cluster run again (same schedule and workload choices)."""
    args = ["writebehind", "chaos", "run", "--suite", "cluster", "--seed", str(seed),
            "--duration", f"{duration:g}"]
    if store:
        args += ["--store", mask_url(store)]
    if faults is not None:
        args += ["--faults", ",".join(faults)]
    return " ".join(_quote(a) for a in args)


def run_cluster(
    name: str, seed: int, options: RunOptions, *, duration: float,
    progress: Callable[[int, int, str], None] | None = None,
) -> RunRecord:
    """One cluster chaos run (:func:`writebehind.harness._cluster_run.run_cluster_rounds`)
    in a fresh temporary directory, as a record."""
    from writebehind.harness._cluster_run import FAULT_KINDS, run_cluster_rounds

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="writebehind-cluster-") as tmp:
        result = run_cluster_rounds(seed=seed, workdir=Path(tmp), store=options.store,
                                    duration=duration, progress=progress,
                                    log=options.cluster_log,
                                    faults=options.cluster_faults or FAULT_KINDS)
    check = result.check
    violations = tuple(_masked(str(v), options.store) for v in check.violations)
    counts = ", ".join(f"{rule} {n}" for rule, n in check.by_rule().items() if n)
    detail = "; ".join([*result.errors, *([counts] if counts else []), *violations[:2]])
    return RunRecord(
        kind="cluster", name=name, seed=seed, ack="replicated", acked=check.acknowledged,
        lost=len(check.violations), faults={k: n for k, n in result.faults.items() if n},
        recoveries=result.takeovers, label=result.label, ok=result.ok,
        replay=cluster_replay(seed, duration, options.store, options.cluster_faults),
        detail=_masked(detail, options.store), seconds=time.monotonic() - started,
        store=result.store, violations=violations, events=result.events,
    )
