"""A store wrapper that misbehaves as a plan says, over any :class:`writebehind.Store`.

Every fault keeps the contract a real database and network keep: a transaction either
committed or not, but the *caller* may not learn which (a timeout after the commit, a batch
still on the wire that lands after a later one, a duplicate delivery). Only
``store.reject`` refuses a record, and it refuses that exact ``(key, version)`` for good, on
every connection, as a constraint in the database would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from writebehind import Rejection, Store, StoreRecord, StoreUnavailable
from writebehind._stores._protocol import WriteOutcome

from ._plan import FaultInjector

#: How long ``store.slow`` stalls a call, in seconds (simulated, or real for blocking stores).
SLOW_SECONDS = (0.2, 3.0)


class InjectedStoreError(StoreUnavailable):
    """A store failure the plan injected: a :class:`StoreUnavailable` to the runtime, and one
    the simulation can tell from a failure of the runtime's own making."""


class StoreFaults:
    """What all connections of one faulty store share: the injector, batches held on the
    "wire" (``store.reorder``) and the records refused for good."""

    def __init__(
        self,
        injector: FaultInjector,
        *,
        pause: Callable[[float], None] | None = None,
        latency: tuple[float, float] | None = None,
    ) -> None:
        self.injector = injector
        self.pause = pause
        # (low, high) seconds each call of a non-blocking store spends on the wire, healthy
        # or not: batches are in flight, and reads overlap writes, for that long.
        self.latency = latency
        self._latency_rng = injector.rng("store.latency")
        self.held: list[tuple[StoreRecord, ...]] = []
        self.outage = False  # while set, every write fails: the store is down
        self.poisoned: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._rng = injector.rng("store.choices")

    def draw_latency(self) -> float:
        """Seconds one call spends on the wire: mostly ``latency``'s range, and one call in
        twenty is slow (a busy server, a lost packet), 20-100 ms, long enough for a write,
        its flush and an eviction of the same key to happen meanwhile."""
        assert self.latency is not None
        rng = self._latency_rng
        if rng.random() < 0.05:
            return rng.uniform(0.02, 0.1)
        return rng.uniform(*self.latency)

    def wrap(self, store: Store) -> FaultyStore:
        """Use as ``Seams(wrap_store=faults.wrap)``."""
        return FaultyStore(store, self)

    def take_held(self) -> list[tuple[StoreRecord, ...]]:
        with self._lock:
            held, self.held = self.held, []
        return [self.unpoisoned(batch) for batch in held]

    def unpoisoned(self, records: Sequence[StoreRecord]) -> tuple[StoreRecord, ...]:
        return tuple(r for r in records if (r.key, r.version) not in self.poisoned)

    def deliver_held(self, store: Store) -> int:
        """Land every held batch through ``store`` (connected); returns how many."""
        held = self.take_held()
        for batch in held:
            if batch:
                store.write_batch(batch)
        return len(held)

    def hold(self, records: Sequence[StoreRecord]) -> None:
        """Keep a batch on the "wire" (``store.reorder``): it lands after a later one."""
        with self._lock:
            self.held.append(tuple(records))

    def poison_one(self, records: Sequence[StoreRecord]) -> None:
        """Refuse one of ``records`` for good from now on (``store.reject``)."""
        victim = self._rng.choice(list(records))
        with self._lock:
            self.poisoned.add((victim.key, victim.version))

    def stall(self, blocking: bool) -> None:
        """Hold a call up for a while (``store.slow``): simulated time, or a short real
        stall for a blocking store."""
        seconds = self._rng.uniform(*SLOW_SECONDS)
        if self.pause is not None:
            self.pause(seconds)
        elif blocking:
            time.sleep(min(seconds, 0.05))  # a real stall, kept short for test suites


class FaultyStore:
    """A :class:`writebehind.Store` that injects the plan's ``store.*`` faults."""

    def __init__(self, inner: Store, faults: StoreFaults) -> None:
        self.inner = inner
        self.faults = faults
        self.blocking = inner.blocking
        self.limits = getattr(inner, "limits", None)  # what the cache checks before acking
        if faults.latency is not None and not inner.blocking:
            self.latency = faults.draw_latency

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r})"

    def connect(self) -> None:
        self.inner.connect()

    def close(self) -> None:
        self.inner.close()

    def _read_fault(self, what: str) -> None:
        if self.faults.outage:
            raise InjectedStoreError(f"{what} failed: the store is down (store.outage)")
        if self.faults.injector.fire("store.read_error"):
            raise InjectedStoreError(f"injected: {what} failed (store.read_error)")

    def take_epoch(self) -> int:
        self._read_fault("take_epoch")
        return self.inner.take_epoch()

    def read(self, key: str) -> StoreRecord | None:
        self._read_fault(f"read of {key!r}")
        return self.inner.read(key)

    def read_all(self) -> dict[str, StoreRecord]:
        return self.inner.read_all()

    def write_batch(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        faults = self.faults
        if faults.outage:
            raise InjectedStoreError("the store is down (store.outage)")
        fire = faults.injector.fire
        if fire("store.disconnect"):
            self.inner.close()
            raise InjectedStoreError("injected: the connection dropped (store.disconnect)")
        if fire("store.unavailable"):
            raise InjectedStoreError("injected: the store is unavailable (store.unavailable)")
        if fire("store.slow"):
            faults.stall(self.blocking)
        if fire("store.reorder"):
            faults.hold(records)
            raise InjectedStoreError(
                "injected: timed out while the batch is still on its way (store.reorder)"
            )
        if records and fire("store.reject"):
            faults.poison_one(records)
        refused = tuple(
            Rejection(r.key, r.version, "injected: refused for good (store.reject)")
            for r in records
            if (r.key, r.version) in faults.poisoned
        )
        accepted = faults.unpoisoned(records)
        rejected = self.inner.write_batch(accepted)
        if fire("store.duplicate"):
            rejected = self.inner.write_batch(accepted)
        # Batches held on the wire land after this later one: the reordering.
        for batch in faults.take_held():
            if batch:
                self.inner.write_batch(batch)
        if fire("store.applied_then_timeout"):
            raise InjectedStoreError(
                "injected: the commit happened but its answer was lost "
                "(store.applied_then_timeout)"
            )
        return tuple(rejected) + refused
