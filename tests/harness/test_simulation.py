"""simulate(): deterministic, and the runtime survives every smoke plan in every ack mode."""

import pytest

from writebehind.harness import FaultPlan, simulate

from .helpers import SMOKE_OPERATIONS, SMOKE_SEEDS


def test_a_plan_replays_exactly() -> None:
    plan = FaultPlan.buggify(11)
    first = simulate(plan, ack="fsync", operations=600)
    assert simulate(plan, ack="fsync", operations=600) == first
    assert sum(first.faults.values()) > 0 and first.recoveries > 0


def test_without_faults_nothing_is_lost_and_every_write_is_acknowledged() -> None:
    result = simulate(FaultPlan.none(3), ack="memory", operations=800)
    assert result.ok and result.label == "PASS"
    assert result.faults == {} and result.recoveries == 0
    assert result.verdict.lost == () and result.verdict.uncertain == 0
    assert result.verdict.acked > 500


def test_a_result_report_names_the_plan_to_replay() -> None:
    plan = FaultPlan(5, {"process_crash": 0.3, "store.unavailable": 0.2})
    result = simulate(plan, operations=300)
    assert result.report().startswith(f"PASS: simulate({plan!r}, ack='fsync', operations=300)")
    assert result.faults.get("process_crash", 0) > 0


def test_quarantined_keys_are_reported_apart_and_never_as_silent_loss() -> None:
    result = simulate(FaultPlan(2, {"store.reject": 1.0}), ack="fsync", operations=800)
    assert result.ok, result.report()
    assert result.quarantined and result.faults["store.reject"] > 0
    assert not {loss.key for loss in result.verdict.lost} & set(result.quarantined)


def test_a_flipped_journal_byte_is_detected_and_never_a_loss() -> None:
    plan = FaultPlan(4, {"process_crash": 0.2, "disk.flip_byte": 1.0})
    result = simulate(plan, ack="fsync", operations=800)
    assert result.ok, result.report()
    assert result.events["corruption_detected"] == result.faults["disk.flip_byte"] > 0


def test_a_crash_loop_escalates_and_the_harness_restarts_the_cache() -> None:
    result = simulate(FaultPlan(1, {"crash_loop": 0.2}), ack="journal", operations=800)
    assert result.ok, result.report()
    assert result.events["escalations"] > 0 and result.faults["crash_loop.crashes"] > 0


@pytest.mark.parametrize("ack", ["journal", "fsync", "store"])
@pytest.mark.parametrize("seed", SMOKE_SEEDS)
def test_smoke_no_acknowledged_write_is_lost(ack: str, seed: int) -> None:
    result = simulate(FaultPlan.buggify(seed), ack=ack, operations=SMOKE_OPERATIONS)
    assert result.ok, result.report()
    if ack != "journal" or not result.verdict.crashes.get("power"):
        assert result.verdict.lost == (), result.report()


@pytest.mark.parametrize("seed", SMOKE_SEEDS)
def test_smoke_memory_mode_loses_only_what_a_crash_excuses(seed: int) -> None:
    result = simulate(FaultPlan.buggify(seed), ack="memory", operations=SMOKE_OPERATIONS)
    assert result.ok, result.report()
