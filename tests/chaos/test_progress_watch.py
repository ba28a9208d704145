"""The chaos runs' hang watch: it catches a run that stops progressing, and it leaves a
healthy run's seeded schedule alone (so a sub-run replays exactly from its seed)."""

from __future__ import annotations

import time

import pytest

from writebehind.chaos._runs import SimulationHung, progress_watch
from writebehind.harness import FaultPlan, simulate


def test_a_run_that_stops_progressing_is_interrupted_with_the_stuck_report() -> None:
    with pytest.raises(SimulationHung, match=r"no progress for 0\.2s of wall time: stuck at 7"):
        with progress_watch(lambda: 7, lambda: "stuck at 7", stall=0.2, period=0.05) as alarm:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pass  # pure Python: only the signal can get us out
    assert alarm.fired


def test_a_run_that_progresses_is_left_alone() -> None:
    ticks = iter(range(10**9))
    with progress_watch(lambda: next(ticks), lambda: "", stall=0.1, period=0.02) as alarm:
        time.sleep(0.5)
    assert not alarm.fired


def test_a_watched_simulation_replays_exactly() -> None:
    # Trio wakes for every signal the process receives, and the wake-up reorders its seeded
    # schedule: a watch that signalled every period made runs of one seed differ.
    def fingerprint() -> tuple[object, ...]:
        with progress_watch(lambda: time.monotonic(), lambda: "", period=0.002):
            result = simulate(FaultPlan.buggify(1234), ack="fsync", operations=300)
        return (result.verdict.acked, dict(result.faults), result.recoveries,
                dict(result.events))

    first = fingerprint()
    assert all(fingerprint() == first for _ in range(3))
