"""Fault plans: a seeded, printable description of what fails where, and how often.

A plan is data: a seed and a rate per fault *kind* (the probability that the kind fires at each
opportunity it gets). :meth:`FaultPlan.buggify` follows FoundationDB's BUGGIFY: per run, each
kind is switched on or off by a coin flip, and an enabled kind fires with its own rate, so
different seeds explore different combinations instead of drowning in every fault at once.

:class:`FaultInjector` draws a plan's faults during a run. Every kind has its own generator
derived from the seed, so switching one kind on or off never shifts the draws of another.
"""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Iterable, Mapping

import attrs

from writebehind import FAULT_POINTS

#: Crash the actor at a named fault point (opportunity: each time the point is reached).
ACTOR_KINDS: tuple[str, ...] = tuple(f"crash:{point}" for point in FAULT_POINTS)

#: The store misbehaves (opportunity: each store call; see :mod:`._faulty_store`).
STORE_KINDS: tuple[str, ...] = (
    "store.unavailable",  # transient error before anything happened
    "store.applied_then_timeout",  # the transaction committed, then the caller saw an error
    "store.duplicate",  # the batch is delivered (applied) twice
    "store.reorder",  # the batch is held, reported failed, and applied after a later one
    "store.reject",  # one record of the batch is refused for good (quarantine)
    "store.slow",  # the call takes seconds of simulated time
    "store.disconnect",  # the connection drops mid-call
    "store.read_error",  # a read or an epoch request fails transiently
    "store.outage",  # the store is down for 0.3-1.2 s (opportunity: each chaos tick)
)

#: Whole-process and disk events (opportunity: each chaos tick, see ``FaultPlan.tick``).
PROCESS_KINDS: tuple[str, ...] = (
    "process_crash",  # the cache's process dies: no drain, written journal data survives
    "power_loss",  # the machine dies: unsynced journal data is lost, torn or zero-filled
    "crash_loop",  # one actor crashes at every fault point until the supervisor escalates
    "disk.fsync_error",  # the next fdatasync fails with EIO
    "disk.full",  # the disk fills up (ENOSPC) after a few more bytes, once
    "time.jump",  # the clock leaps ahead: every timer fires late
)

#: Damage synced journal data (opportunity: each whole-cache crash): flip one bit, or lose
#: one whole frame from the middle of a log.
CORRUPTION_KINDS: tuple[str, ...] = ("disk.flip_byte", "disk.drop_frame")

#: Cut the power at the journal's durability steps (opportunity: each such disk operation;
#: see :mod:`._disk`).
CUT_KINDS: tuple[str, ...] = (
    "power_loss.before_sync",  # each fdatasync, before it runs
    "power_loss.after_sync",  # each fdatasync, right after it completed
    "power_loss.rotation",  # each segment create, rename, unlink and directory fsync
)

#: Every fault kind a plan can enable: actor, store, process, corruption and power-cut kinds.
FAULT_KINDS: tuple[str, ...] = (
    ACTOR_KINDS + STORE_KINDS + PROCESS_KINDS + CORRUPTION_KINDS + CUT_KINDS
)

#: The rate an enabled kind gets from :meth:`FaultPlan.buggify` at intensity 1.
BASE_RATES: dict[str, float] = {
    **{kind: 0.004 for kind in ACTOR_KINDS},
    "crash:flush.building_batch": 0.02,
    "crash:flush.before_send": 0.02,
    "crash:store.before_commit": 0.02,
    "crash:store.after_commit": 0.02,
    "crash:flush.after_ack_before_checkpoint": 0.02,
    "crash:journal.replay": 0.002,
    "crash:journal.segment_delete": 0.05,
    "store.unavailable": 0.04,
    "store.applied_then_timeout": 0.03,
    "store.duplicate": 0.03,
    "store.reorder": 0.03,
    "store.reject": 0.01,
    "store.slow": 0.03,
    "store.disconnect": 0.02,
    "store.read_error": 0.02,
    "store.outage": 0.08,
    "process_crash": 0.03,
    "power_loss": 0.03,
    "crash_loop": 0.01,
    "disk.fsync_error": 0.02,
    "disk.full": 0.02,
    "time.jump": 0.03,
    "disk.flip_byte": 0.3,
    "disk.drop_frame": 0.15,
    "power_loss.before_sync": 0.004,
    "power_loss.after_sync": 0.004,
    "power_loss.rotation": 0.03,
}
assert set(BASE_RATES) == set(FAULT_KINDS)


