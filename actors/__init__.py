"""writebehind: a write-behind cache for trio that proves its durability contract.

Writes are acknowledged before the backing store has them (as the ack mode says: in memory,
written to the journal, synced, or committed to the store) and flushed later in batches.
"""

from ._core._config import ACK_MODES, REQUIREMENTS, AckMode, Config
from ._core._errors import (
    CacheClosed,
    ClusterUnavailable,
    ConfigError,
    JournalClosed,
    JournalCorruption,
    JournalError,
    JournalFailed,
    JournalFull,
    JournalLocked,
    LeaseHeld,
    LeaseLost,
    Overloaded,
    PartiallyAcknowledged,
    PartitionMoved,
    PartitionUnavailable,
    Relinquished,
    SchemaMismatch,
    ShardCrashed,
    StoreError,
    StoreFenced,
    StoreRejected,
    StoreUnavailable,
    TooManyRestarts,
    Unstorable,
    WritebehindError,
)
from ._core._messages import (
    BatchFenced,
    Fence,
    FlushBatch,
    FlushRequest,
    Receipt,
    Rejection,
    StoreAck,
    StoreNack,
    StoreRecord,
    Superseded,
)
from ._core._routing import shard_of
from ._core._stats import (
    EVENT_KINDS,
    CacheEvent,
    CacheStatistics,
    ClusterStatistics,
    LatencyStatistics,
    PartitionLeaseStatistics,
    ShardStatistics,
    StoreStatistics,
)
from ._inspector._metrics import CacheCollector, MetricsServer, serve_metrics
from ._inspector._server import ChaosControl, InspectorServer, InspectorStatistics, serve_inspector
from ._open import open_cache, serve_cache
from ._runtime._cache import Cache
from ._runtime._recover import RecoverReport, recover_journals
from ._runtime._seams import FAULT_POINTS, FaultPointHook, Seams
from ._stores._protocol import Store
from ._stores._sqlite import SQLiteStore

__all__ = [
    "ACK_MODES",
    "EVENT_KINDS",
    "FAULT_POINTS",
    "REQUIREMENTS",
    "AckMode",
    "BatchFenced",
    "Cache",
    "CacheClosed",
    "CacheCollector",
    "CacheEvent",
    "CacheStatistics",
    "ChaosControl",
    "ClusterStatistics",
    "ClusterUnavailable",
    "Config",
    "ConfigError",
    "FaultPointHook",
    "Fence",
    "FlushBatch",
    "FlushRequest",
    "InspectorServer",
    "InspectorStatistics",
    "JournalClosed",
    "JournalCorruption",
    "JournalError",
    "JournalFailed",
    "JournalFull",
    "JournalLocked",
    "LatencyStatistics",
    "LeaseHeld",
    "LeaseLost",
    "MetricsServer",
    "Overloaded",
    "PartiallyAcknowledged",
    "PartitionLeaseStatistics",
    "PartitionMoved",
    "PartitionUnavailable",
    "Receipt",
    "RecoverReport",
    "Rejection",
    "Relinquished",
    "SQLiteStore",
    "SchemaMismatch",
    "Seams",
    "ShardCrashed",
    "ShardStatistics",
    "Store",
    "StoreAck",
    "StoreError",
    "StoreFenced",
    "StoreNack",
    "StoreRecord",
    "StoreRejected",
    "StoreStatistics",
    "StoreUnavailable",
    "Superseded",
    "TooManyRestarts",
    "Unstorable",
    "WritebehindError",
    "open_cache",
    "recover_journals",
    "serve_cache",
    "serve_inspector",
    "serve_metrics",
    "shard_of",
]

__version__ = "0.1.0"

# Public names say they live here, so tracebacks and reprs point users at the public path.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("writebehind._"):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
