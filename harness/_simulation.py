"""The seeded in-process simulation: a workload under a fault plan, checked against the model.

One ``trio.run`` under ``MockClock(autojump_threshold=0)`` with a store (the in-memory
:class:`MemoryStore`, or the real SQLite or PostgreSQL store called inline, see
:mod:`._audit`) and an in-memory disk (:class:`FaultyDisk`) that both survive restarts of the
cache, like a database and a disk survive a process. Each *incarnation* of the cache runs
writer tasks (each owns its keys, so writes to one key are issued one at a time), reader tasks
(reads of any key, overlapping its writes) and a chaos task, until the operations are done or
the chaos task kills the process (cancels the nursery running ``serve_cache``: no drain) or
cuts the power (that plus ``disk.crash(mode)``; the disk also cuts it at sync boundaries).

What is checked, and when:

- every read as it returns (read-your-writes, monotonic reads: :class:`Model`);
- every acknowledged put at once: in ``ack="fsync"`` its journal record must already be in
  synced data under synced names, in ``ack="journal"`` in written data (the ack-before-sync
  detector), unless the store already holds it;
- every store batch: a key's stored version never goes backwards (:class:`StoreAudit`);
- once per run, a *liveness phase*: faults stop, the store heals, and without a restart
  ``flush()`` must return and the store must then hold every acknowledged write;
- at the end: the cache restarts (sometimes with one more shard, so keys move), every key is
  read back, ``flush()`` must leave the store complete, then fresh writes and a clean close
  (the drain must leave the store complete), and fresh writes and a close while the store is
  down (the drain times out, the journal must keep them for the next start).

How a flipped journal byte is handled: the next start must fail with ``JournalCorruption``
(counted as ``corruption_detected``); the harness then restores the byte, as an operator would
from a replica, and starts again, so a detected corruption never counts as a loss. A start
that *succeeds* over a flipped byte is an undetected corruption: a problem, so the run fails.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from writebehind import (
    Cache,
    CacheEvent,
    Config,
    JournalCorruption,
    JournalError,
    JournalFull,
    Overloaded,
    PartiallyAcknowledged,
    Receipt,
    Seams,
    StoreRejected,
    StoreUnavailable,
    TooManyRestarts,
    Unstorable,
    serve_cache,
)
from writebehind._cli._recover import recover_with_config
from writebehind._core._errors import UNCERTAIN_OUTCOME, leaves
from writebehind._journal._fs import CRASH_MODES, CrashMode, SimulatedCrash

from ._audit import STORE_REFUSED_KEY, SimStore, open_sim_store
from ._disk import FaultyDisk, InjectedDiskError
from ._faulty_store import InjectedStoreError, StoreFaults
from ._model import Loss, Model, Verdict
from ._plan import FaultInjector, FaultPlan
from ._trio_scheduler import seeded_trio_scheduler

WRITERS = 4
READERS = 4
KEYS_PER_WRITER = 6
THINK_TIME = 0.004  # mean simulated seconds between a writer's operations
STRANDED_LIMIT = 2.0  # simulated seconds of writes before the host fails (final phase)
NO_PROGRESS_LIMIT = 30.0  # simulated seconds without a finished write: a liveness failure
FINAL_FLUSH_LIMIT = 600.0
LIVENESS_LIMIT = 120.0  # simulated seconds for flush() to return once faults stop
MAX_FAILED_STARTS = 40
STORE_LATENCY = (0.0002, 0.004)  # simulated seconds each store call spends on the wire
SYNC_LATENCY = 0.001  # mean simulated seconds an fdatasync takes

#: The config every simulation starts from: small batches, segments and limits, so flushing,
#: rotation, checkpoints, eviction and backpressure all happen within a few thousand writes.
BASE_CONFIG: dict[str, Any] = {
    "store": "sqlite:///unused-the-simulation-uses-a-memory-store.db",
    "flush_interval": 0.05,
    "batch_size": 16,
    "flush_threshold": 16,
    "max_inflight_batches": 2,
    "max_dirty": 64,
    "max_entries": 16,
    "segment_bytes": 4096,
    "journal_sync_interval": 0.05,
    "retry_initial": 0.01,
    "retry_max": 0.5,
    "max_restarts": 5,
    "restart_period": 2.0,
    "drain_timeout": 5.0,
}


class InjectedFault(Exception):
    """Raised at a fault point by the harness: the actor there crashes."""


@attrs.frozen
class SimulationResult:
    """What one :func:`simulate` run found. ``ok`` is the pass/fail answer."""

    seed: int
    ack: str
    plan: FaultPlan
    operations: int
    verdict: Verdict
    faults: Mapping[str, int]
    recoveries: int
    read_violations: tuple[Loss, ...]
    quarantined: tuple[str, ...]
    events: Mapping[str, int] = attrs.Factory(dict)
    problems: tuple[str, ...] = ()
    variant: str | None = None
    store: str = "memory"
    #: how often each fault kind had a chance to fire (fault coverage)
    opportunities: Mapping[str, int] = attrs.Factory(dict)

    @property
    def ok(self) -> bool:
        """No acknowledged write lost where the ack mode forbids it, no read that missed one,
        no undetected corruption, no hang."""
        return self.verdict.ok and not self.read_violations and not self.problems

    @property
    def label(self) -> str:
        if self.problems or self.read_violations:
            return "FAIL"
        return self.verdict.label

    def report(self) -> str:
        """A few lines for a human; the first names the plan so the run can be replayed."""
        v = self.verdict
        variant = f", variant={self.variant!r}" if self.variant else ""
        store = f", store={self.store!r}" if self.store != "memory" else ""
        lines = [
            f"{self.label}: simulate({self.plan!r}, ack={self.ack!r}, "
            f"operations={self.operations}{store}{variant})",
            f"  acked={v.acked} uncertain={v.uncertain} crashes={dict(v.crashes)} "
            f"recoveries={self.recoveries} lost={len(v.lost)} "
            f"read_violations={len(self.read_violations)} quarantined={len(self.quarantined)}",
            f"  faults={dict(sorted(self.faults.items()))}",
            f"  events={dict(sorted(self.events.items()))}",
        ]
        lines += [f"  lost {loss!r}" for loss in v.lost[:5]]
        lines += [f"  read {loss!r}" for loss in self.read_violations[:5]]
        lines += [f"  problem: {p}" for p in self.problems[:5]]
        return "\n".join(lines)


def simulate(
    plan: FaultPlan,
    *,
    ack: str = "fsync",
    operations: int = 2000,
    shards: int = 2,
    config: Mapping[str, Any] | None = None,
    variant: str | Callable[[], AbstractContextManager[Any]] | None = None,
    store: str = "memory",
) -> SimulationResult:
    """Run ``operations`` writes and reads under ``plan``; deterministic for a given plan.

    ``config`` overrides fields of :data:`BASE_CONFIG`. ``variant`` runs a deliberately broken
    runtime (a name from :data:`writebehind.harness.BROKEN_VARIANTS`, or a context manager
    factory that patches the runtime for the run). ``store`` is ``"memory"`` (fastest),
    ``"sqlite"`` (the real SQLite store, a fresh file) or a ``postgresql://`` URL (the real
    PostgreSQL store, a fresh table that is dropped afterwards: use a scratch database).
    """
    from ._variants import BROKEN_VARIANTS

    if isinstance(variant, str):
        patch: Callable[[], AbstractContextManager[Any]] = BROKEN_VARIANTS[variant].patch
        name: str | None = variant
    elif variant is not None:
        patch, name = variant, getattr(variant, "__name__", repr(variant))
    else:
        patch, name = contextlib.nullcontext, None
    # Half the runs on a real store refuse a key for good (the other half can change the
    # shard count, which a journal holding a refused record prevents).
    with tempfile.TemporaryDirectory(prefix="writebehind-sim-") as tmp, open_sim_store(
        store, refuse=plan.seed % 2 == 0
    ) as sim_store, patch(), seeded_trio_scheduler(f"trio/{plan.seed}"), quiet_runtime_logs():
        sim = _Simulation(
            plan, ack, operations, shards, dict(config or {}), Path(tmp), name, sim_store,
            store,
        )
        _RUNNING.append(sim)
        try:
            return trio.run(sim.run, clock=trio.testing.MockClock(autojump_threshold=0))
        finally:
            _RUNNING.remove(sim)


#: The simulations running in this thread's process, innermost last (for :func:`progress`).
_RUNNING: list[_Simulation] = []


def progress() -> tuple[float, int, int, int] | None:
    """A marker of the running simulation's progress, or None if none runs.

    It changes whenever simulated time moves, an operation finishes, the journal's disk is
    written or the store takes a batch; a watchdog that sees it unchanged for seconds of
    wall time has found a livelock or a deadlock, not a slow machine."""
    if not _RUNNING:
        return None
    sim = _RUNNING[-1]
    now = sim.clock.current_time() if sim.clock is not None else 0.0
    return (now, sim.finished_ops, sim.disk.ops, sim.store.audit.batches)


def stuck_report() -> str:
    """What the running simulation was doing, for a hang report."""
    if not _RUNNING:
        return "no simulation running"
    sim = _RUNNING[-1]
    now = sim.clock.current_time() if sim.clock is not None else 0.0
    return (
        f"simulated time stuck at t={now:.3f}, {sim.finished_ops} of {sim.operations} "
        f"operations finished, {sim.active_ops} in progress, liveness phase "
        f"{len(sim.liveness_at)} pending"
    )


@contextlib.contextmanager
def quiet_runtime_logs() -> Iterator[None]:
    """Silence the runtime's warnings: injected faults make it warn hundreds of times per run,
    and the result (or the verdict table) says it all."""
    logger = logging.getLogger("writebehind")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Simulation:
    def __init__(
        self,
        plan: FaultPlan,
        ack: str,
        operations: int,
        shards: int,
        overrides: dict[str, Any],
        tmp: Path,
        variant: str | None,
        sim_store: SimStore,
        store_name: str,
    ) -> None:
        self.plan = plan
        self.ack = ack
        self.operations = operations
        self.variant = variant
        self.store_name = store_name
        self.injector = FaultInjector(plan)
        self.disk = FaultyDisk(seed=plan.seed, injector=self.injector,
                               on_power_cut=self._power_cut, sync_pause=self._sync_pause,
                               on_inconsistent=self._inconsistent)
        self._sync_rng = self.injector.rng("disk.latency")
        self.store = sim_store
        self.store_faults = StoreFaults(self.injector, pause=self._pause, latency=STORE_LATENCY)
        self.model = Model(ack)
        self.config = Config(
            **{**BASE_CONFIG, "journal_dir": tmp / "journal", "ack": ack, "shards": shards,
               "seed": plan.seed, **overrides}
        )
        self.journal_root = str(self.config.journal_dir)
        self.seams = Seams(
            fault_point=self._fault_point,
            wrap_store=self.store_faults.wrap,
            filesystem=self.disk,
            store_factory=self.store.factory,
        )
        self.writer_rngs = [self.injector.rng(f"writer/{w}") for w in range(WRITERS)]
        self.reader_rngs = [self.injector.rng(f"reader/{r}") for r in range(READERS)]
        self.chaos_rng = self.injector.rng("chaos")
        self.final_rng = self.injector.rng("final")
        self.keys = [_key(w, k) for w in range(WRITERS) for k in range(KEYS_PER_WRITER)]
        # Keys the store could never hold, whatever the plan (PostgreSQL's text has no NUL):
        # the cache refuses their writes before acknowledging them (Unstorable), so none is
        # acknowledged, journaled or in the store. Any other key must never be refused so.
        self.unstorable = (
            {k for k in self.keys if "\0" in k} if sim_store.kind == "postgresql" else set()
        )
        # Keys the store itself refuses for good (a constraint on the PostgreSQL table): their
        # writes are acknowledged, then quarantined, never in the store.
        self.store_refuses = {STORE_REFUSED_KEY} if sim_store.refuses else set()
        assert self.store_refuses <= set(self.keys)
        self.started_ops = 0
        self.finished_ops = 0
        self.active_ops = 0
        self.last_progress = 0.0
        self.events: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.last_start_injected = False
        self.read_violations: list[Loss] = []
        self.loop_actor: str | None = None
        self.pending_crash: tuple[str, CrashMode | None] | None = None
        self.scope: trio.CancelScope | None = None
        self.clock: trio.testing.MockClock | None = None
        # Liveness phases: at three points of the workload (in whichever incarnation is alive
        # there), and soon after each store outage ends.
        self.liveness_at = sorted(
            int(operations * self.final_rng.uniform(low, low + 0.2)) for low in (0.1, 0.4, 0.7)
        )
        self.liveness_due = trio.Event()
        self.flushing: float | None = None  # when the flusher's flush() in progress began
        self.hold: trio.Event | None = None  # set while the workload is paused
        self.verdict: Verdict | None = None
        self.outage_until: float | None = None  # while the store is down (store.outage)
        self.last_start_error = ""

    # -- hooks the runtime calls ---------------------------------------------------------------

    def _pause(self, seconds: float) -> None:
        # A slow store call: from the runtime's point of view, time passes during it.
        if self.clock is not None:
            self.clock.jump(seconds)

    def _inconsistent(self, what: str) -> None:
        if not any(p.startswith("crash consistency") for p in self.problems):
            self.problems.append(f"crash consistency: {what} (at t={trio.current_time():.3f})")

    def _sync_pause(self) -> None:
        # An fdatasync takes time: whatever woke meanwhile (writers appending) runs right
        # after it, as it would beside a real one in a worker thread.
        self._pause(self._sync_rng.expovariate(1 / SYNC_LATENCY))

    def _fault_point(self, point: str, actor: str) -> None:
        if self.loop_actor == actor and not self.injector.quiet:
            self.injector.count("crash_loop.crashes")
            raise InjectedFault(f"crash loop: {actor} crashes at {point}")
        if self.injector.fire(f"crash:{point}"):
            raise InjectedFault(f"injected crash of {actor} at {point}")

    def _power_cut(self, mode: CrashMode) -> None:
        # The disk cut the power at a sync boundary: the process dies with it.
        if self.pending_crash is None or self.pending_crash[0] != "power":
            self.pending_crash = ("power", mode)
        if self.scope is not None:
            self.scope.cancel()

    def _on_event(self, event: CacheEvent) -> None:
        if event.kind == "crash" and event.actor.startswith("shard-"):
            # Whatever crashed it (a fault point, a failed fsync, a failed epoch request): in
            # ack='memory' a restarted shard loses what its journal had not written yet.
            self.model.crash("actor", event.time)

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> SimulationResult:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, trio.testing.MockClock), "simulate() runs it under MockClock"
        self.clock = clock
        failed_starts = 0
        injected = True  # every failed start of the streak failed of an injected fault alone
        # A run that found a problem stops its workload there: more of it proves nothing more
        # (a hung pipeline would only spend wall time), and the end of the run still runs.
        while self.started_ops < self.operations and not self.problems:
            started = await self._incarnation()
            failed_starts = 0 if started else failed_starts + 1
            injected = started or (injected and self.last_start_injected)
            if failed_starts >= MAX_FAILED_STARTS:
                if self.injector.quiet:  # no fault left to blame: it will never start
                    self.problems.append(
                        f"the cache cannot start even with every fault stopped "
                        f"({self.last_start_error})"
                    )
                    break
                if injected:
                    # The plan alone kept it down (a per-record replay fault over a long
                    # journal fires on nearly every start): not the runtime's doing.
                    self.events["starts_blocked_by_faults"] += 1
                else:
                    self.problems.append(
                        f"the cache failed to start {failed_starts} times in a row; faults "
                        f"stopped ({self.last_start_error})"
                    )
                self.injector.quiet = True
                failed_starts = 0
        return await self._final()

    async def _incarnation(self) -> bool:
        """One life of the cache; returns whether it started."""
        self.loop_actor = None
        self.pending_crash = None
        cache = None
        error: BaseException | None = None
        try:
            found = self.disk.sizes(self.journal_root)
            torn = self.disk.torn_copies(self.journal_root)
            async with trio.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                cache = await nursery.start(_serve, self.config, self.seams)
                cache.add_listener(self._on_event)
                self._check_flips_detected()
                self._check_recovery_durable(found, torn)
                nursery.start_soon(self._chaos, nursery.cancel_scope)
                nursery.start_soon(self._liveness, cache)
                nursery.start_soon(self._flusher, cache)
                async with trio.open_nursery() as workload:
                    for w in range(WRITERS):
                        workload.start_soon(self._writer, w, cache)
                    for r in range(READERS):
                        workload.start_soon(self._reader, r, cache)
                if self.pending_crash is None and self._ends_with_crash():
                    nursery.cancel_scope.cancel()
                else:
                    await cache.aclose()
                    nursery.cancel_scope.cancel()
        except BaseException as exc:  # sorted by _classify
            error = exc
        finally:
            self.scope = None
            # A store outage ends with the process (a start needs the store for its epoch).
            self.store_faults.outage, self.outage_until = False, None
        now = trio.current_time()
        if cache is not None:
            self._count_restarts(cache)
        if error is not None:
            damaged = bool(self.disk.flips)  # (_classify restores them)
            self._classify(error)
            if cache is None:
                self.last_start_error = _describe(error)
                # A start cut by a planned power loss, disk or store error (or an escalation
                # over them), or refused over bytes the plan flipped, failed of the plan too.
                self.last_start_injected = all(
                    _planned(leaf) or (damaged and isinstance(leaf, JournalCorruption))
                    for leaf in leaves(error, skip=trio.Cancelled)
                )
        if self.pending_crash is not None:
            kind, mode = self.pending_crash
            self.model.crash("power" if kind == "power" else "process", now)
            self.events["cache_restarts"] += 1
            if mode is not None:
                self.disk.crash(mode)
            if self.injector.fire("disk.flip_byte"):
                if self.disk.flip_detectable(self.journal_root, self.chaos_rng) is None:
                    self.events["flip_byte.no_target"] += 1
            elif self.injector.fire("disk.drop_frame"):
                if self.disk.drop_frame_detectable(self.journal_root, self.chaos_rng) is None:
                    self.events["drop_frame.no_target"] += 1
        elif error is not None:
            self.model.crash("process", now)
            self.events["cache_restarts"] += 1
        return cache is not None

    def _ends_with_crash(self) -> bool:
        """A plan with crashes ends its workload with one, so what the last writes left
        behind is checked too (a clean drain at the end would hide a lost tail)."""
        kinds = [k for k in ("power_loss", "process_crash") if self.plan.rate(k) > 0]
        if not kinds or self.injector.quiet:
            return False
        kind = self.chaos_rng.choice(kinds)
        self.injector.count(kind)
        if kind == "power_loss":
            mode = self.chaos_rng.choice(CRASH_MODES)
            self.injector.count(f"power_loss:{mode}")
            self.pending_crash = ("power", mode)
        else:
            self.pending_crash = ("process", None)
        return True

    def _count_restarts(self, cache: Cache) -> None:
        stats = cache.statistics()
        self.events["actor_restarts"] += sum(s.restarts for s in stats.shards) + sum(
            s.restarts for s in stats.stores
        )

    def _classify(self, error: BaseException) -> None:
        for leaf in leaves(error, skip=trio.Cancelled):
            if isinstance(leaf, KeyboardInterrupt | SystemExit):
                raise error
            if isinstance(leaf, TooManyRestarts):
                self.events["escalations"] += 1
            elif isinstance(leaf, JournalCorruption):
                if self.disk.flips:
                    self.events["corruption_detected"] += 1
                    self.disk.restore_flips()
                else:
                    self.problems.append(f"JournalCorruption with no byte flipped: {leaf}")
            elif isinstance(
                leaf, InjectedFault | StoreUnavailable | JournalError | OSError | SimulatedCrash
            ):
                self.events["failed_starts"] += 1
            else:
                self.problems.append(f"the cache died of {type(leaf).__name__}: {leaf}")

    def _check_flips_detected(self) -> None:
        if self.disk.flips:
            self.problems.append(
                f"the cache started over a flipped journal byte: {self.disk.flips[0]!r}"
            )
            self.disk.restore_flips()

    def _check_recovery_durable(self, found: dict[str, int], torn: dict[str, bytes]) -> None:
        """What recovery found and replays is durable before the cache serves it: a later
        power loss must not take back what a read has already returned."""
        unsynced = self.disk.unsynced(self.journal_root, found, torn)
        if unsynced:
            self.problems.append(
                f"after recovery the journal is not all durable: {'; '.join(unsynced[:3])}"
            )

    def _quiet(self) -> None:
        """Stop every fault; batches held on the wire land now."""
        self.injector.quiet = True
        self.loop_actor = None
        self.disk.clear_faults()
        self.store_faults.outage, self.outage_until = False, None
        connection = self.store.factory()
        connection.connect()
        try:
            self.store_faults.deliver_held(connection)
        finally:
            connection.close()

    def _check_store(self, when: str, cache: Cache | None = None) -> None:
        """The store, read directly, must hold every acknowledged write now."""
        # Refused for good: quarantined (a closed cache no longer lists its quarantine; the
        # liveness phase checks that the cache did quarantine each refusal).
        quarantined = self._refused_keys()
        if cache is not None:
            quarantined |= {key for key, _v, _r in cache.quarantined()}
        for loss in self._store_verdict(quarantined).lost:
            if not self.model.excused(loss.key):
                self.problems.append(f"{when}, the store lacks an acknowledged write: {loss!r}")
                return

    async def _liveness(self, cache: Cache) -> None:
        """Faults stop and the store heals: without a restart, ``flush()`` must return (and so
        must a flush the flusher started while faults ran), and the store must then hold
        every acknowledged write."""
        while True:
            while not self.liveness_due.is_set() and (
                not self.liveness_at or self.started_ops < self.liveness_at[0]
            ):
                with trio.move_on_after(self.plan.tick):
                    await self.liveness_due.wait()
            if self.pending_crash is not None:
                return
            await self._liveness_phase(cache)
            await trio.sleep(self.plan.tick)  # never a tight loop, whatever the phase met

    async def _liveness_phase(self, cache: Cache) -> None:
        self.hold = hold = trio.Event()
        try:
            with trio.move_on_after(LIVENESS_LIMIT) as limit:
                self._quiet()  # first: operations in flight may wait on the store to heal
                while self.active_ops:
                    await trio.sleep(0.01)
                await cache.flush()
                while self.flushing is not None:
                    await trio.sleep(0.01)
            if limit.cancelled_caught:
                waiting = (
                    f"a flush() started at t={self.flushing:.3f} while faults ran"
                    if self.flushing is not None else "flush()"
                )
                self.problems.append(
                    f"liveness: with every fault stopped, {waiting} did not return within "
                    f"{LIVENESS_LIMIT:g}s of simulated time ({_stuck(cache)})"
                )
                # Writers may be stuck behind the same wait (backpressure): kill the process,
                # or the workload would never end.
                if self.scope is not None and self.pending_crash is None:
                    self.pending_crash = ("process", None)
                    self.scope.cancel()
            else:
                self._check_store("liveness: once faults stopped and flush() returned", cache)
                self._check_refusals_quarantined("liveness", cache)
                await self._check_coherent(cache)
            if self.liveness_at and self.started_ops >= self.liveness_at[0]:
                self.liveness_at.pop(0)
            self.liveness_due = trio.Event()
            self.events["liveness_checks"] += 1
        except UNCERTAIN_OUTCOME:
            pass  # the cache was already going down (an escalation): the next life tries
        finally:
            self.injector.quiet = False
            self.hold = None
            hold.set()

    def _refused_keys(self) -> set[str]:
        """Keys with a write the store refused for good (injected, or by the table itself)."""
        return {key for key, _version in self.store_faults.poisoned} | self.store_refuses

    async def _check_coherent(self, cache: Cache) -> None:
        """Once quiet and flushed, the cache serves what the store holds, key by key: a value
        the cache keeps (clean) while the store holds another is a stale read waiting for
        whoever asks next, whatever the order of writes that left it there."""
        refused = self._refused_keys() | self.unstorable
        refused |= {key for key, _v, _r in cache.quarantined()}
        for key in self.model.by_key:
            if key in refused:
                continue
            record = self.store.read(key)
            stored = None if record is None else record.value
            served = await cache.get(key)
            if served != stored:
                self.problems.append(
                    f"liveness: once faults stopped and flush() returned, the cache serves "
                    f"{served!r} for {key!r} while the store holds {stored!r} "
                    f"(version {None if record is None else record.version})"
                )
                return

    def _check_refusals_quarantined(self, when: str, cache: Cache) -> None:
        """A write the store refused for good is quarantined, never taken as persisted."""
        quarantined = {(key, version) for key, version, _r in cache.quarantined()}
        for key, history in self.model.by_key.items():
            last = next((w for w in reversed(history) if w.status == "acked"), None)
            if last is None or last.version is None or history[-1] is not last:
                continue  # (a later uncertain write replaces a quarantined entry)
            if self.model.excused(key):
                continue  # a crash its ack mode does not survive took the refused write too
            refused = (key, last.version) in self.store_faults.poisoned or (
                key in self.store_refuses and not self.model.excused(key)  # (a lost write)
            )
            if refused and (key, last.version) not in quarantined:
                self.problems.append(
                    f"{when}: the store refused {key!r} version {last.version} for good, and "
                    "the cache did not quarantine it"
                )
                return

    async def _flusher(self, cache: Cache) -> None:
        """``flush()`` while faults run: once it returns, every write acknowledged before the
        call is in the store (or quarantined, or lost to a crash its ack mode allows)."""
        rng = self.injector.rng("flusher")
        while True:
            await trio.sleep(rng.expovariate(1 / 0.25))
            await self._paused()
            # What the flush answers for: each key's write acknowledged before the call, unless
            # a crash its ack mode does not survive already took it back.
            lows = {
                key: self.model.read_started(key).low
                for key in self.model.by_key
                if not self.model.excused(key)
            }
            crashes = len(self.model.crash_log)
            self.flushing = called = trio.current_time()
            try:
                await cache.flush()
            except UNCERTAIN_OUTCOME:
                continue
            finally:
                self.flushing = None
            if self.hold is not None or len(self.model.crash_log) != crashes:
                continue  # a crash meanwhile may excuse a miss: the liveness phase judges
            # Refused for good since the flush began: quarantined, maybe already superseded
            # (a newer write takes a key out of quarantine) by a write flush() need not wait for.
            refused = self._refused_keys()
            rows = {key: record.value for key, record in self.store.rows().items()}
            for key, low in lows.items():
                if key in refused:
                    continue
                if rows.get(key) not in self.model.allowed(key, low):
                    self.problems.append(
                        f"flush() called at t={called:.3f} returned at "
                        f"t={trio.current_time():.3f}, but the store lacks a write to {key!r} "
                        f"acknowledged before the call (found {rows.get(key)!r})"
                    )
                    return

    async def _chaos(self, scope: trio.CancelScope) -> None:
        fire, rng = self.injector.fire, self.chaos_rng
        self.last_progress = trio.current_time()
        while True:
            await trio.sleep(self.plan.tick)
            now = trio.current_time()
            if self.hold is not None:
                self.last_progress = now
                continue
            if now - self.last_progress > NO_PROGRESS_LIMIT:
                self.problems.append(
                    f"no operation finished for {NO_PROGRESS_LIMIT}s of simulated time "
                    f"(at t={now:.2f}); the process was killed"
                )
                self.pending_crash = ("process", None)
                scope.cancel()
                return
            if self.outage_until is not None and now >= self.outage_until:
                self.store_faults.outage, self.outage_until = False, None
                self.liveness_due.set()  # the store is back: everything must reach it
            if fire("store.outage") and self.outage_until is None:
                self.store_faults.outage, self.outage_until = True, now + rng.uniform(0.3, 1.2)
            if fire("time.jump"):
                assert self.clock is not None
                self.clock.jump(rng.uniform(0.5, 5.0))
            if fire("disk.fsync_error"):
                self.disk.fail_fsyncs += 1
            if fire("disk.full"):
                self.disk.fill_after(rng.randrange(0, 2048))
            if fire("crash_loop") and self.loop_actor is None:
                self.loop_actor = f"shard-{rng.randrange(self.config.shards)}"
            if fire("process_crash"):
                self.pending_crash = ("process", None)
            elif fire("power_loss"):
                mode = rng.choice(CRASH_MODES)
                self.injector.count(f"power_loss:{mode}")
                self.pending_crash = ("power", mode)
            if self.pending_crash is not None:
                scope.cancel()
                return

    async def _paused(self) -> None:
        while self.hold is not None:
            await self.hold.wait()

    async def _writer(self, w: int, cache: Cache) -> None:
        rng = self.writer_rngs[w]
        while self.started_ops < self.operations:
            await self._paused()
            self.started_ops += 1
            self.active_ops += 1
            op_number = self.started_ops
            key = _key(w, rng.randrange(KEYS_PER_WRITER))
            roll = rng.random()
            if 0.5 < roll < 0.6:
                # A cold key, written once: no later write can cover for a lost one.
                key = f"w{w}.once{op_number}"
            try:
                if roll < 0.2:
                    await self._read(cache, key)
                elif 0.6 < roll < 0.7:
                    await self._write_many(cache, w, rng, op_number)
                else:
                    # Some puts store an empty value: it must never come back as a delete.
                    value = None if roll < 0.3 else f"{key}={op_number}".encode()
                    if roll > 0.97:
                        value = b""
                    await self._write(cache, key, value)
            finally:
                self.active_ops -= 1
            self.finished_ops += 1
            self.last_progress = trio.current_time()
            await trio.sleep(rng.expovariate(1 / THINK_TIME))

    async def _reader(self, r: int, cache: Cache) -> None:
        """Reads of any key, overlapping its owner's writes (and evictions, and flushes)."""
        rng = self.reader_rngs[r]
        while self.started_ops < self.operations:
            await self._paused()
            self.active_ops += 1
            try:
                await self._read(cache, rng.choice(self.keys))
            finally:
                self.active_ops -= 1
            await trio.sleep(rng.expovariate(1 / THINK_TIME))

    async def _read(self, cache: Cache, key: str) -> None:
        model = self.model
        start = model.read_started(key)
        try:
            found = await cache.get(key)
        except UNCERTAIN_OUTCOME:
            return
        loss = model.check_read(key, found, start)
        if loss is not None and not model.read_excused(key, start):
            self.read_violations.append(loss)

    async def _write(self, cache: Cache, key: str, value: bytes | None) -> None:
        model = self.model
        op = model.issue(key, value, trio.current_time())
        try:
            if value is None:
                receipt = await cache.delete(key)
            else:
                receipt = await cache.put(key, value)
        except UNCERTAIN_OUTCOME:
            model.uncertain(op)
        except Unstorable as exc:
            model.refused(op)
            if key not in self.unstorable:
                self.problems.append(
                    f"a write of {key!r} was refused as unstorable, yet the {self.store.kind} "
                    f"store can hold it: {exc}"
                )
        except (Overloaded, StoreRejected, JournalFull, ValueError):
            # ValueError: a key or value the store could never hold; JournalFull: a full disk
            model.refused(op)
        else:
            self._acknowledged(op, receipt)

    async def _write_many(self, cache: Cache, w: int, rng: random.Random, number: int) -> None:
        """One ``put_many`` (or ``delete_many``) of some of writer ``w``'s keys: each distinct
        key is its own write in the model, acknowledged, refused or uncertain as the call's
        outcome says for that key (:class:`PartiallyAcknowledged` says it key by key)."""
        model = self.model
        own = [_key(w, k) for k in range(KEYS_PER_WRITER)]
        keys = rng.sample(own, rng.randint(2, KEYS_PER_WRITER))
        if rng.random() < 0.3:
            keys.append(f"w{w}.once{number}")  # a cold key, written once
        deleting = rng.random() < 0.15
        items: list[tuple[str, bytes | None]] = [
            (key, None if deleting else f"{key}={number}".encode()) for key in keys
        ]
        if not deleting and rng.random() < 0.2:
            # A key given twice: the later value wins and only it is written (never this one).
            items.insert(0, (keys[-1], f"{keys[-1]}=overridden{number}".encode()))
        winners = dict(items)
        now = trio.current_time()
        ops = {key: model.issue(key, value, now) for key, value in winners.items()}
        try:
            if deleting:
                receipts = await cache.delete_many(keys)
            else:
                receipts = await cache.put_many([(k, v) for k, v in items if v is not None])
        except PartiallyAcknowledged as exc:
            if set(exc.acknowledged) | set(exc.failed) != set(winners):
                self.problems.append(
                    f"PartiallyAcknowledged accounts for {sorted(exc.acknowledged)} and "
                    f"{sorted(exc.failed)}, not the call's keys {sorted(winners)}"
                )
            for key, op in ops.items():
                if key in exc.acknowledged:
                    self._acknowledged(op, exc.acknowledged[key])
                elif isinstance(exc.failed.get(key), UNCERTAIN_OUTCOME):
                    model.uncertain(op)
                else:
                    model.refused(op)
        except UNCERTAIN_OUTCOME:
            for op in ops.values():
                model.uncertain(op)
        except Unstorable as exc:
            for op in ops.values():
                model.refused(op)
            if not self.unstorable & set(winners):
                self.problems.append(
                    f"a put_many of {sorted(winners)} was refused as unstorable, yet the "
                    f"{self.store.kind} store can hold each key: {exc}"
                )
        except (Overloaded, StoreRejected, JournalFull, ValueError):
            for op in ops.values():
                model.refused(op)
        else:
            if [r.key for r in receipts] != list(winners):
                self.problems.append(
                    f"put_many of {list(winners)} returned receipts for "
                    f"{[r.key for r in receipts]}"
                )
            for receipt in receipts:
                if receipt.key in ops:
                    self._acknowledged(ops[receipt.key], receipt)

    def _acknowledged(self, op: int, receipt: Receipt) -> None:
        """The cache acknowledged write ``op``: record it and check what the ack mode says."""
        model = self.model
        write = model.writes[op]
        key, value = write.key, write.value
        if key in self.unstorable:
            self.problems.append(
                f"a write of {key!r}, which the {self.store.kind} store could never hold, "
                "was acknowledged instead of refused (Unstorable)"
            )
        model.acked(op, trio.current_time())
        write.version = receipt.version
        if value is not None and self.ack in ("fsync", "journal"):
            self._check_journaled(key, value)
        elif self.ack == "store":
            self._check_written_through(key, receipt.version)

    def _check_written_through(self, key: str, version: int) -> None:
        """``ack="store"`` acknowledges a write once the store committed it: it is there."""
        record = self.store.read(key)
        if record is None or record.version < version:
            self.problems.append(
                f"ack='store' acknowledged a write of {key!r} (version {version}) that the "
                f"store does not hold (it holds {record!r})"
            )

    def _check_journaled(self, key: str, value: bytes) -> None:
        """The ack-before-sync detector: an acknowledged put's journal record must already
        be where the ack mode promises (or its value already in the store)."""
        raw = key.encode()
        needle = b"".join((struct.pack("<I", len(raw)), raw, struct.pack("<I", len(value)), value))
        durable = self.ack == "fsync"
        if self.disk.holds(self.journal_root, needle, durable=durable):
            return
        record = self.store.read(key)
        if record is not None and record.value == value:
            return
        where = "synced journal data under synced names" if durable else "written journal data"
        self.problems.append(
            f"ack before {'sync' if durable else 'write'}: put({key!r}, {value!r}) was "
            f"acknowledged at t={trio.current_time():.3f} but its record is not in {where}"
        )

    # -- the end -------------------------------------------------------------------------------

    async def _final(self) -> SimulationResult:
        self._quiet()
        await self._final_damage_probe()
        # Sometimes the operator's recovery tool runs first, after a failed host. A write
        # the store refuses for good, it quarantines (and keeps journaled).
        if self.final_rng.random() < 1 / 3:
            await self._final_stranded_writes()
            await self._final_recover_tool()
        # Sometimes one shard more or fewer, after a failed host left writes in the journals:
        # keys move, so the journals replay into the store first. Not over a record the store
        # refuses for good: a shard-count change cannot start while any journal holds one (it
        # would be stranded).
        # (On a real store, every run that can: where the batch semantics live. Half of them
        # cannot, as their store refuses a key for good.)
        reshard = 1.0 if self.store.kind != "memory" else 0.5
        refused = self.store_faults.poisoned | self.store_refuses
        if self.final_rng.random() < reshard and not refused:
            await self._final_stranded_writes()
            shards = self.config.shards
            shards += -1 if shards > 1 and self.final_rng.random() < 0.5 else 1
            self.config = attrs.evolve(self.config, shards=shards)
            self.events["final_reshard"] += 1
        quarantined: tuple[str, ...] = ()
        steps = (self._final_flush, self._final_drain, self._final_outage)
        for step in steps:
            for _attempt in range(3):
                try:
                    async with trio.open_nursery() as nursery:
                        cache = await nursery.start(_serve, self.config, self.seams)
                        self._check_flips_detected()
                        await step(cache)
                        quarantined = tuple(
                            sorted({key for key, _v, _r in cache.quarantined()} | set(quarantined))
                        )
                        await cache.aclose()
                        nursery.cancel_scope.cancel()
                    break
                except BaseException as exc:  # a problem, unless a flip was detected; retried
                    found = leaves(exc, skip=trio.Cancelled)
                    if any(isinstance(x, KeyboardInterrupt | SystemExit) for x in found):
                        raise
                    if self.disk.flips and all(isinstance(x, JournalCorruption) for x in found):
                        self.events["corruption_detected"] += 1
                        self.disk.restore_flips()
                        continue
                    self.problems.append(f"the final recovery failed: {_describe(exc)}")
                    break
        verdict = self.verdict or self._store_verdict(set(quarantined))
        self.problems.extend(self.store.audit.problems)
        return SimulationResult(
            seed=self.plan.seed,
            ack=self.ack,
            plan=self.plan,
            operations=self.operations,  # what was asked: the replay runs the same
            verdict=verdict,
            faults=dict(self.injector.counts),
            recoveries=self.events["actor_restarts"] + self.events["cache_restarts"],
            read_violations=tuple(self.read_violations),
            quarantined=quarantined,
            events=dict(self.events),
            problems=tuple(self.problems),
            variant=self.variant,
            store=self.store_name,
            opportunities=dict(self.injector.opportunities),
        )

    async def _final_damage_probe(self) -> None:
        """Damage the journal where it promises to notice (a flipped bit, or a whole frame
        lost from the middle of a log): the next start must refuse it. Then the damage is
        repaired, as an operator would from a replica."""
        pending = bool(self.disk.flips)  # damage from the last crash, not yet detected
        if not pending:
            if self.final_rng.random() < 0.5:
                self.disk.flip_detectable(self.journal_root, self.final_rng)
            else:
                self.disk.drop_frame_detectable(self.journal_root, self.final_rng)
            if not self.disk.flips:
                return
            self.events["final_damage_probes"] += 1
        damage = self.disk.flips[0]
        try:
            async with trio.open_nursery() as nursery:
                cache = await nursery.start(_serve, self.config, self.seams)
                self.problems.append(f"the cache started over a damaged journal: {damage!r}")
                await cache.aclose()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            found = leaves(exc, skip=trio.Cancelled)
            if any(isinstance(x, KeyboardInterrupt | SystemExit) for x in found):
                raise
            if not found or not all(isinstance(x, JournalCorruption) for x in found):
                self.problems.append(
                    f"a start over a damaged journal ({damage!r}) failed with "
                    f"{_describe(exc)}, not with JournalCorruption"
                )
            elif pending:
                self.events["corruption_detected"] += 1
        finally:
            self.disk.restore_flips()

    async def _final_stranded_writes(self) -> None:
        """A host that fails while its store is down leaves acknowledged writes in its
        journal only: the situation ``writebehind recover`` exists for. (Not under
        ``ack="store"``, which acknowledges nothing the store does not hold.)"""
        if self.ack == "store":
            return
        count = self.final_rng.randint(1, 20)
        keys = self.final_rng.sample(self.keys, min(count, len(self.keys)))
        try:
            async with trio.open_nursery() as nursery:
                cache = await nursery.start(_serve, self.config, self.seams)
                self._check_flips_detected()
                self.store_faults.outage = True
                # Backpressure may hold a put while the store is down: the host fails then
                # (a put cut off stays pending, so the crash makes it uncertain).
                with trio.move_on_after(STRANDED_LIMIT):
                    for i, key in enumerate(keys):
                        # Some keys twice, a delete then a put: a replay then holds several
                        # versions of one key, and an older tombstone.
                        values: tuple[bytes | None, ...] = (
                            (None, f"{key}=stranded-again".encode()) if i % 3 == 0
                            else (None if i % 5 == 4 else f"{key}=stranded".encode(),)
                        )
                        for value in values:
                            await self._write(cache, key, value)
                nursery.cancel_scope.cancel()  # the host fails: no drain
        except BaseException as exc:
            found = leaves(exc, skip=trio.Cancelled)
            if any(isinstance(x, KeyboardInterrupt | SystemExit) for x in found):
                raise
            self.problems.append(f"a start before the recover tool failed: {_describe(exc)}")
        finally:
            self.store_faults.outage = False
        self.model.crash("process", trio.current_time())
        self.events["final_stranded_writes"] += len(keys)

    async def _final_recover_tool(self) -> None:
        """``writebehind recover``: it refuses a damaged journal unless told to repair, and
        otherwise leaves every acknowledged write in the store."""
        self.events["final_recover_tool"] += 1
        if self.disk.flip_detectable(self.journal_root, self.final_rng) is not None:
            try:
                await recover_with_config(self.config, seams=self.seams)
            except JournalCorruption:
                pass
            except Exception as exc:
                self.problems.append(
                    f"writebehind recover over a damaged journal failed with {_describe(exc)}, "
                    "not with JournalCorruption"
                )
            else:
                self.problems.append(
                    "writebehind recover went through a damaged journal without --repair"
                )
            self.disk.restore_flips()
        # Whatever batch size the operator's configuration has (1 puts every record alone).
        config = attrs.evolve(self.config, batch_size=self.final_rng.choice((1, 2, 3, 16)))
        try:
            await recover_with_config(config, seams=self.seams)
        except Exception as exc:  # a problem, reported; the restart after it still runs
            self.problems.append(f"writebehind recover failed: {_describe(exc)}")
            return
        self._check_store("after writebehind recover")

    async def _read_back(self, cache: Cache) -> None:
        for key in self.keys:
            await self._read(cache, key)

    async def _fresh_writes(self, cache: Cache, tag: str) -> None:
        for i, key in enumerate(self.keys):
            value = None if i % 5 == 4 else f"{key}={tag}".encode()
            await self._write(cache, key, value)

    async def _final_flush(self, cache: Cache) -> None:
        """After recovery every key reads back, and flush() leaves the store complete."""
        await self._read_back(cache)
        with trio.move_on_after(FINAL_FLUSH_LIMIT) as timeout:
            await cache.flush()
        if timeout.cancelled_caught:
            self.problems.append(
                f"the final flush did not finish in {FINAL_FLUSH_LIMIT}s ({_stuck(cache)})"
            )
        else:
            self._check_store("after recovery and flush()", cache)
        # The run's verdict: what the workload's writes came to (the steps after this one
        # write fresh values over every key, and are checked as problems).
        self.verdict = self._store_verdict({key for key, _v, _r in cache.quarantined()})

    def _store_verdict(self, quarantined: set[str]) -> Verdict:
        """The store against the model, now; quarantined keys are excused (and reported
        apart), which is decided now too: later writes change what excuses a loss."""
        rows = {key: record.value for key, record in self.store.rows().items()}
        verdict = self.model.check_store(rows)
        if any(loss.key in quarantined for loss in verdict.lost):
            lost = tuple(loss for loss in verdict.lost if loss.key not in quarantined)
            verdict = attrs.evolve(
                verdict,
                lost=lost,
                loss_allowed=all(self.model.excused(x.key) for x in lost)
                if lost
                else self.model.loss_allowed,
            )
        return verdict

    async def _final_drain(self, cache: Cache) -> None:
        """Fresh writes, then a clean close: the drain alone must leave the store complete."""
        await self._fresh_writes(cache, "drained")
        await cache.aclose()
        self._check_store("after a clean close (the drain)", cache)

    async def _final_outage(self, cache: Cache) -> None:
        """Fresh writes, then a clean close while the store is down and a power loss: the
        drain times out and the journal must keep every write for the next start, synced (in
        every ack mode but store, which has no journal)."""
        if self.ack == "store":
            return
        await self._read_back(cache)
        await self._fresh_writes(cache, "kept")
        self.store_faults.outage = True
        try:
            await cache.aclose()
        finally:
            self.store_faults.outage = False
        # A clean stop leaves a synced journal in every ack mode: the machine may go down
        # right after (what was written but not synced is gone).
        self.disk.crash("drop_unsynced")
        self.events["power_loss_after_clean_stop"] += 1
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(_serve, self.config, self.seams)
            await self._read_back(cache)
            await cache.aclose()
            nursery.cancel_scope.cancel()
        self._check_store("after a close with the store down, a restart and a drain", cache)


