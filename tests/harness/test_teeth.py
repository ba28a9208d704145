"""The harness has teeth: it measures the losses ack modes allow and catches broken runtimes."""

import pytest

from writebehind.harness import BROKEN_VARIANTS, FaultPlan, simulate

from .helpers import first_failure

CRASHES = FaultPlan(21, {"process_crash": 0.08})
POWER = FaultPlan(21, {"power_loss": 0.08})


def test_memory_mode_reports_lost_acknowledged_writes_as_allowed() -> None:
    result = simulate(CRASHES, ack="memory", operations=2000, config={"flush_interval": 0.5})
    assert result.verdict.lost, result.report()
    assert result.verdict.loss_allowed and result.verdict.label == "LOSS (allowed by ack mode)"
    assert result.ok  # allowed: measured, not failed
    assert all(loss.window is not None for loss in result.verdict.lost)


@pytest.mark.parametrize("ack", ["journal", "fsync", "store"])
def test_durable_modes_lose_nothing_under_process_crashes(ack: str) -> None:
    result = simulate(CRASHES, ack=ack, operations=2000, config={"flush_interval": 0.5})
    assert result.verdict.crashes["process"] > 0
    assert result.verdict.lost == () and result.label == "PASS", result.report()


@pytest.mark.parametrize("ack", ["fsync", "store"])
def test_power_safe_modes_lose_nothing_under_power_loss(ack: str) -> None:
    result = simulate(POWER, ack=ack, operations=2000, config={"flush_interval": 0.5})
    assert result.verdict.crashes["power"] > 0
    assert result.verdict.lost == () and result.label == "PASS", result.report()


def test_journal_mode_may_lose_to_power_loss_and_says_so() -> None:
    results = [
        simulate(FaultPlan(s, {"power_loss": 0.1}), ack="journal", operations=1500,
                 config={"flush_interval": 0.5, "journal_sync_interval": 1.0})
        for s in range(4)
    ]
    assert any(r.verdict.lost for r in results)
    assert all(r.ok and (not r.verdict.lost or r.verdict.loss_allowed) for r in results)


def test_every_broken_variant_is_named_for_a_rule() -> None:
    assert len(BROKEN_VARIANTS) >= 5
    assert all(v.rule.endswith(("synced (ack='fsync')", "checkpoint", "acknowledged",
                                "forward", "persisted")) for v in BROKEN_VARIANTS.values())


def caught(variant: str, ack: str = "fsync") -> None:
    failure = first_failure(ack, variant=variant)
    assert failure is not None, f"no smoke plan caught {variant!r}: the harness lost its teeth"
    assert failure.label == "FAIL" and failure.variant == variant


def test_harness_catches_ack_before_journal_sync() -> None:
    caught("ack_before_journal_sync")


def test_harness_catches_skipped_replay() -> None:
    caught("skip_replay", ack="journal")


def test_harness_catches_checkpoint_before_the_store_ack() -> None:
    caught("checkpoint_too_early")


def test_harness_catches_an_older_version_overwriting_a_newer_one() -> None:
    caught("older_version_overwrites_newer")


def test_harness_catches_a_nack_treated_as_an_ack() -> None:
    caught("nack_treated_as_ack")
