"""The workload generators and the targets' verdicts (pure)."""

from __future__ import annotations

import random

import pytest

from writebehind._bench._report import Target
from writebehind._bench._workloads import WORKLOADS, ZipfCDF, key_chooser, key_name


def test_zipf_rank_probabilities_follow_the_power_law() -> None:
    cdf = ZipfCDF(1000, 1.1)
    assert sum(cdf.probability(k) for k in range(1000)) == pytest.approx(1.0)
    assert cdf.probability(0) / cdf.probability(9) == pytest.approx(10**1.1)
    assert cdf.rank(0.0) == 0 and cdf.rank(0.999999999) == 999


def test_zipf_draws_put_the_hot_key_at_its_expected_frequency() -> None:
    cdf = ZipfCDF(100_000, 1.1)
    rng = random.Random(7)
    draws = 40_000
    hits = sum(cdf.rank(rng.random()) == 0 for _ in range(draws))
    p = cdf.probability(0)
    sigma = (draws * p * (1 - p)) ** 0.5
    assert abs(hits - draws * p) < 5 * sigma


def test_a_seed_replays_the_same_keys() -> None:
    for workload in WORKLOADS.values():
        first = key_chooser(workload, random.Random(3), key_space=500)
        second = key_chooser(workload, random.Random(3), key_space=500)
        assert [first() for _ in range(200)] == [second() for _ in range(200)]


def test_uniform_keys_stay_in_the_key_space_and_spread() -> None:
    choose = key_chooser(WORKLOADS["uniform"], random.Random(1), key_space=50)
    seen = {choose() for _ in range(2_000)}
    assert seen == {key_name(k) for k in range(50)}


def test_zipf_rejects_an_empty_key_space() -> None:
    with pytest.raises(ValueError, match="n > 0"):
        ZipfCDF(0, 1.1)


@pytest.mark.parametrize(
    ("measured", "bound", "at_least", "verdict"),
    [(12.0, 10, True, "PASS"), (9.9, 10, True, "MISS"), (0.05, 0.1, False, "PASS"),
     (0.2, 0.1, False, "MISS"), (None, 10, True, "NOT MEASURED")],
)
def test_targets_pass_only_on_the_right_side_of_the_bound(
    measured: float | None, bound: float, at_least: bool, verdict: str
) -> None:
    target = Target("t", measured, bound, at_least)
    assert target.verdict == verdict
    assert target.ok is (verdict == "PASS")
