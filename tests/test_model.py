"""The contract's model, synchronously."""

import pytest

from writebehind.harness import Model


def test_store_must_hold_the_last_acknowledged_value() -> None:
    m = Model("fsync")
    m.acked(m.issue("a", b"1", 0.0), 0.1)
    m.acked(m.issue("a", b"2", 0.2), 0.3)
    assert m.check_store({"a": b"2"}).ok
    verdict = m.check_store({"a": b"1"})
    assert not verdict.ok and verdict.label == "FAIL"
    assert verdict.lost[0].expected == b"2" and verdict.lost[0].found == b"1"


def test_an_uncertain_write_after_the_last_ack_may_or_may_not_have_happened() -> None:
    m = Model("fsync")
    m.acked(m.issue("a", b"1", 0.0), 0.1)
    m.issue("a", b"2", 0.2)
    m.crash("process", 0.3)
    assert m.check_store({"a": b"1"}).ok
    assert m.check_store({"a": b"2"}).ok
    assert not m.check_store({}).ok


def test_an_uncertain_write_before_an_acked_one_must_not_win() -> None:
    m = Model("journal")
    op = m.issue("a", b"old", 0.0)
    m.uncertain(op)
    m.acked(m.issue("a", b"new", 0.1), 0.2)
    assert not m.check_store({"a": b"old"}).ok


def test_deletes_are_checked_like_puts() -> None:
    m = Model("store")
    m.acked(m.issue("a", b"1", 0.0), 0.0)
    m.acked(m.issue("a", None, 0.0), 0.0)
    assert m.check_store({}).ok
    assert m.check_store({"a": None}).ok
    assert not m.check_store({"a": b"1"}).ok


def test_memory_mode_measures_loss_under_a_crash_instead_of_failing() -> None:
    m = Model("memory")
    m.acked(m.issue("a", b"1", 0.0), 1.0)
    m.crash("process", 1.25)
    verdict = m.check_store({})
    assert verdict.ok and verdict.loss_allowed and len(verdict.lost) == 1
    assert verdict.lost[0].window == pytest.approx(0.25)
    assert verdict.label == "LOSS (allowed by ack mode)"


def test_journal_mode_survives_process_crash_but_not_power_loss() -> None:
    m = Model("journal")
    m.acked(m.issue("a", b"1", 0.0), 0.0)
    m.crash("process", 1.0)
    assert not m.check_store({}).ok
    m.crash("power", 2.0)
    assert m.check_store({}).ok


def test_reads_must_see_your_writes() -> None:
    m = Model("fsync")
    m.acked(m.issue("a", b"1", 0.0), 0.0)
    assert m.check_read("a", b"1") is None
    assert m.check_read("a", None) is not None


def test_a_second_pending_write_to_one_key_is_a_workload_error() -> None:
    m = Model("fsync")
    m.issue("a", b"1", 0.0)
    with pytest.raises(AssertionError, match="one at a time"):
        m.issue("a", b"2", 0.0)
