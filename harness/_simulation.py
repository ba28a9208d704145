"""The seeded in-process simulation: a workload under a fault plan, checked against the model.

One ``trio.run`` under ``MockClock(autojump_threshold=0)`` with an in-memory store
(:class:`MemoryStore`) and an in-memory disk (:class:`FaultyDisk`) that both survive restarts
of the cache, like a database and a disk survive a process. Each *incarnation* of the cache
runs writer tasks (each owns its keys, so writes to one key are issued one at a time) and a
chaos task, until the operations are done or the chaos task kills the process (cancels the
nursery running ``serve_cache``: no drain) or cuts the power (that plus ``disk.crash(mode)``).
At the end every fault stops, the cache restarts cleanly and flushes, every key is read back,
and the store is checked against the model.

How a flipped journal byte is handled: the next start must fail with ``JournalCorruption``
(counted as ``corruption_detected``); the harness then restores the byte, as an operator would
from a replica, and starts again, so a detected corruption never counts as a loss. A start
that *succeeds* over a flipped byte is an undetected corruption: a problem, so the run fails.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from writebehind import (
    CacheClosed,
    Config,
    JournalCorruption,
    JournalError,
    Overloaded,
    Seams,
    ShardCrashed,
    StoreRejected,
    StoreUnavailable,
    TooManyRestarts,
    serve_cache,
)
from writebehind._journal._fs import CRASH_MODES

from ._disk import FaultyDisk
from ._faulty_store import StoreFaults
from ._memory_store import MemoryStore
from ._model import Loss, Model, Verdict
from ._plan import FaultInjector, FaultPlan

WRITERS = 4
KEYS_PER_WRITER = 6
THINK_TIME = 0.004  # mean simulated seconds between a writer's operations
NO_PROGRESS_LIMIT = 120.0  # simulated seconds without a finished operation: a liveness failure
FINAL_FLUSH_LIMIT = 600.0
MAX_FAILED_STARTS = 40

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
        lines = [
            f"{self.label}: simulate({self.plan!r}, ack={self.ack!r}, "
            f"operations={self.operations}{variant})",
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
) -> SimulationResult:
    """Run ``operations`` writes and reads under ``plan``; deterministic for a given plan.

    ``config`` overrides fields of :data:`BASE_CONFIG`. ``variant`` runs a deliberately broken
    runtime (a name from :data:`writebehind.harness.BROKEN_VARIANTS`, or a context manager
    factory that patches the runtime for the run).
    """
    from ._variants import BROKEN_VARIANTS

    if isinstance(variant, str):
        patch: Callable[[], AbstractContextManager[Any]] = BROKEN_VARIANTS[variant].patch
        name: str | None = variant
    elif variant is not None:
        patch, name = variant, getattr(variant, "__name__", repr(variant))
    else:
        patch, name = contextlib.nullcontext, None
    with tempfile.TemporaryDirectory(prefix="writebehind-sim-") as tmp, patch(), _seeded_trio(
        plan.seed
    ), quiet_runtime_logs():
        sim = _Simulation(plan, ack, operations, shards, dict(config or {}), Path(tmp), name)
        return trio.run(sim.run, clock=trio.testing.MockClock(autojump_threshold=0))


@contextlib.contextmanager
def _seeded_trio(seed: int) -> Iterator[None]:
    # Trio orders the tasks it wakes together with its module-level Random, after the order
    # they were woken in, which for equal deadlines depends on memory addresses (a tie broken
    # by id()). Its deterministic mode (what it uses under Hypothesis) sorts each batch by
    # task creation before shuffling with that Random; with the Random seeded from the plan,
    # a run replays exactly. Both are put back afterwards.
    from trio._core import _run

    state = _run._r.getstate()
    deterministic = _run._ALLOW_DETERMINISTIC_SCHEDULING
    _run._r.seed(f"trio/{seed}")
    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    try:
        yield
    finally:
        _run._ALLOW_DETERMINISTIC_SCHEDULING = deterministic  # type: ignore[misc]
        _run._r.setstate(state)


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
    ) -> None:
        self.plan = plan
        self.ack = ack
        self.operations = operations
        self.variant = variant
        self.injector = FaultInjector(plan)
        self.disk = FaultyDisk(seed=plan.seed)
        self.store = MemoryStore()
        self.store_faults = StoreFaults(self.injector, pause=self._pause)
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
        self.chaos_rng = self.injector.rng("chaos")
        self.started_ops = 0
        self.finished_ops = 0
        self.last_progress = 0.0
        self.events: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.read_violations: list[Loss] = []
        self.loop_actor: str | None = None
        self.pending_crash: tuple[str, str | None] | None = None
        self.clock: trio.testing.MockClock | None = None

    # -- hooks the runtime calls ---------------------------------------------------------------

    def _pause(self, seconds: float) -> None:
        # A slow store call: from the runtime's point of view, time passes during it.
        if self.clock is not None:
            self.clock.jump(seconds)

    def _fault_point(self, point: str, actor: str) -> None:
        if self.loop_actor == actor and not self.injector.quiet:
            self.injector.count("crash_loop.crashes")
            raise InjectedFault(f"crash loop: {actor} crashes at {point}")
        if self.injector.fire(f"crash:{point}"):
            raise InjectedFault(f"injected crash of {actor} at {point}")

    def _on_event(self, event: Any) -> None:
        if event.kind == "crash" and event.actor.startswith("shard-"):
            # Whatever crashed it (a fault point, a failed fsync, a failed epoch request): in
            # ack='memory' a restarted shard loses what its journal had not written yet.
            self.model.crash("actor", event.time)

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> SimulationResult:
        self.clock = trio.lowlevel.current_clock()  # type: ignore[assignment]
        failed_starts = 0
        while self.started_ops < self.operations:
            started = await self._incarnation()
            failed_starts = 0 if started else failed_starts + 1
            if failed_starts >= MAX_FAILED_STARTS:
                self.problems.append(
                    f"the cache failed to start {failed_starts} times in a row; faults stopped"
                )
                self.injector.quiet = True
        return await self._final()

    async def _incarnation(self) -> bool:
        """One life of the cache; returns whether it started."""
        self.loop_actor = None
        self.pending_crash = None
        cache = None
        error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                cache = await nursery.start(_serve, self.config, self.seams)
                cache.add_listener(self._on_event)
                self._check_flips_detected()
                nursery.start_soon(self._chaos, nursery.cancel_scope)
                async with trio.open_nursery() as writers:
                    for w in range(WRITERS):
                        writers.start_soon(self._writer, w, cache)
                if self.pending_crash is None and self._ends_with_crash():
                    nursery.cancel_scope.cancel()
                else:
                    await cache.aclose()
                    nursery.cancel_scope.cancel()
        except BaseException as exc:  # sorted by _classify
            error = exc
        now = trio.current_time()
        if cache is not None:
            self._count_restarts(cache)
        if error is not None:
            self._classify(error)
            self.model.crash("process", now)
            self.events["cache_restarts"] += 1
            return cache is not None
        if self.pending_crash is not None:
            kind, mode = self.pending_crash
            self.model.crash("power" if kind == "power" else "process", now)
            self.events["cache_restarts"] += 1
            if mode is not None:
                self.disk.crash(mode)  # type: ignore[arg-type]
            if self.injector.fire("disk.flip_byte"):
                if self.disk.flip_detectable(self.journal_root, self.chaos_rng) is None:
                    self.events["flip_byte.no_target"] += 1
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

    def _count_restarts(self, cache: Any) -> None:
        stats = cache.statistics()
        self.events["actor_restarts"] += sum(s.restarts for s in stats.shards) + sum(
            s.restarts for s in stats.stores
        )

    def _classify(self, error: BaseException) -> None:
        for leaf in _leaves(error):
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
            elif isinstance(leaf, InjectedFault | StoreUnavailable | JournalError | OSError):
                self.events["failed_starts"] += 1
            else:
                self.problems.append(f"the cache died of {type(leaf).__name__}: {leaf}")

    def _check_flips_detected(self) -> None:
        if self.disk.flips:
            self.problems.append(
                f"the cache started over a flipped journal byte: {self.disk.flips[0]!r}"
            )
            self.disk.restore_flips()

    async def _chaos(self, scope: trio.CancelScope) -> None:
        fire, rng = self.injector.fire, self.chaos_rng
        self.last_progress = trio.current_time()
        while True:
            await trio.sleep(self.plan.tick)
            now = trio.current_time()
            if now - self.last_progress > NO_PROGRESS_LIMIT:
                self.problems.append(
                    f"no operation finished for {NO_PROGRESS_LIMIT}s of simulated time "
                    f"(at t={now:.2f}); the process was killed"
                )
                self.pending_crash = ("process", None)
                scope.cancel()
                return
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

    async def _writer(self, w: int, cache: Any) -> None:
        rng = self.writer_rngs[w]
        model = self.model
        while self.started_ops < self.operations:
            self.started_ops += 1
            op_number = self.started_ops
            key = f"w{w}.k{rng.randrange(KEYS_PER_WRITER)}"
            roll = rng.random()
            if roll < 0.2:
                try:
                    found = await cache.get(key)
                except (ShardCrashed, CacheClosed, StoreUnavailable):
                    pass
                else:
                    loss = model.check_read(key, found)
                    if loss is not None and not model.excused(key):
                        self.read_violations.append(loss)
            else:
                value = None if roll < 0.3 else f"{key}={op_number}".encode()
                op = model.issue(key, value, trio.current_time())
                try:
                    if value is None:
                        await cache.delete(key)
                    else:
                        await cache.put(key, value)
                except (ShardCrashed, CacheClosed, StoreUnavailable):
                    model.uncertain(op)
                except (Overloaded, StoreRejected):
                    model.refused(op)
                else:
                    model.acked(op, trio.current_time())
            self.finished_ops += 1
            self.last_progress = trio.current_time()
            await trio.sleep(rng.expovariate(1 / THINK_TIME))

    async def _final(self) -> SimulationResult:
        self.injector.quiet = True
        self.loop_actor = None
        self.disk.clear_faults()
        # Batches still "on the wire" arrive now, before anyone looks at the store.
        connection: Any = self.store.factory()  # a connection, typed as the store
        connection.connect()
        self.store_faults.deliver_held(connection)
        quarantined: tuple[str, ...] = ()
        for _attempt in range(3):
            try:
                async with trio.open_nursery() as nursery:
                    cache = await nursery.start(_serve, self.config, self.seams)
                    self._check_flips_detected()
                    with trio.move_on_after(FINAL_FLUSH_LIMIT) as timeout:
                        await cache.flush()
                    if timeout.cancelled_caught:
                        self.problems.append(
                            f"the final flush did not finish in {FINAL_FLUSH_LIMIT}s "
                            f"(unpersisted: {cache.statistics().unpersisted})"
                        )
                    quarantined = tuple(sorted({key for key, _v, _r in cache.quarantined()}))
                    for key in sorted(self.model.by_key):
                        found = await cache.get(key)
                        loss = self.model.check_read(key, found)
                        if loss is not None and not self.model.excused(key):
                            self.read_violations.append(loss)
                    await cache.aclose()
                    nursery.cancel_scope.cancel()
                break
            except BaseException as exc:  # a problem, unless a flip was detected; retried
                leaves = _leaves(exc)
                if self.disk.flips and all(isinstance(x, JournalCorruption) for x in leaves):
                    self.events["corruption_detected"] += 1
                    self.disk.restore_flips()
                    continue
                self.problems.append(f"the final recovery failed: {_describe(exc)}")
        rows = {key: record.value for key, record in self.store.rows.items()}
        verdict = self.model.check_store(rows)
        excused = set(quarantined)
        if any(loss.key in excused for loss in verdict.lost):
            lost = tuple(loss for loss in verdict.lost if loss.key not in excused)
            verdict = attrs.evolve(
                verdict,
                lost=lost,
                loss_allowed=all(self.model.excused(x.key) for x in lost)
                if lost
                else self.model.loss_allowed,
            )
        return SimulationResult(
            seed=self.plan.seed,
            ack=self.ack,
            plan=self.plan,
            operations=self.finished_ops,
            verdict=verdict,
            faults=dict(self.injector.counts),
            recoveries=self.events["actor_restarts"] + self.events["cache_restarts"],
            read_violations=tuple(self.read_violations),
            quarantined=quarantined,
            events=dict(self.events),
            problems=tuple(self.problems),
            variant=self.variant,
        )


async def _serve(config: Config, seams: Seams, *, task_status: Any) -> None:
    await serve_cache(config, seams=seams, task_status=task_status)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    if isinstance(exc, trio.Cancelled):
        return []
    return [exc]


def _describe(exc: BaseException) -> str:
    leaves = _leaves(exc) or [exc]
    return "; ".join(f"{type(e).__name__}: {e}" for e in leaves)

