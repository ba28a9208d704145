"""writebehind.harness: fault injection and model-based checking for writebehind."""

from ._disk import FaultyDisk, Flip
from ._faulty_store import FaultyStore, StoreFaults
from ._kill import KillResult, run_kill_rounds
from ._memory_store import MemoryStore
from ._model import SURVIVES, Loss, Model, Verdict, Write
from ._plan import (
    ACTOR_KINDS,
    BASE_RATES,
    CORRUPTION_KINDS,
    FAULT_KINDS,
    PROCESS_KINDS,
    STORE_KINDS,
    FaultInjector,
    FaultPlan,
)
from ._simulation import BASE_CONFIG, InjectedFault, SimulationResult, simulate
from ._variants import BROKEN_VARIANTS, BrokenVariant

__all__ = [
    "ACTOR_KINDS",
    "BASE_CONFIG",
    "BASE_RATES",
    "BROKEN_VARIANTS",
    "CORRUPTION_KINDS",
    "FAULT_KINDS",
    "PROCESS_KINDS",
    "STORE_KINDS",
    "SURVIVES",
    "BrokenVariant",
    "CacheMachine",
    "FaultInjector",
    "FaultPlan",
    "FaultyDisk",
    "FaultyStore",
    "Flip",
    "InjectedFault",
    "KillResult",
    "Loss",
    "MemoryStore",
    "Model",
    "SimulationResult",
    "StoreFaults",
    "Verdict",
    "Write",
    "run_kill_rounds",
    "simulate",
]


#: Names imported on first use: they need the ``test`` extra (Hypothesis).
LAZY_NAMES = frozenset({"CacheMachine"})


def __getattr__(name: str) -> object:
    # Lazy: importing the harness (the CLI does) should not import Hypothesis.
    if name == "CacheMachine":
        try:
            from ._machine import CacheMachine
        except ModuleNotFoundError as exc:
            if exc.name != "hypothesis" and not (exc.name or "").startswith("hypothesis."):
                raise
            raise ModuleNotFoundError(
                "writebehind.harness.CacheMachine needs Hypothesis, which is not installed; "
                "install the test extra: pip install 'writebehind[test]'",
                name=exc.name,
            ) from None

        return CacheMachine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
