"""writebehind.harness: fault injection and model-based checking for writebehind."""

from ._memory_store import MemoryStore

__all__ = ["MemoryStore"]
