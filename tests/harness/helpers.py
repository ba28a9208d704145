"""What the harness tests share: the seeds the smoke suite and the teeth tests both run."""

from writebehind.harness import FaultPlan, SimulationResult, simulate

#: The smoke suite's plans are ``FaultPlan.buggify(seed)`` for these seeds; the broken-variant
#: tests run the same plans, so a harness that stops catching a variant fails a test.
SMOKE_SEEDS = range(8)
SMOKE_OPERATIONS = 1000


def first_failure(ack: str, variant: str | None = None) -> SimulationResult | None:
    """The first smoke plan whose run FAILs, or None."""
    for seed in SMOKE_SEEDS:
        result = simulate(
            FaultPlan.buggify(seed), ack=ack, operations=SMOKE_OPERATIONS, variant=variant
        )
        if not result.ok:
            return result
    return None
