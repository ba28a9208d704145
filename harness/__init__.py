"""writebehind.harness: fault injection and model-based checking for writebehind."""

from ._disk import FaultyDisk, Flip
from ._faulty_store import FaultyStore, StoreFaults
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
    "FaultInjector",
    "FaultPlan",
    "FaultyDisk",
    "FaultyStore",
    "Flip",
    "InjectedFault",
    "Loss",
    "MemoryStore",
    "Model",
    "SimulationResult",
    "StoreFaults",
    "Verdict",
    "Write",
    "simulate",
]
