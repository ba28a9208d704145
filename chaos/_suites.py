"""Suites: many seeded sub-runs under one root seed, within a time budget.

A suite runs in-process simulations (:func:`writebehind.harness.simulate`, one fault plan per
derived seed) and, at the same time on the other core, runs of real SIGKILLs. Sub-run *i* of a
given root seed is always the same run; the time budget (``duration``) only decides how many
sub-runs run, so a slower machine runs fewer of the same ones.

The budget bounds the whole suite, SIGKILL runs included: a sub-run starts only if it is
expected to finish within it (expected: as long as the longest of its kind so far). However
small the budget, one simulation and one SIGKILL run per ack mode (and the memory comparison)
run; SIGKILL runs go round the ack modes, so a budget that cuts them cuts every mode alike,
and the report names the ones that did not start.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from ._runs import (
    RunOptions,
    RunRecord,
    derive_seed,
    fault_count,
    run_cluster,
    run_kill,
    run_simulation,
    simulation_store,
)


@attrs.frozen(kw_only=True)
class Suite:
    """A named recipe. ``duration`` is the default wall-time budget in seconds."""

    name: str
    duration: float
    simulations: int  # at most, per ack mode
    # At least this many simulations run under the default budget, however slow the
    # machine: which plans a seed covers (and so what it catches) must not depend on load.
    min_simulations: int = 0
    operations: int
    intensity: float
    kill_runs: int  # per ack mode
    kill_rounds: int
    acks: tuple[str, ...]  # when no --ack is given
    # The simulations' ack modes in turn, when no --ack is given (default: ``acks``): bugs on
    # the paths only one mode takes (the memory mode's drain, the journal mode's unsynced
    # rotation) need that mode to show.
    mix: tuple[str, ...] = ()
    memory_comparison: bool  # add an ack='memory' SIGKILL row showing that mode's allowed loss
    # The cluster suite: one run of three instances on three NATS nodes under faults for
    # ``duration`` seconds (setting up, draining and checking take about 20 s more).
    cluster: bool = False


#: The suites ``writebehind chaos run --suite NAME`` runs, by name.
SUITES: dict[str, Suite] = {
    "smoke": Suite(
        name="smoke", duration=35.0, simulations=500, min_simulations=32, operations=1500,
        intensity=1.0, kill_runs=1, kill_rounds=4, acks=("fsync",), memory_comparison=True,
        mix=("fsync", "journal", "memory", "store", "fsync", "journal", "memory", "store"),
    ),
    "full": Suite(
        name="full", duration=600.0, simulations=5000, operations=4000, intensity=1.5,
        kill_runs=3, kill_rounds=10, acks=("memory", "journal", "fsync", "store"),
        memory_comparison=False,
    ),
    "cluster": Suite(
        name="cluster", duration=40.0, simulations=0, operations=0, intensity=0.0,
        kill_runs=0, kill_rounds=0, acks=("replicated",), memory_comparison=False,
        cluster=True,
    ),
}

COMPARISON_ROUNDS = 3


class SuiteProgress(Protocol):
    """What a suite reports as it goes (the CLI draws it with rich). Called from two threads."""

    def add(self, label: str, total: int) -> int: ...

    def update(self, task: int, *, completed: int, total: int | None = None,
               note: str = "") -> None: ...


@attrs.frozen(kw_only=True)
class SuiteReport:
    """What :func:`run_suite` found: every sub-run's record; ``ok`` if none failed."""

    suite: str
    seed: int
    acks: tuple[str, ...]
    runs: tuple[RunRecord, ...]
    seconds: float
    interrupted: bool = False  # stopped early (Ctrl-C): ``runs`` are the ones that finished
    budget: float | None = None  # the wall-time budget in seconds the suite ran under
    skipped: tuple[str, ...] = ()  # SIGKILL runs not started: they would not fit the budget

    @property
    def ok(self) -> bool:
        return all(run.ok for run in self.runs)

    @property
    def failures(self) -> tuple[RunRecord, ...]:
        return tuple(run for run in self.runs if not run.ok)