def _rates(
    value: Mapping[str, float] | Iterable[tuple[str, float]],
) -> tuple[tuple[str, float], ...]:
    items = dict(value.items() if isinstance(value, Mapping) else value)
    for kind, rate in items.items():
        if kind not in BASE_RATES:
            raise ValueError(
                f"FaultPlan.rates names an unknown fault kind {kind!r}; known: "
                f"{', '.join(FAULT_KINDS)}"
            )
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ValueError(f"FaultPlan.rates[{kind!r}] must be in [0, 1], got {rate!r}")
    return tuple(sorted((k, float(r)) for k, r in items.items() if r > 0))


@attrs.frozen
class FaultPlan:
    """What fails, where, and how often; ``repr(plan)`` is Python that rebuilds it.

    ``rates`` maps fault kinds (:data:`FAULT_KINDS`) to the probability of firing at each
    opportunity; kinds not listed never fire. ``tick`` is how often (simulated seconds) the
    process-level kinds get an opportunity.
    """

    seed: int
    rates: tuple[tuple[str, float], ...] = attrs.field(default=(), converter=_rates)
    tick: float = 0.05

    @classmethod
    def buggify(cls, seed: int, *, intensity: float = 1.0) -> FaultPlan:
        """Each kind on or off by a coin flip of ``seed``; an enabled kind fires at its base
        rate times ``intensity`` times a per-run factor in [0.5, 2]."""
        if not intensity >= 0:
            raise ValueError(f"intensity must be >= 0, got {intensity!r}")
        rng = random.Random(f"buggify/{seed}")
        rates = {}
        for kind in FAULT_KINDS:
            if rng.random() < 0.5:
                factor = rng.uniform(0.5, 2.0)
                rates[kind] = min(1.0, round(BASE_RATES[kind] * intensity * factor, 6))
        return cls(seed, rates)

    @classmethod
    def none(cls, seed: int = 0) -> FaultPlan:
        """A plan that injects nothing (the workload still runs from ``seed``)."""
        return cls(seed)

    @classmethod
    def only(cls, seed: int, *kinds: str, intensity: float = 1.0) -> FaultPlan:
        """Exactly ``kinds``, each at its base rate times ``intensity``."""
        return cls(seed, {k: min(1.0, BASE_RATES.get(k, 0.0) * intensity) for k in kinds})

    def rate(self, kind: str) -> float:
        return dict(self.rates).get(kind, 0.0)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The enabled kinds."""
        return tuple(k for k, _ in self.rates)


class FaultInjector:
    """Draws a plan's faults during one run and counts what fired, by kind.

    Thread-safe: a blocking store calls :meth:`fire` from worker threads. ``quiet`` stops
    every fault (the harness sets it for the final recovery and check).
    """

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.quiet = False
        self.counts: collections.Counter[str] = collections.Counter()
        # Every time a kind *could* have fired (whatever its rate): fault coverage.
        self.opportunities: collections.Counter[str] = collections.Counter()
        self._rates = dict(plan.rates)
        self._rngs: dict[str, random.Random] = {}
        self._lock = threading.Lock()

    def rng(self, name: str) -> random.Random:
        """The generator for ``name``, derived from the plan's seed (one stream per name)."""
        with self._lock:
            rng = self._rngs.get(name)
            if rng is None:
                rng = self._rngs[name] = random.Random(f"{self.plan.seed}/{name}")
            return rng

    def fire(self, kind: str) -> bool:
        """Does ``kind`` fire at this opportunity? Counts it if so."""
        if self.quiet:
            return False
        self.opportunities[kind] += 1
        rate = self._rates.get(kind, 0.0)
        if rate <= 0.0:
            return False
        if self.rng(kind).random() >= rate:
            return False
        self.count(kind)
        return True

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.counts[kind] += n
