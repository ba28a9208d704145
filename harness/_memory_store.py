"""An in-memory store with the same versioned-upsert contract as the real ones.

Non-blocking (called inline by store actors), so a run under ``MockClock`` is deterministic.
Its ``rows`` survive "restarts" of the cache that shares the instance, like a real database.
"""

from __future__ import annotations

from collections.abc import Sequence

from writebehind import Rejection, StoreRecord, StoreUnavailable, Superseded


class MemoryStore:
    """Share one instance across cache restarts; each call to :meth:`factory` is a connection."""

    blocking = False

    def __init__(self) -> None:
        self.rows: dict[str, StoreRecord] = {}
        self.epoch = 0
        self.transactions = 0
        self.connected = False

    def factory(self) -> _Connection:
        return _Connection(self)

    def read_all(self) -> dict[str, StoreRecord]:
        return dict(self.rows)

    def values(self) -> dict[str, bytes]:
        """What a reader of the store sees: live keys and their values."""
        return {k: r.value for k, r in self.rows.items() if r.value is not None}


class _Connection:
    blocking = False

    def __init__(self, db: MemoryStore) -> None:
        self.db = db
        self.open = False

    def connect(self) -> None:
        self.open = True

    def checked(self) -> MemoryStore:
        """The shared store, if this connection is open (StoreUnavailable if not)."""
        if not self.open:
            raise StoreUnavailable("memory store connection is closed")
        return self.db

    def take_epoch(self) -> int:
        db = self.checked()
        db.epoch += 1
        return db.epoch

    def write_batch(self, records: Sequence[StoreRecord]) -> tuple[Rejection | Superseded, ...]:
        """Versioned upserts; a record older than the stored version is answered as
        superseded (as the real stores do), so the shard drops its stale entry."""
        db = self.checked()
        for record in records:
            old = db.rows.get(record.key)
            if old is None or record.version > old.version:
                db.rows[record.key] = record
        db.transactions += 1
        rows = db.rows
        return tuple(
            Superseded(r.key, r.version) for r in records if rows[r.key].version > r.version
        )

    def read(self, key: str) -> StoreRecord | None:
        return self.checked().rows.get(key)

    def read_all(self) -> dict[str, StoreRecord]:
        return dict(self.checked().rows)

    def close(self) -> None:
        self.open = False
