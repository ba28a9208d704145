"""writebehind.harness: fault injection and model-based checking for writebehind."""

from ._memory_store import MemoryStore
from ._model import SURVIVES, Loss, Model, Verdict, Write

__all__ = ["SURVIVES", "Loss", "MemoryStore", "Model", "Verdict", "Write"]
