"""pytest plugin (entry point ``pytest11``): fixtures for testing code that embeds writebehind.

Loaded in every pytest run of anyone who installs writebehind, so importing it costs nothing:
writebehind, trio and Hypothesis are imported only when a fixture is used.

- ``--writebehind-seed=N``: the seed of the fault plan (random when not given); a failing test
  prints it, so ``pytest --writebehind-seed=N`` replays the same faults.
- ``writebehind_seed``: that seed. ``writebehind_fault_plan``: ``FaultPlan.buggify(seed)``.
- ``writebehind_cache``: an async fixture (pytest-trio) giving a running cache on
  ``tmp_path`` (SQLite store, real journal) whose actors crash and whose store fails as that
  plan says; your code must treat ``ShardCrashed``/``StoreUnavailable`` as "maybe happened".
- ``CacheMachine``: re-exported for subclassing (``from writebehind.harness.pytest_plugin
  import CacheMachine`` or ``from writebehind.harness import CacheMachine``).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from writebehind import Cache
    from writebehind.harness import FaultPlan

_SEED_KEY = pytest.StashKey[int]()

#: ``writebehind_cache`` injects faults this much less often than a simulation does: a user's
#: test exercises its own code under a few faults, not the runtime under hundreds.
CACHE_FIXTURE_INTENSITY = 0.25


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("writebehind", "writebehind fault injection")
    group.addoption(
        "--writebehind-seed",
        type=int,
        default=None,
        help="seed of the writebehind fault plan (default: a random one, printed on failure)",
    )


def pytest_configure(config: pytest.Config) -> None:
    seed = config.getoption("--writebehind-seed", default=None)
    config.stash[_SEED_KEY] = seed if seed is not None else random.SystemRandom().randrange(2**32)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    fixtures = getattr(item, "fixturenames", ())
    if report.failed and any(name.startswith("writebehind_") for name in fixtures):
        seed = item.config.stash[_SEED_KEY]
        report.sections.append(
            ("writebehind", f"fault plan seed {seed}: rerun with --writebehind-seed={seed}")
        )
    return report


@pytest.fixture
def writebehind_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this run's fault plan (``--writebehind-seed``)."""
    return request.config.stash[_SEED_KEY]


@pytest.fixture
def writebehind_fault_plan(writebehind_seed: int) -> FaultPlan:
    """``FaultPlan.buggify(seed)``: which faults are on for this run, and how often."""
    from writebehind.harness import FaultPlan

    return FaultPlan.buggify(writebehind_seed)


@pytest.fixture
async def writebehind_cache(
    writebehind_fault_plan: FaultPlan, tmp_path: Path
) -> AsyncIterator[Cache]:
    """A running cache on ``tmp_path`` under the plan's actor and store faults."""
    from writebehind import Config, Seams, open_cache
    from writebehind.harness import FaultInjector, FaultPlan, StoreFaults
    from writebehind.harness._plan import ACTOR_KINDS, STORE_KINDS

    rates = {
        kind: rate * CACHE_FIXTURE_INTENSITY
        for kind, rate in writebehind_fault_plan.rates
        if kind in ACTOR_KINDS + STORE_KINDS
    }
    injector = FaultInjector(FaultPlan(writebehind_fault_plan.seed, rates))
    faults = StoreFaults(injector)

    def fault_point(point: str, actor: str) -> None:
        if injector.fire(f"crash:{point}"):
            from writebehind.harness import InjectedFault

            raise InjectedFault(f"injected crash of {actor} at {point}")

    config = Config(
        store=f"sqlite:///{tmp_path / 'store.db'}",
        journal_dir=tmp_path / "journal",
        flush_interval=0.05,
        retry_initial=0.01,
        retry_max=0.2,
        max_restarts=50,
    )
    seams = Seams(fault_point=fault_point, wrap_store=faults.wrap)
    async with open_cache(config, seams=seams) as cache:
        yield cache


def __getattr__(name: str) -> Any:
    # Lazy, so that loading the plugin never imports Hypothesis.
    if name == "CacheMachine":
        from writebehind.harness._machine import CacheMachine

        return CacheMachine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
