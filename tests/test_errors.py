"""The kernel's error helpers: one group walker and one name for "may or may not have happened"."""

from __future__ import annotations

from writebehind import CacheClosed, ShardCrashed, StoreRejected, StoreUnavailable
from writebehind._core._errors import UNCERTAIN_OUTCOME, leaves


class Skipped(BaseException):
    pass


def test_leaves_flattens_nested_groups_depth_first() -> None:
    a, b, c, d = ValueError("a"), KeyError("b"), OSError("c"), ValueError("d")
    inner = BaseExceptionGroup("inner", [b, ExceptionGroup("deepest", [c])])
    group = BaseExceptionGroup("outer", [a, inner, d])
    assert leaves(group) == [a, b, c, d]


def test_an_error_that_is_no_group_is_its_own_leaf() -> None:
    error = ValueError("alone")
    assert leaves(error) == [error]


def test_leaves_leaves_out_the_kinds_it_is_told_to_skip() -> None:
    kept = ValueError("kept")
    group = BaseExceptionGroup("", [Skipped(), BaseExceptionGroup("", [Skipped(), kept])])
    assert leaves(group, skip=Skipped) == [kept]
    assert leaves(group, skip=(Skipped, ValueError)) == []
    assert leaves(Skipped(), skip=Skipped) == []


def test_uncertain_outcome_names_the_errors_that_leave_a_write_in_doubt() -> None:
    # A refusal (the store said no for good) or backpressure is certain: it did not happen.
    assert set(UNCERTAIN_OUTCOME) == {ShardCrashed, CacheClosed, StoreUnavailable}
    assert not isinstance(StoreRejected("refused for good"), UNCERTAIN_OUTCOME)
