"""The store actor: owns one store connection, writes each batch in one transaction."""

from __future__ import annotations

import logging
from typing import Any

import trio

from ._errors import StoreUnavailable
from ._messages import FlushBatch, StoreAck, StoreNack
from ._seams import Seams
from ._stats import StoreStatistics
from ._store import Store, StoreFactory

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
        self.status = "starting"
        self.restarts = 0
        self.batches = 0
        self.records = 0
        self.errors = 0
        self.last_error: str | None = None
        self._factory = factory
        self._mailbox = mailbox
        self._hook = seams.fault_point
        self._wrap = seams.wrap_store
        self._reconnect_delay = reconnect_delay
        self._reconnect_max = reconnect_max
        self._current: Outgoing | None = None
        # One thread at a time per connection: a store is not safe to share across threads.
        self._limiter = trio.CapacityLimiter(1)
        self._store_blocking = True

    def _fault(self, point: str) -> None:
        if self._hook is not None:
            self._hook(point, self.name)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await call_store(self._store_blocking, self._limiter, fn, *args)

    async def _connect(self) -> Store:
        store = self._factory()
        if self._wrap is not None:
            store = self._wrap(store)
        self._store_blocking = store.blocking
        delay = self._reconnect_delay
        while True:
            try:
                await self._call(store.connect)
                return store
            except StoreUnavailable as exc:
                self.status = "reconnecting"
                self.errors += 1
                self.last_error = str(exc)
                log.warning("%s cannot connect (%s); retrying in %.2fs", self.name, exc, delay)
                await trio.sleep(delay)
                delay = min(self._reconnect_max, delay * 2)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        store = await self._connect()
        self.status = "running"
        task_status.started()
        try:
            while True:
                self._current = None
                outgoing = await self._mailbox.receive()
                self._current = outgoing
                batch, reply = outgoing
                try:
                    self._fault("store.before_commit")
                    rejected = await self._call(store.write_batch, batch.records)
                except StoreUnavailable as exc:
                    # Transient: the shard retries the batch; we reconnect in place.
                    self.errors += 1
                    self.last_error = str(exc)
                    self._current = None
                    await _answer(reply, StoreNack(batch.batch_id, str(exc)))
                    await self._call(store.close)
                    store = await self._connect()
                    self.status = "running"
                    continue
                self._fault("store.after_commit")
                self.batches += 1
                self.records += len(batch.records)
                self._current = None
                await _answer(reply, StoreAck(batch.batch_id, rejected))
        except BaseException as exc:
            # Whatever we were holding never got an answer: its outcome is unknown, so the
            # shard must retry it (writes are idempotent: versions only move forward).
            if self._current is not None:
                batch, reply = self._current
                self._current = None
                try:
                    reply.send_nowait(StoreNack(batch.batch_id, f"{self.name} crashed: {exc!r}"))
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    pass
            if not isinstance(exc, trio.Cancelled):
                self.status = "crashed"
                self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if self.status != "crashed":
                self.status = "stopped"
            store.close()

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            name=self.name,
            status=self.status,
            restarts=self.restarts,
            batches=self.batches,
            records=self.records,
            errors=self.errors,
            last_error=self.last_error,
        )


async def call_store(blocking: bool, limiter: trio.CapacityLimiter, fn: Any, *args: Any) -> Any:
    """Call a store method: in a worker thread if it blocks, else inline (then checkpoint)."""
    if blocking:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    result = fn(*args)
    await trio.lowlevel.checkpoint()
    return result


async def _answer(reply: trio.MemorySendChannel[Any], message: object) -> None:
    try:
        await reply.send(message)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass  # that shard incarnation is gone; its successor replays from the journal
