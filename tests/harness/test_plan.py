"""Fault plans and the injector: printable, seeded, independent per kind."""

import pytest

from writebehind.harness import BASE_RATES, FAULT_KINDS, FaultInjector, FaultPlan


def test_a_plans_repr_is_python_that_rebuilds_it() -> None:
    for seed in range(20):
        plan = FaultPlan.buggify(seed, intensity=1.5)
        assert eval(repr(plan), {"FaultPlan": FaultPlan}) == plan


def test_buggify_is_a_function_of_the_seed_and_switches_kinds_on_and_off() -> None:
    plans = [FaultPlan.buggify(seed) for seed in range(40)]
    assert plans == [FaultPlan.buggify(seed) for seed in range(40)]
    enabled = {kind for plan in plans for kind in plan.kinds}
    assert enabled == set(FAULT_KINDS)  # every kind gets its turn over 40 seeds
    assert all(0 < len(plan.kinds) < len(FAULT_KINDS) for plan in plans)
    for plan in plans:
        for kind, rate in plan.rates:
            assert BASE_RATES[kind] * 0.5 - 1e-6 <= rate <= BASE_RATES[kind] * 2 + 1e-6


def test_intensity_scales_rates_and_zero_turns_everything_off() -> None:
    assert FaultPlan.buggify(3, intensity=0).rates == ()
    low, high = FaultPlan.buggify(3), FaultPlan.buggify(3, intensity=2)
    assert low.kinds == high.kinds
    assert all(high.rate(k) >= low.rate(k) for k in low.kinds)


def test_unknown_kinds_and_bad_rates_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'crash:nowhere'"):
        FaultPlan(1, {"crash:nowhere": 0.1})
    with pytest.raises(ValueError, match=r"rates\['process_crash'\] must be in \[0, 1\], got 2"):
        FaultPlan(1, {"process_crash": 2})


def test_switching_one_kind_on_never_shifts_another_kinds_draws() -> None:
    def draws(plan: FaultPlan) -> list[bool]:
        injector = FaultInjector(plan)
        out = []
        for _ in range(500):
            injector.fire("store.duplicate")
            out.append(injector.fire("process_crash"))
        return out

    alone = draws(FaultPlan(7, {"process_crash": 0.1}))
    together = draws(FaultPlan(7, {"process_crash": 0.1, "store.duplicate": 0.5}))
    assert alone == together and 20 < sum(alone) < 90


def test_the_injector_counts_what_fired_and_goes_quiet_on_request() -> None:
    injector = FaultInjector(FaultPlan(1, {"store.reject": 1.0}))
    assert injector.fire("store.reject") and injector.counts["store.reject"] == 1
    assert not injector.fire("store.slow")  # not in the plan
    injector.quiet = True
    assert not injector.fire("store.reject") and injector.counts["store.reject"] == 1