def _key(writer: int, k: int) -> str:
    # One key holds a NUL: PostgreSQL's text type cannot, so there it is refused for good and
    # quarantined (the refusal path of a real store, end to end); elsewhere it is a key.
    return f"w{writer}.k{k}" + ("\0" if (writer, k) == (WRITERS - 1, KEYS_PER_WRITER - 1) else "")


def _stuck(cache: Cache) -> str:
    """What was pending, per shard: enough to see what a hang waits on."""
    try:
        stats = cache.statistics()
    except Exception as exc:  # a report must not fail on a broken cache
        return f"statistics failed: {exc!r}"
    shards = ", ".join(
        f"{s.name} {s.status} dirty={s.dirty} inflight={s.inflight_batches} "
        f"unpersisted={s.unpersisted}"
        for s in stats.shards
    )
    return f"{shards}; store mailbox={stats.store_mailbox_depth}"


async def _serve(config: Config, seams: Seams, *, task_status: Any) -> None:
    await serve_cache(config, seams=seams, task_status=task_status)


#: What the plan raises itself: a fault point, a power cut, a disk or a store error.
_PLANNED = (InjectedFault, SimulatedCrash, InjectedDiskError, InjectedStoreError)


def _planned(exc: BaseException, _seen: frozenset[int] = frozenset()) -> bool:
    """Whether ``exc`` is, or was caused by, faults the plan injected (a supervisor's
    escalation over injected crashes, a journal failing over an injected disk error)."""
    if id(exc) in _seen:  # a cause chain that loops back (contexts can)
        return False
    seen = _seen | {id(exc)}
    if isinstance(exc, _PLANNED):
        return True
    if isinstance(exc, BaseExceptionGroup):
        found = leaves(exc, skip=trio.Cancelled)
        return bool(found) and all(_planned(leaf, seen) for leaf in found)
    cause = exc.__cause__ or exc.__context__
    return cause is not None and _planned(cause, seen)


def _describe(exc: BaseException) -> str:
    return "; ".join(
        f"{type(e).__name__}: {e}" for e in leaves(exc, skip=trio.Cancelled) or [exc]
    )