@attrs.frozen(kw_only=True)
class KillJob:
    name: str
    seed: int
    ack: str
    rounds: int
    comparison: bool


def plan_kills(
    suite: Suite, root: int, acks: Sequence[str], rounds: int, *, comparison: bool
) -> list[KillJob]:
    # Round the ack modes (every mode's first run, then every mode's second...): when the
    # budget runs out, every mode has had as many runs as the others, give or take one.
    jobs = [
        KillJob(name=f"kill-{ack}-{i:02d}", seed=derive_seed(root, "kill", ack, i), ack=ack,
                rounds=rounds, comparison=False)
        for i in range(suite.kill_runs)
        for ack in acks
    ]
    if comparison and rounds > 0:
        jobs.append(KillJob(name="kill-memory-comparison", seed=derive_seed(root, "compare"),
                            ack="memory", rounds=min(rounds, COMPARISON_ROUNDS) or 1,
                            comparison=True))
    return [job for job in jobs if job.rounds > 0]


def run_suite(
    suite: Suite,
    *,
    seed: int,
    options: RunOptions,
    acks: Sequence[str] | None = None,
    duration: float | None = None,
    kill_rounds: int | None = None,
    progress: SuiteProgress | None = None,
    on_run: Callable[[RunRecord], None] | None = None,
    fail_fast: bool = False,
) -> SuiteReport:
    """Run ``suite`` from root ``seed`` within its time budget (``duration``, default the
    suite's), SIGKILL runs included: beyond one of each per ack mode, a sub-run starts only if
    one as long as the longest of its kind so far would still finish in time. With
    ``fail_fast``, the first failing sub-run stops both: no new simulation or kill run starts
    (a kill run already going finishes), and a failing plan is not shrunk."""
    started = time.monotonic()
    budget = suite.duration if duration is None else duration
    if suite.cluster:
        return _cluster_suite(suite, seed, options, budget, progress, on_run)
    deadline = started + budget
    modes = tuple(acks) if acks else suite.acks
    rounds = suite.kill_rounds if kill_rounds is None else kill_rounds
    comparison = suite.memory_comparison and "memory" not in modes
    jobs = plan_kills(suite, seed, modes, rounds, comparison=comparison)
    mix = tuple(acks) if acks else (suite.mix or suite.acks)
    kill_records: list[RunRecord] = []
    skipped: list[str] = []
    kill_failure: list[BaseException] = []
    # However small the budget: one run per ack mode, and the memory comparison.
    required = {job.name for job in jobs if job.comparison or job.name == f"kill-{job.ack}-00"}
    stop = threading.Event()  # set by the first failing sub-run under fail_fast

    def finished(record: RunRecord) -> None:
        if fail_fast and not record.ok:
            stop.set()
        if on_run is not None:
            on_run(record)

    def kills() -> None:
        longest = 0.0  # seconds per round of the slowest kill run so far
        try:
            for job in jobs:
                if stop.is_set():
                    break
                expected = longest * (job.rounds + 1)
                if job.name not in required and time.monotonic() + expected > deadline:
                    skipped.append(job.name)
                    continue
                task = progress.add(f"SIGKILL {job.name}", job.rounds + 1) if progress else 0

                def step(done: int, total: int, note: str, task: int = task) -> None:
                    if progress is not None:
                        progress.update(task, completed=done, total=total, note=note)

                # The full suite also restarts a local PostgreSQL store once per kill run.
                record = run_kill(job.name, job.seed, job.ack, job.rounds, options,
                                  comparison=job.comparison, progress=step,
                                  restart_server=suite.name == "full")
                kill_records.append(record)
                longest = max(longest, record.seconds / (job.rounds + 1))
                finished(record)
        except BaseException as exc:  # re-raised by the main thread after the join
            kill_failure.append(exc)

    thread = threading.Thread(target=kills, name="chaos-kills", daemon=True)
    thread.start()
    try:
        # An explicit budget rules, and so does a server store's (its simulations take
        # seconds each: a floor would take minutes).
        floor = suite.min_simulations if duration is None and not options.store else 0
        sim_records = _simulations(suite, seed, mix, options, deadline, progress,
                                   finished, stop, shrink=not fail_fast, floor=floor)
    except BaseException:
        stop.set()  # interrupted: the kill thread starts no new run, so the join is short
        raise
    finally:
        try:
            thread.join()
        except BaseException:
            stop.set()  # interrupted while waiting for the kill thread: no new run either
            raise
    if kill_failure:
        raise kill_failure[0]
    return SuiteReport(
        suite=suite.name, seed=seed, acks=tuple(dict.fromkeys((*modes, *mix))),
        runs=(*sim_records, *kill_records),
        seconds=time.monotonic() - started, budget=budget, skipped=tuple(skipped),
    )


