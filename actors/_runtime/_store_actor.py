"""The store actor: owns one store connection, writes each batch in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import outcome
import trio

from .._core._errors import StoreFenced, StoreUnavailable
from .._core._messages import BatchFenced, Fence, FlushBatch, StoreAck, StoreNack, StoreRecord
from .._core._stats import StoreStatistics
from .._core._status import STORE_ACTOR, Status
from .._stores._protocol import Store, StoreFactory, WriteOutcome, rejections, supersessions
from ._seams import Seams
from ._store_process import StoreProcess, runs_in_process

log = logging.getLogger("writebehind")

#: A batch and the inbox of the shard incarnation that sent it.
Outgoing = tuple[FlushBatch, trio.MemorySendChannel[Any]]


class StoreActor:
    def __init__(
        self,
        index: int,
        factory: StoreFactory,
        mailbox: trio.MemoryReceiveChannel[Outgoing],
        *,
        seams: Seams,
        reconnect_delay: float,
        reconnect_max: float,
    ) -> None:
        self.name = f"store-{index}"
        self.status = STORE_ACTOR.initial
        self.restarts = 0
        self.batches = 0
        self.records = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None  # trio clock
        self._factory = factory
        self._mailbox = mailbox
        self._hook = seams.fault_point
        self._wrap = seams.wrap_store
        self._reconnect_delay = reconnect_delay
        self._reconnect_max = reconnect_max
        self.worker_pid: int | None = None  # the store worker process's, when there is one

    def _become(self, status: Status) -> None:
        self.status = STORE_ACTOR.advance(self.status, status, self.name)

    def _fault(self, point: str) -> None:
        if self._hook is not None:
            self._hook(point, self.name)

    def _open(self, nursery: trio.Nursery) -> _Connection:
        # A harness's wrapped store is an object of this process: it keeps the thread path.
        if self._wrap is None and runs_in_process(self._factory):
            return StoreProcess(self._factory, nursery, name=self.name)
        return _ThreadStore(self._factory, self._wrap)

    async def _connect(self, store: _Connection) -> None:
        delay = self._reconnect_delay
        while True:
            try:
                await store.connect()
                self.worker_pid = store.pid
                return
            except StoreUnavailable as exc:
                self._become(Status.RECONNECTING)
                self.errors += 1
                self.last_error = str(exc)
                self.last_error_time = trio.current_time()
                log.warning("%s cannot connect (%s); retrying in %.2fs", self.name, exc, delay)
                await trio.sleep(delay)
                delay = min(self._reconnect_max, delay * 2)

    def _start(self, store: _Connection, batch: FlushBatch) -> _Job:
        self._fault("store.before_commit")
        return store.start_write(batch.records, batch.fence)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # The nursery owns a store worker process's pipe tasks; the process itself is
        # stopped (and waited for) in ``finally`` whatever ends the actor.
        try:
            async with trio.open_nursery() as nursery:
                store = self._open(nursery)
                try:
                    await self._serve(store, task_status)
                finally:
                    self.worker_pid = None
                    with trio.CancelScope(shield=True):
                        await store.aclose()
        except BaseExceptionGroup as group:
            # The pipe tasks never raise: the group holds the actor's own error, which the
            # supervisor expects as it is (its cause and context kept as they were).
            if len(group.exceptions) != 1:
                raise
            exc = group.exceptions[0]
            cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
            try:
                raise exc
            finally:
                exc.__cause__, exc.__context__ = cause, context
                exc.__suppress_context__ = suppress

    async def _serve(self, store: _Connection, task_status: Any) -> None:
        await self._connect(store)
        self._become(Status.RUNNING)
        task_status.started()
        # Batches taken and not answered yet, oldest first: held[0] is the one ``job`` writes.
        held: list[Outgoing] = []
        job: _Job | None = None
        try:
            while True:
                if job is None:
                    outgoing = await self._mailbox.receive()
                    held.append(outgoing)
                    job = self._start(store, outgoing[0])
                batch, reply = outgoing = held[0]
                try:
                    answer = await job.result()
                except StoreUnavailable as exc:
                    # Transient: the shard retries the batch; we reconnect in place.
                    job = None
                    self.errors += 1
                    self.last_error = str(exc)
                    self.last_error_time = trio.current_time()
                    held.remove(outgoing)
                    await _answer(reply, StoreNack(batch.batch_id, str(exc)))
                    await store.close()
                    await self._connect(store)
                    self._become(Status.RUNNING)
                    continue
                except StoreFenced as exc:
                    # Nothing of it was written, and retrying cannot help: the partition has
                    # a newer owner. The connection is fine.
                    job = None
                    held.remove(outgoing)
                    log.warning("%s: %s", self.name, exc)
                    await _answer(reply, BatchFenced(batch.batch_id, str(exc), exc.current))
                    continue
                job = None
                self._fault("store.after_commit")
                self.batches += 1
                self.records += len(batch.records)
                # Start the next write before answering this one: the answer wakes the
                # shard, and its ack-and-next-batch work would otherwise run before the
                # worker thread starts (trio.to_thread yields first) or the request reaches
                # the worker process, leaving the store idle for that long after every
                # batch. (A non-blocking store's write only starts when awaited; it is
                # pipelined all the same, so simulations, which use such stores, take this
                # path too.)
                try:
                    upcoming = self._mailbox.receive_nowait()
                except trio.WouldBlock:
                    pass
                else:
                    held.append(upcoming)
                    job = self._start(store, upcoming[0])
                held.remove(outgoing)
                rejected, superseded = rejections(answer), supersessions(answer)
                await _answer(reply, StoreAck(batch.batch_id, rejected, superseded))
        except BaseException as exc:
            if job is not None:
                await job.settle()  # a worker thread may still use the connection
            # Whatever we were holding never got an answer: its outcome is unknown, so the
            # shard must retry it (writes are idempotent: versions only move forward).
            for batch, reply in held:
                try:
                    reply.send_nowait(StoreNack(batch.batch_id, f"{self.name} crashed: {exc!r}"))
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    pass
            held.clear()
            if not isinstance(exc, trio.Cancelled):
                self._become(Status.CRASHED)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.last_error_time = trio.current_time()
            raise
        finally:
            if self.status is not Status.CRASHED:
                self._become(Status.STOPPED)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            name=self.name,
            status=self.status.value,
            restarts=self.restarts,
            batches=self.batches,
            records=self.records,
            errors=self.errors,
            last_error=self.last_error,
            last_error_time=self.last_error_time,
        )


class _Job(Protocol):
    async def result(self) -> WriteOutcome: ...
    async def settle(self) -> None: ...


class _Connection(Protocol):
    """What a store actor drives: a store in a worker thread (:class:`_ThreadStore`) or in
    a worker process (:class:`StoreProcess`)."""

    @property
    def pid(self) -> int | None: ...
    async def connect(self) -> None: ...
    def start_write(self, records: tuple[StoreRecord, ...], fence: Fence | None) -> _Job: ...
    async def close(self) -> None: ...
    async def aclose(self) -> None: ...


class _ThreadStore:
    """A fresh store of ``factory`` per connection (wrapped by a harness's ``wrap``), called
    in a worker thread if it blocks, else inline."""

    pid = None

    def __init__(self, factory: StoreFactory, wrap: Callable[[Store], Store] | None) -> None:
        self._factory = factory
        self._wrap = wrap
        self._store: Store | None = None
        # One thread at a time per connection: a store is not safe to share across threads.
        self._limiter = trio.CapacityLimiter(1)

    def _current(self) -> Store:
        if self._store is None:
            store = self._factory()
            self._store = store if self._wrap is None else self._wrap(store)
        return self._store

    async def connect(self) -> None:
        store = self._current()
        await call_store(store.blocking, self._limiter, store.connect)

    def start_write(self, records: tuple[StoreRecord, ...], fence: Fence | None) -> _Write:
        store = self._current()
        return _Write(store, records, fence, blocking=store.blocking)

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await call_store(store.blocking, self._limiter, store.close)

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()


async def call_store(blocking: bool, limiter: trio.CapacityLimiter, fn: Any, *args: Any) -> Any:
    """Call a store method: in a worker thread if it blocks, else inline (then checkpoint)."""
    if blocking:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    back = await _on_the_wire(getattr(fn, "__self__", None))
    result = fn(*args)
    await trio.sleep(back)  # 0 for a store without latency: a plain checkpoint
    return result


async def _on_the_wire(store: object) -> float:
    """A non-blocking store (a simulation's) may say how long a call takes on the wire: half
    of it passes (in trio's time) before the call reaches the store, and the caller waits
    the returned other half for the answer, so other tasks run while a request and its
    answer are "in flight", as they do around a real store's call in its worker thread."""
    latency = getattr(store, "latency", None)
    if latency is None:
        return 0.0
    seconds: float = latency()
    await trio.sleep(seconds / 2)
    return seconds / 2


class _Write:
    """One ``write_batch``. A blocking store's runs in a worker thread started at once, before
    the caller next yields (``trio.to_thread`` yields first, so whichever task that wakes runs
    before the thread starts); it is never abandoned, like ``to_thread`` without
    ``abandon_on_cancel``. A non-blocking store's runs inline when the result is awaited."""

    def __init__(self, store: Store, records: tuple[StoreRecord, ...], fence: Fence | None,
                 *, blocking: bool) -> None:
        self._store = store
        self._records = records
        self._fence = fence
        self._threaded = blocking
        self._done = trio.Event()
        self._outcome: outcome.Outcome[WriteOutcome] | None = None
        if blocking:
            token = trio.lowlevel.current_trio_token()

            def deliver(result: outcome.Outcome[WriteOutcome]) -> None:
                token.run_sync_soon(self._finish, result)

            trio.lowlevel.start_thread_soon(self._write, deliver)

    def _write(self) -> WriteOutcome:
        if self._fence is None:
            return self._store.write_batch(self._records)
        # Only a store that has it is given fenced batches (the cache checks at start).
        fenced: Any = getattr(self._store, "write_batch_fenced")  # noqa: B009
        answer: WriteOutcome = fenced(self._records, self._fence)
        return answer

    def _finish(self, result: outcome.Outcome[WriteOutcome]) -> None:
        self._outcome = result
        self._done.set()

    async def result(self) -> WriteOutcome:
        if not self._threaded:
            back = await _on_the_wire(self._store)
            answer = self._write()
            await trio.sleep(back)  # 0 for a store without latency: a plain checkpoint
            return answer
        await self.settle()
        # Cancelled while the thread ran: raise now, as to_thread would (the shard, told
        # nothing, retries the batch).
        await trio.lowlevel.checkpoint_if_cancelled()
        assert self._outcome is not None
        return self._outcome.unwrap()

    async def settle(self) -> None:
        """Wait, even if cancelled, until a worker thread (if any) is done with the store."""
        if self._threaded:
            with trio.CancelScope(shield=True):
                await self._done.wait()


async def _answer(reply: trio.MemorySendChannel[Any], message: object) -> None:
    try:
        await reply.send(message)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass  # that shard incarnation is gone; its successor replays from the journal
