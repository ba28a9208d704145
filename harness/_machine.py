"""Hypothesis stateful testing of a cache, driving one trio run from synchronous rules.

Hypothesis calls rules synchronously; the cache lives in an async world. Instead of a new
``trio.run`` per step (which would kill the cache between steps) the machine keeps ONE trio
*guest run* (``trio.lowlevel.start_guest_run``) under ``MockClock(autojump_threshold=0)`` and a
tiny host loop: a rule hands a coroutine function to the guest and pumps trio's callbacks until
its result is ready. Time moves only while a step runs (and only as far as the step needs), and
trio's scheduler is seeded by Hypothesis, so a failing program replays and shrinks.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import outcome
import trio
import trio.testing
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from writebehind import (
    FAULT_POINTS,
    Cache,
    CacheEvent,
    Config,
    ConfigError,
    JournalFull,
    Overloaded,
    Seams,
    StoreRejected,
    StoreUnavailable,
    serve_cache,
)
from writebehind._core._errors import UNCERTAIN_OUTCOME
from writebehind._journal._fs import CRASH_MODES, CrashMode

from ._audit import open_sim_store
from ._disk import FaultyDisk
from ._faulty_store import StoreFaults
from ._model import Model
from ._plan import STORE_KINDS, FaultInjector, FaultPlan
from ._simulation import BASE_CONFIG, InjectedFault
from ._trio_scheduler import reseed_trio_scheduler

T = TypeVar("T")
STEP_LIMIT = 600.0  # simulated seconds one step may take before it counts as a hang


class GuestLoop:
    """One trio run, hosted by the calling thread: ``loop.run(fn)`` awaits ``fn()`` in it."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock(autojump_threshold=0)
        self._callbacks: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._result: outcome.Outcome[None] | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._requests: trio.MemorySendChannel[Any] | None = None
        self.nursery: trio.Nursery | None = None
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=self._callbacks.put,
            done_callback=self._done,
            clock=self.clock,
        )
        self._pump(lambda: self.nursery is not None or self._result is not None)

    def _done(self, result: outcome.Outcome[None]) -> None:
        self._result = result

    def _pump(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self._callbacks.get()()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[Any](1)
        self._requests = send
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            async for fn, box in receive:
                box.append(await outcome.acapture(fn))
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` inside the trio run and return (or raise) what it did."""
        if self._result is not None or self._token is None or self._requests is None:
            raise RuntimeError("the guest trio run is over; make a new GuestLoop")
        box: list[outcome.Outcome[T]] = []
        requests = self._requests
        self._token.run_sync_soon(lambda: requests.send_nowait((fn, box)))
        self._pump(lambda: bool(box) or self._result is not None)
        if not box:
            assert self._result is not None
            self._result.unwrap()
            raise RuntimeError("the guest trio run ended before the step finished")
        return box[0].unwrap()

    def close(self) -> None:
        """End the run (cancelling whatever it still runs) and wait for it."""
        if self._result is None and self._token is not None and self._requests is not None:
            requests = self._requests
            self._token.run_sync_soon(requests.close)
            self._pump(lambda: self._result is not None)
        if self._result is not None:
            self._result.unwrap()


class _ArmedInjector(FaultInjector):
    """Fires exactly the faults a rule armed, once each."""

    def __init__(self) -> None:
        super().__init__(FaultPlan(0))
        self.armed: list[str] = []

    def fire(self, kind: str) -> bool:
        if kind in self.armed and not self.quiet:
            self.armed.remove(kind)
            self.count(kind)
            return True
        return False


def _keys() -> st.SearchStrategy[str]:
    # Drawn from the running machine, so a subclass's ``keys`` takes effect.
    return st.runner().flatmap(lambda machine: st.sampled_from(machine.keys))


class CacheMachine(RuleBasedStateMachine):
    """Model-based test of a cache: puts, deletes, gets, flushes, actor crashes, store
    faults, process crashes, power loss and time, checked against :class:`Model`.

    Invariants after every step: each key reads back the last acknowledged write (or a later
    uncertain one), unless a crash the ack mode does not survive excuses it; after ``flush``,
    the store holds the same (quarantined keys aside). Use it as::

        TestCacheMachine = CacheMachine.TestCase

    or subclass it to test your own configuration and workload::

        class SmallBatches(CacheMachine):
            ack = "journal"                      # memory | journal | fsync | store
            keys = ("user:1", "user:2")          # the keys rules draw from
            values = st.binary(max_size=64)      # the values puts write
            config_overrides = {"batch_size": 2, "flush_threshold": 2, "shards": 1}

        TestSmallBatches = SmallBatches.TestCase
        TestSmallBatches.settings = settings(max_examples=50, stateful_step_count=30)

    ``store`` is the store it runs over: ``"sqlite"`` (the default: the real SQLite store, a
    fresh file per example), ``"memory"`` (faster), or a ``postgresql://`` URL (a fresh table
    per example; use a scratch database). Every batch is audited: a stored version never goes
    backwards. ``variant`` names a deliberately broken runtime (``BROKEN_VARIANTS``), for
    testing the harness itself.
    """

    ack: ClassVar[str] = "fsync"
    keys: ClassVar[tuple[str, ...]] = ("a", "b", "c")
    values: ClassVar[st.SearchStrategy[bytes]] = st.binary(max_size=4)
    config_overrides: ClassVar[Mapping[str, Any]] = {}
    variant: ClassVar[str | None] = None
    store: ClassVar[str] = "sqlite"
    #: The steps of the last finished run (the shrunk program, after a failure).
    last_steps: ClassVar[list[str]] = []

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []
        self._patch: contextlib.ExitStack = contextlib.ExitStack()
        if self.variant is not None:
            from ._variants import BROKEN_VARIANTS

            self._patch.enter_context(BROKEN_VARIANTS[self.variant].patch())
        self._tmp = Path(tempfile.mkdtemp(prefix="writebehind-machine-"))
        self.model = Model(self.ack)
        # The memory store is the one a broken variant may patch.
        self.db = self._patch.enter_context(
            open_sim_store("memory" if self.variant is not None else self.store)
        )
        self.disk = FaultyDisk()
        self.injector = _ArmedInjector()
        self.store_faults = StoreFaults(self.injector, pause=self._pause)
        self.armed_point: str | None = None
        try:
            self.config = Config(
                **{**BASE_CONFIG, "journal_dir": self._tmp / "journal", "ack": self.ack,
                   "shards": 2, **self.config_overrides}
            )
        except ConfigError as exc:
            self._patch.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise ConfigError(
                f"{type(self).__name__}.config_overrides: {exc}".replace("Config: ", "", 1)
            ) from None
        self.seams = Seams(
            fault_point=self._fault_point,
            wrap_store=self.store_faults.wrap,
            filesystem=self.disk,
            store_factory=self.db.factory,
        )
        self.cache: Cache | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None
        self.loop = GuestLoop()
        self.loop.run(self._start)

    # -- plumbing -------------------------------------------------------------------------------

    def _pause(self, seconds: float) -> None:
        self.loop.clock.jump(seconds)

    def _fault_point(self, point: str, actor: str) -> None:
        if self.armed_point == point:
            self.armed_point = None
            raise InjectedFault(f"injected crash of {actor} at {point}")

    async def _start(self) -> None:
        for _attempt in range(3):
            try:
                self.cache = await self._serve()
                self.cache.add_listener(self._on_event)
                return
            except (InjectedFault, StoreUnavailable):
                self.armed_point = None  # a fault armed for later fired during the start
                self.injector.armed.clear()
        self.cache = await self._serve()
        self.cache.add_listener(self._on_event)

    def _on_event(self, event: CacheEvent) -> None:
        if event.kind == "crash" and event.actor.startswith("shard-"):
            self.model.crash("actor", event.time)  # ack='memory' loses its unwritten journal

    async def _serve(self) -> Cache:
        assert self.loop.nursery is not None
        scope = self._scope = trio.CancelScope()
        stopped = self._stopped = trio.Event()
        config, seams = self.config, self.seams

        async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            started = False

            class Status:
                def started(self, value: Any = None) -> None:
                    nonlocal started
                    started = True
                    task_status.started(value)

            try:
                with scope:
                    await serve_cache(config, seams=seams, task_status=Status())
            except Exception:
                if not started:
                    raise  # a failed start is the caller's to handle
                # After the start it escalated (TooManyRestarts): the next step restarts it.
            finally:
                stopped.set()

        cache = await self.loop.nursery.start(serve)
        assert isinstance(cache, Cache)  # what serve_cache reports started
        return cache

    @property
    def _live(self) -> Cache:
        # Steps run after _step's bounded() has (re)started the cache.
        assert self.cache is not None, "a step runs with the cache started"
        return self.cache

    async def _stop(self) -> None:
        if self._scope is not None and self._stopped is not None:
            self._scope.cancel()
            await self._stopped.wait()

    def _step(self, name: str, fn: Callable[[], Awaitable[T]], *args: object) -> T:
        self.steps.append(name)
        # Trio shuffles tasks woken together with a Random that Hypothesis seeds once per
        # example. Reseeding it from the step itself keeps each step's interleaving the same
        # when the shrinker deletes *other* steps, so failures shrink to short programs.
        reseed_trio_scheduler(f"{name}{args!r}")

        async def bounded() -> T:
            if self.cache is None or self.cache.status == "stopped":
                # It escalated (TooManyRestarts): restart it, as a process supervisor would.
                self.model.crash("process", trio.current_time())
                await self._start()
            with trio.fail_after(STEP_LIMIT):
                return await fn()

        return self.loop.run(bounded)

    async def _write(self, key: str, value: bytes | None) -> None:
        op = self.model.issue(key, value, trio.current_time())
        try:
            if value is None:
                await self._live.delete(key)
            else:
                await self._live.put(key, value)
        except UNCERTAIN_OUTCOME:
            self.model.uncertain(op)
        except (Overloaded, StoreRejected, JournalFull):
            self.model.refused(op)
        else:
            self.model.acked(op, trio.current_time())

    async def _read_all(self) -> list[str]:
        problems = []
        for key in self.keys:
            try:
                found = await self._live.get(key)
            except UNCERTAIN_OUTCOME:
                continue
            loss = self.model.check_read(key, found)
            if loss is not None and not self.model.excused(key):
                problems.append(f"read of {key!r} returned {found!r}: {loss!r}")
        return problems

    # -- rules ----------------------------------------------------------------------------------

    @rule(key=_keys(), value=st.runner().flatmap(lambda machine: machine.values))
    def put(self, key: str, value: bytes) -> None:
        self._step("put", lambda: self._write(key, value), key, value)

    @rule(key=_keys())
    def delete(self, key: str) -> None:
        self._step("delete", lambda: self._write(key, None), key)

    @rule(key=_keys())
    def get(self, key: str) -> None:
        async def read() -> None:
            try:
                found = await self._live.get(key)
            except UNCERTAIN_OUTCOME:
                return
            loss = self.model.check_read(key, found)
            assert loss is None or self.model.excused(key), f"stale read: {loss!r}"

        self._step("get", read, key)

    @rule()
    def flush(self) -> None:
        async def flush_and_compare() -> None:
            await self._live.flush()
            quarantined = {key for key, _v, _r in self._live.quarantined()}
            rows = {key: record.value for key, record in self.db.rows().items()}
            verdict = self.model.check_store(rows)
            lost = [x for x in verdict.lost if x.key not in quarantined]
            unexcused = [x for x in lost if not self.model.excused(x.key)]
            assert not unexcused, f"after flush the store lost acknowledged writes: {unexcused}"
            assert not self.db.audit.problems, "; ".join(self.db.audit.problems)

        self._step("flush", flush_and_compare)

    @rule(point=st.sampled_from(FAULT_POINTS))
    def crash_actor(self, point: str) -> None:
        """Arm a crash of whichever actor next reaches ``point``."""
        self.steps.append("crash_actor")
        self.armed_point = point

    @rule(kind=st.sampled_from(STORE_KINDS))
    def fail_store(self, kind: str) -> None:
        """Arm one store fault for the next store call it applies to."""
        self.steps.append("fail_store")
        self.injector.armed.append(kind)

    @rule(kind=st.sampled_from(("process", "power")), mode=st.sampled_from(CRASH_MODES))
    def restart(self, kind: str, mode: CrashMode) -> None:
        """Kill the process (and, for ``power``, lose unsynced disk data), then start again."""

        async def crash_and_start() -> None:
            await self._stop()
            self.model.crash("power" if kind == "power" else "process", trio.current_time())
            if kind == "power":
                self.disk.crash(mode)
            await self._start()

        self._step("restart", crash_and_start, kind, mode)

    @rule(seconds=st.floats(min_value=0.0, max_value=10.0, allow_nan=False))
    def advance_time(self, seconds: float) -> None:
        self._step("advance_time", lambda: trio.sleep(seconds), seconds)

    @precondition(lambda self: self.cache is not None)
    @invariant()
    def reads_see_acknowledged_writes(self) -> None:
        problems = self.loop.run(self._read_all)
        assert not problems, "; ".join(problems)

    def teardown(self) -> None:
        type(self).last_steps = list(self.steps)
        try:
            with contextlib.suppress(RuntimeError):
                self.loop.run(self._stop)
            self.loop.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._patch.close()