def _simulations(
    suite: Suite, root: int, acks: Sequence[str], options: RunOptions, deadline: float,
    progress: SuiteProgress | None, on_run: Callable[[RunRecord], None] | None,
    stop: threading.Event | None = None, *, shrink: bool = True, floor: int = 0,
) -> list[RunRecord]:
    cap = suite.simulations * len(acks)
    start = time.monotonic()
    # The bar shows the time budget (tenths of a second): the count of runs depends on it.
    ticks = max(1, round((deadline - start) * 10))
    task = progress.add("simulations", ticks) if progress else 0
    records: list[RunRecord] = []
    faults = 0
    longest = 0.0  # the slowest simulation so far: the next one may take as long
    runs_of: collections.Counter[str] = collections.Counter()
    for i in range(cap):
        # At least one simulation per ack mode (and ``floor`` in all), however small the budget.
        if i >= max(len(acks), floor) and time.monotonic() + longest >= deadline:
            break
        if stop is not None and stop.is_set():
            break
        ack = acks[i % len(acks)]
        n = runs_of[ack]  # the n-th simulation of this mode: its seed and its store
        runs_of[ack] += 1
        record = run_simulation(
            f"sim-{ack}-{n:04d}", derive_seed(root, "sim", ack, n), ack, options,
            intensity=suite.intensity, store=simulation_store(options, n), shrink=shrink,
            shrink_deadline=deadline,
        )
        longest = max(longest, record.seconds)
        records.append(record)
        faults += fault_count(record.faults)
        if on_run is not None:
            on_run(record)
        if progress is not None:
            elapsed = round((time.monotonic() - start) * 10)
            progress.update(task, completed=min(elapsed, ticks),
                            note=f"{i + 1} runs, {faults} faults")
    if progress is not None:
        progress.update(task, completed=ticks, note=f"{len(records)} runs, {faults} faults")
    return records


def _cluster_suite(
    suite: Suite, seed: int, options: RunOptions, duration: float,
    progress: SuiteProgress | None, on_run: Callable[[RunRecord], None] | None,
) -> SuiteReport:
    """The cluster suite: one run whose seed is the root seed (so the printed seed replays
    it), faults for ``duration`` seconds."""
    started = time.monotonic()
    task = progress.add("cluster: 3 instances, 3 NATS nodes", max(1, int(duration))) \
        if progress else 0

    def step(done: int, total: int, note: str) -> None:
        if progress is not None:
            progress.update(task, completed=done, total=total, note=note)

    record = run_cluster("cluster", seed, options, duration=duration, progress=step)
    if progress is not None:
        progress.update(task, completed=max(1, int(duration)), note="checked")
    if on_run is not None:
        on_run(record)
    return SuiteReport(suite=suite.name, seed=seed, acks=("replicated",), runs=(record,),
                       seconds=time.monotonic() - started, budget=duration)
