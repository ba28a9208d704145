"""The shard actor: a thin trio shell around :class:`ShardCore` and one journal.

Puts and gets run *inline in the caller's task*: trio never switches tasks without a
checkpoint, so a synchronous call into the core is as isolated as a message, and it saves a
task hop per write. The caller then waits on the journal's group commit, one wake per batch.
The actor's own task (``run``) replays the journal, builds batches, sends them to the store
actors and applies their answers; each restart is a new *incarnation* with a fresh core, a fresh
epoch and a fresh inbox, so answers meant for a dead incarnation are never applied.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from collections.abc import Awaitable, Callable, Container, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._core._config import Config
from .._core._epochs import EpochSource
from .._core._errors import (
    CacheClosed,
    JournalError,
    JournalFull,
    Overloaded,
    PartitionMoved,
    ShardCrashed,
    StoreFenced,
    StoreRejected,
    StoreUnavailable,
    describe,
    leaves,
)
from .._core._messages import (
    BatchFenced,
    Fence,
    FlushBatch,
    FlushRequest,
    Receipt,
    Rejection,
    StoreAck,
    StoreNack,
    StoreRecord,
)
from .._core._routing import make_version
from .._core._shard_core import FlushPolicy, ShardCore
from .._core._stats import RATE_WINDOW, LatencyRecorder, ShardStatistics
from .._core._status import SHARD, Status
from .._journal._backend import JournalBackend, OpenJournal
from .._journal._recovery import paused_gc
from ._seams import Seams

if TYPE_CHECKING:
    from ._store_actor import Outgoing

log = logging.getLogger("writebehind")

Inbox = trio.MemorySendChannel[Any]
# Looked up once: a put calls each of them.
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_yield = trio.lowlevel.cancel_shielded_checkpoint
_new = object.__new__
_set_key, _set_version, _set_shard, _set_seq = (
    vars(Receipt)[field.name].__set__ for field in attrs.fields(Receipt)
)
WRITE_THROUGH_CONCURRENCY = 64


class ShardActor:
    def __init__(
        self,
        shard: int,
        config: Config,
        *,
        store_mailbox: trio.MemorySendChannel[Outgoing],
        epochs: EpochSource,
        open_journal: OpenJournal,
        read_store: Callable[[str], Awaitable[StoreRecord | None]],
        seams: Seams,
        alert: Callable[[str, str, str], None],
        rng: random.Random,
    ) -> None:
        self.shard = shard
        self.name = f"shard-{shard}"
        self.config = config
        self.status = SHARD.initial
        self.restarts = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None  # trio clock
        self.acked_seq = 0
        self.core: ShardCore | None = None
        self.journal: JournalBackend | None = None
        self._store_mailbox = store_mailbox
        self._epochs = epochs
        self._open_journal = open_journal
        self._read_store = read_store
        self._hook = seams.fault_point
        self._on_serving = seams.on_serving
        self._alert = alert
        self._rng = rng
        self._incarnation = 0
        self._epoch = 0
        self._fence: Fence | None = None  # cluster mode: (partition, epoch) on every batch
        # make_version(epoch, 0): a put ORs its counter in, no call on the hot path.
        self._version_base = 0
        self._counter = 0
        self._inbox: Inbox | None = None
        self._kicked = False
        self._ready = trio.Event()
        self._progress = trio.Event()
        self._serving_changed = trio.Event()
        self._closed = False
        self._away = False  # handed over to another member (cluster mode)
        self._crash: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        # write-through batch id -> nack reason, or the store's refusal for good
        self._through: dict[int, str | Rejection | None] = {}
        self._through_records: dict[int, StoreRecord] = {}
        # key -> newest version of a write of unknown outcome (its answer was lost: the
        # incarnation died or the caller gave up; or the store failed a write-through, which
        # may still land later): a read-through older than it is served but never cached.
        self._unanswered: dict[str, int] = {}
        self._through_ids = 0
        self._through_limit = trio.Semaphore(WRITE_THROUGH_CONCURRENCY)
        # write_many's write-through batches: batch id -> its records, then -> its outcome
        # (the nack reason, or key -> the store's refusal for good of the records it refused).
        self._through_many: dict[int, tuple[StoreRecord, ...]] = {}
        self._through_many_done: dict[int, str | dict[str, Rejection]] = {}
        self._ack_times: collections.deque[float] = collections.deque(maxlen=4096)
        # For metrics, over the shard's life (see ShardStatistics); never on the put path.
        self.flush_latency = LatencyRecorder()
        self._sent_at: dict[int, float] = {}  # batch id -> when it went to the store actors
        self.flush_failures = self.refused = self.backpressure_waits = self.overloaded = 0
        self.recovered_records = 0
        self.recovery_seconds = 0.0
        # Until when a put needs no age check: a lower bound of oldest-unpersisted +
        # max_dirty_age (the oldest only moves later, except when the shard was clean).
        self._admit_until = math.inf
        self._clock: trio.abc.Clock = trio.lowlevel.current_clock()  # the cache's run's clock
        self._sleeps_until = math.inf  # the flusher loop's current deadline
        # Read on every put: kept as plain attributes, not looked up through the config.
        self._ack = config.journal_ack
        self._max_dirty = config.max_dirty_per_shard
        self._max_dirty_age = config.max_dirty_age
        self._flush_threshold = config.flush_threshold

    # -- the actor ----------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """One incarnation: replay, then serve until cancelled or crashed."""
        self._incarnation += 1
        self._crash = None
        self._become(Status.REPLAYING)
        scope = self._scope = trio.CancelScope()
        capacity = self.config.max_inflight_batches + 1 + WRITE_THROUGH_CONCURRENCY
        inbox, replies = trio.open_memory_channel[Any](capacity)
        journal: JournalBackend | None = None
        core: ShardCore | None = None
        try:
            with scope:
                epoch = await self._epochs.take_epoch(self.shard)
                fence = Fence(self.shard, epoch) if self._epochs.fences else None
                policy = FlushPolicy(
                    flush_interval=self.config.flush_interval,
                    batch_size=self.config.batch_size,
                    flush_threshold=self.config.flush_threshold,
                    max_inflight=self.config.max_inflight_batches,
                    retry_initial=self.config.retry_initial,
                    retry_max=self.config.retry_max,
                )
                # ack='journal'/'fsync': nothing reaches the store before its journal record is
                # as durable as the ack mode promises (the store must never get ahead of it).
                hold = self._ack in ("journal", "fsync")
                core = ShardCore(
                    self.shard, self._incarnation, policy,
                    max_entries=self.config.max_entries_per_shard, rng=self._rng,
                    hold_until_durable=hold, fence=fence,
                )
                async with trio.open_nursery() as nursery:
                    if self.config.ack != "store":
                        opened_at = trio.current_time()
                        journal = await self._open_journal(
                            self.shard,
                            fault_point=self._fault if self._hook is not None else None,
                            on_event=self._journal_event,
                        )
                        recovery = journal.replay()
                        now = trio.current_time()
                        with paused_gc():
                            replayed = core.replay(recovery.records, now)
                        core.note_seq(recovery.next_seq - 1)
                        self._refresh_admission(core)
                        self.acked_seq = max(self.acked_seq, recovery.next_seq - 1)
                        self.recovered_records += replayed
                        self.recovery_seconds += trio.current_time() - opened_at
                        if replayed:
                            log.info("%s replayed %d journal records", self.name, replayed)
                            self._alert(
                                "replay", self.name, f"replayed {replayed} journal records"
                            )
                        # Every cut is an alert: a torn tail may be synced data destroyed.
                        for kind, message in recovery.cuts:
                            self._alert(kind, self.name, f"{self.name}: {message}")
                        del recovery  # its records live on in the core, not in this frame
                        await nursery.start(journal.run)
                    self._epoch, self._counter, self._fence = epoch, 0, fence
                    self._version_base = make_version(epoch, 0)
                    self.core, self.journal, self._inbox = core, journal, inbox
                    self._kicked = False
                    self._become(Status.RUNNING)
                    self._ready.set()
                    self._note_serving_changed()
                    if self._on_serving is not None:
                        self._on_serving(self.shard, epoch)
                    task_status.started()
                    if journal is not None and hold:
                        nursery.start_soon(self._watch_journal, core, journal)
                    await self._serve(core, journal, replies)
        except BaseException as exc:
            # A stop (the supervisor's, a hand-over's) cancels the incarnation's nursery,
            # which raises its tasks' Cancelled as a group: that is no crash either.
            if self._crash is None and leaves(exc, skip=trio.Cancelled):
                self._crash = exc
            raise
        finally:
            self._not_ready()
            if core is not None:
                # Batches this incarnation sent may land after the next one read the store
                # (their records are replayed only as far as the journal kept them).
                self._note_unanswered(core.in_flight())
            replies.close()
            if journal is not None:
                journal.close()
            self._become(Status.CRASHED if self._crash is not None else Status.STOPPED)
            if self._crash is not None:
                self.last_error = describe(self._crash)
                self.last_error_time = trio.current_time()
            self._notify()
        if self._crash is not None:
            raise self._crash

    async def _serve(
        self,
        core: ShardCore,
        journal: JournalBackend | None,
        replies: trio.MemoryReceiveChannel[Any],
    ) -> None:
        mark = core.persisted_mark()
        assert self._inbox is not None
        reply_to = self._inbox
        while True:
            now = trio.current_time()
            batch = core.take_batch(now)
            if batch is not None:
                self._fault("flush.building_batch")
                self._fault("flush.before_send")
                self._sent_at[batch.batch_id] = now
                await self._store_mailbox.send((batch, reply_to))
                continue
            self._sleeps_until = deadline = core.next_deadline(now)
            with trio.move_on_at(deadline):
                message = await replies.receive()
                changed = False
                while True:
                    self._handle(core, message)
                    changed = changed or not isinstance(message, FlushRequest)
                    try:
                        message = replies.receive_nowait()
                    except trio.WouldBlock:
                        break
                self._refresh_admission(core)
                new_mark = core.persisted_mark()
                if journal is not None and new_mark > mark:
                    self._fault("flush.after_ack_before_checkpoint")
                    journal.checkpoint_nowait(new_mark)
                    mark = new_mark
                # A kick alone changes nothing a waiter checks: waking it would make it kick
                # again at once, a busy loop for as long as the shard backs off.
                if changed:
                    self._notify()

    async def _watch_journal(self, core: ShardCore, journal: JournalBackend) -> None:
        """Tell the core as group commits make records durable; kick the flusher when that
        releases keys it may now send."""
        synced = self._ack == "fsync"
        seen = core.durable_mark()
        while True:
            seen = await journal.wait_beyond(seen, synced=synced)
            # Wake the loop only if that changes its plan: it sleeps for good (nothing was
            # sendable), or a batch is due now; else its deadline stands (one wake per
            # flush, not one per group commit).
            if core.note_durable(seen) and (
                self._sleeps_until == math.inf or core.due(trio.current_time())
            ):
                self._kick()

    def _handle(self, core: ShardCore, message: object) -> None:
        now = trio.current_time()
        if isinstance(message, FlushRequest):
            self._kicked = False
        elif isinstance(message, BatchFenced):
            # A newer owner holds the partition: this incarnation is a zombie. It stops at
            # once (callers in flight get ShardCrashed; nothing more is acknowledged), and
            # loses nothing acknowledged: the new owner replays the partition's journal.
            # Its restart waits in take_epoch until the partition is free again (the
            # supervisor reports the crash, naming the epochs).
            self._epochs.fenced(self.shard, self._epoch)
            raise StoreFenced(message.reason, partition=self.shard, epoch=self._epoch,
                              current=message.current)
        elif isinstance(message, StoreAck | StoreNack) and message.batch_id in self._through_many:
            self._settle_through_many(core, message, now)
        elif isinstance(message, StoreAck):
            self._ack_times.append(now)
            if message.batch_id in self._through:
                record = self._through_records.pop(message.batch_id)
                if message.rejected:  # not in the store: the caller must not be told it is
                    self._through[message.batch_id] = message.rejected[0]
                else:
                    core.settle(record, superseded=bool(message.superseded))
                    self._through[message.batch_id] = None
                    if self._unanswered.get(record.key, math.inf) < record.version:
                        del self._unanswered[record.key]  # this newer write wins in the store
            else:
                sent = self._sent_at.pop(message.batch_id, None)
                if sent is not None:
                    self.flush_latency.observe(now - sent)
                self.refused += len(message.rejected)
                core.on_ack(message.batch_id, message.rejected, message.superseded)
                for rejection in message.rejected:
                    self._alert(
                        "quarantine", self.name,
                        f"{self.name}: the store refused {rejection.key!r} for good "
                        f"({rejection.reason}); it is quarantined"
                    )
        elif isinstance(message, StoreNack):
            if message.batch_id in self._through:
                unknown = self._through_records.pop(message.batch_id, None)
                if unknown is not None:
                    # The write may have committed, or may still (a batch held up on its way
                    # lands later): whatever older value the map holds of the key may be
                    # stale, so reads ask the store, and cache nothing older than it.
                    core.drop_superseded(unknown.key, unknown.version)
                    self._note_unanswered((unknown,))
                self._through[message.batch_id] = message.reason
            else:
                self._sent_at.pop(message.batch_id, None)
                self.flush_failures += 1
                delay = core.on_nack(message.batch_id, now)
                self.last_error = message.reason
                self.last_error_time = now
                counts = core.statistics()
                self._alert(
                    "flush_failed", self.name,
                    f"{self.name}: flush failed ({message.reason}); retry #{counts.failures} "
                    f"in {delay:.3f}s, {counts.unpersisted} entries wait"
                )

    def _note_unanswered(self, records: Iterable[StoreRecord]) -> None:
        """These writes may still land in the store whenever (see ``_unanswered``)."""
        unanswered = self._unanswered
        for record in records:
            if record.version > unanswered.get(record.key, 0):
                unanswered[record.key] = record.version

    def _settle_through_many(self, core: ShardCore, message: StoreAck | StoreNack,
                             now: float) -> None:
        records = self._through_many.pop(message.batch_id)
        if isinstance(message, StoreNack):
            for record in records:
                # It may have committed (or still may): an older value the map holds may
                # be stale now.
                core.drop_superseded(record.key, record.version)
            self._note_unanswered(records)
            self._through_many_done[message.batch_id] = message.reason
            return
        self._ack_times.append(now)
        refused = {(r.key, r.version): r for r in message.rejected}
        stale = {(s.key, s.version) for s in message.superseded}
        for record in records:
            if (record.key, record.version) not in refused:  # else: not in the store
                core.settle(record, superseded=(record.key, record.version) in stale)
        self._through_many_done[message.batch_id] = {r.key: r for r in refused.values()}

    def _journal_event(self, kind: str, message: str) -> None:
        # The disk filled up (puts now get JournalFull) or has room again.
        self._alert(kind, self.name, f"{self.name}: {message}")

    def _become(self, status: Status) -> None:
        self.status = SHARD.advance(self.status, status, self.name)

    def _fault(self, point: str) -> None:
        if self._hook is not None:
            self._hook(point, self.name)

    def crash(self, exc: BaseException) -> None:
        """Crash the current incarnation from outside its task (a fault in a caller's path)."""
        if self._scope is not None and self._crash is None:
            self._crash = exc
            self._scope.cancel()
            # Callers must not reach the dying incarnation while its task unwinds.
            self._not_ready()

    def _fault_inline(self, point: str) -> None:
        """A fault point on a caller's path: a raise there crashes the shard, not the caller."""
        if self._hook is None:
            return
        try:
            self._hook(point, self.name)
        except Exception as exc:
            self.crash(exc)
            raise ShardCrashed(
                f"{self.name} crashed at {point} while this write was in flight: it may or may "
                "not have been journaled; retry it"
            ) from exc

    def incarnation_serving(self) -> int | None:
        """The running incarnation's number, or None while none serves (crashed, stopped)."""
        return None if self.core is None else self._incarnation

    def _not_ready(self) -> None:
        serving = self.core is not None
        self.core = self.journal = self._inbox = None
        if self._ready.is_set():  # an unset one may have waiters: keep it for the next start
            self._ready = trio.Event()
        if serving:
            self._note_serving_changed()

    def _note_serving_changed(self) -> None:
        self._serving_changed.set()
        self._serving_changed = trio.Event()

    async def wait_serving(self, serving: bool = True) -> None:
        """Return once an incarnation serves (``serving``), or once none does (a crash, a
        stop): cluster hosting answers routed calls only while one does."""
        while (self.core is not None) != serving:
            await self._serving_changed.wait()

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _kick(self) -> None:
        if not self._kicked and self._inbox is not None:
            try:
                self._inbox.send_nowait(FlushRequest())
                self._kicked = True
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    def hand_off(self) -> None:
        """Cluster mode, after the supervisor stopped it: the shard is hosted elsewhere now;
        wake whoever waits for it (they get :class:`PartitionMoved`)."""
        self._away = True
        self._ready.set()
        self._notify()

    def take_back(self) -> None:
        """Cluster mode, before it starts again: hosted here again."""
        self._away = False
        if self._ready.is_set() and self.core is None:
            self._ready = trio.Event()

    def close(self) -> None:
        """The cache stopped: wake everyone who waits on this shard."""
        self._closed = True
        self._ready.set()
        self._notify()

    def unpersisted(self) -> int:
        """Entries the store does not confirm yet (0 while the shard is not running)."""
        core = self.core
        return 0 if core is None else core.unpersisted

    def quarantined(self) -> list[Rejection]:
        """The records the store refused for good (none while the shard is not running)."""
        core = self.core
        return [] if core is None else core.quarantined()

    def retry_quarantined(self, keys: Container[str] | None, now: float) -> int:
        """Put quarantined records (of ``keys``, or all) back in line; returns how many."""
        core = self.core
        if core is None:
            return 0
        count = core.retry_quarantine(now, keys)
        self._kick()  # the loop sends the retried records
        return count

    def discard_quarantined(self, keys: Container[str] | None) -> int:
        """Give up quarantined records (of ``keys``, or all); returns how many."""
        core = self.core
        if core is None:
            return 0
        count = core.discard_quarantine(keys)
        self._kick()  # the loop moves the checkpoint past them
        return count

    async def seal(self) -> None:
        """Before a clean stop: get every journal record, and a checkpoint of what the store
        holds, to disk, so the next start replays exactly what is still unpersisted."""
        core, journal = self.core, self.journal
        if core is None or journal is None:
            return
        try:
            await journal.wait_synced(journal.checkpoint_nowait(core.persisted_mark()))
        except JournalError:
            pass  # a failed journal keeps what it has; the next start replays that

    # -- the callers' side --------------------------------------------------------------------

    async def _ready_core(self) -> ShardCore:
        while True:
            if self._closed:
                raise CacheClosed("the cache is closed")
            if self._away:
                raise PartitionMoved(
                    f"{self.name} was handed over to another member; nothing was done, retry"
                )
            core = self.core
            if core is not None:
                return core
            await self._ready.wait()

    def _refresh_admission(self, core: ShardCore) -> None:
        oldest = core.oldest_dirty_since()
        self._admit_until = math.inf if oldest is None else oldest + self._max_dirty_age

    async def _admit(self, core: ShardCore) -> ShardCore:
        """Backpressure: wait (or raise ``Overloaded``) while the shard holds too much."""
        config = self.config
        waited = False
        while True:
            age = core.oldest_dirty_since()
            too_old = age is not None and trio.current_time() - age > config.max_dirty_age
            if core.unpersisted < config.max_dirty_per_shard and not too_old:
                return core
            reason = (
                f"{self.name} holds {core.unpersisted} unpersisted entries "
                f"(max_dirty={config.max_dirty} over {config.shards} shards)"
                if not too_old
                else f"{self.name}'s oldest unpersisted write is older than "
                f"max_dirty_age={config.max_dirty_age}s"
            )
            if config.on_overload == "raise":
                self.overloaded += 1
                raise Overloaded(f"{reason}; the store is not keeping up, retry later")
            if not waited:
                waited = True
                self.backpressure_waits += 1
            core.request_flush()
            self._kick()
            await self._progress.wait()
            core = await self._ready_core()

    async def write(self, key: str, value: bytes | None, raw_key: bytes) -> Receipt:
        """Journal a put (a delete when ``value`` is None) and wait for its ack mode;
        ``raw_key`` is ``key`` in UTF-8, which the cache already made to route it."""
        # A put is a trio checkpoint in every ack mode: a cancelled caller is refused before
        # anything happens, and (below) a put loop in ack='memory' yields to the journal writer
        # and the flusher instead of starving them.
        await _checkpoint_if_cancelled()
        core = self.core
        if core is None or self._closed:
            core = await self._ready_core()
        now = self._clock.current_time()
        unpersisted = core.unpersisted
        if unpersisted >= self._max_dirty or now >= self._admit_until:
            core = await self._admit(core)
            now = self._clock.current_time()
            unpersisted = core.unpersisted
        ack = self._ack
        if ack == "store":
            return await self._write_through(key, value)
        journal = self.journal
        assert journal is not None
        self._counter += 1
        version = self._version_base | self._counter
        if self._hook is not None:  # the put path skips three calls when no hook is set
            self._fault_inline("put.before_journal_append")
        try:
            seq = journal.append_encoded(raw_key, value, version)
        except JournalFull:
            raise  # refused before anything happened: the caller retries later
        except JournalError as exc:
            raise ShardCrashed(f"{self.name}'s journal is unusable: {exc}") from exc
        count = core.write(key, value, version, seq, now)  # dirty keys now
        if not unpersisted and count:  # the shard was clean: the age clock starts now
            self._admit_until = now + self._max_dirty_age
        if self._hook is not None:
            self._fault_inline("put.after_journal_append")
        if count == 1 or count >= self._flush_threshold:
            self._kick()  # the first dirty key starts the flush timer; the threshold flushes now
        try:
            if ack == "fsync":
                await journal.wait_synced(seq)
            elif ack == "journal":
                await journal.wait_written(seq)
            else:
                await _yield()  # done: not cancellable now
        except JournalError as exc:
            raise ShardCrashed(
                f"{self.name} crashed while this write was in flight ({exc}); it may or may not "
                "be durable; retry it"
            ) from exc
        if self.core is not core:  # the incarnation that took the write died while we waited
            raise ShardCrashed(
                f"{self.name} crashed while this write was in flight; it may or may not be "
                "durable; retry it"
            )
        if self._hook is not None:
            self._fault_inline("put.after_sync_before_ack")
        if seq > self.acked_seq:
            self.acked_seq = seq
        # Built through its slots: Receipt's attrs __init__ (object.__setattr__ per field)
        # costs twice as much, once per put.
        receipt = _new(Receipt)
        _set_key(receipt, key)
        _set_version(receipt, version)
        _set_shard(receipt, self.shard)
        _set_seq(receipt, seq)
        return receipt

    async def _write_through(self, key: str, value: bytes | None) -> Receipt:
        async with self._through_limit:
            inbox = self._inbox
            incarnation = self._incarnation
            if inbox is None:
                raise ShardCrashed(f"{self.name} is restarting; retry")
            self._counter += 1
            version = self._version_base | self._counter
            self._through_ids -= 1  # negative ids never collide with the core's batches
            batch_id = self._through_ids
            record = StoreRecord(key, value, version)
            self._through_records[batch_id] = record
            self._through[batch_id] = "pending"
            sent = False
            try:
                await self._store_mailbox.send(
                    (FlushBatch(self.shard, incarnation, batch_id, (record,), self._fence), inbox)
                )
                sent = True
                while self._through[batch_id] == "pending":
                    if self._incarnation != incarnation or self._closed:
                        raise ShardCrashed(
                            f"{self.name} restarted while this write-through was in flight; it "
                            "may or may not be in the store; retry it"
                        )
                    await self._progress.wait()
                reason = self._through[batch_id]
            finally:
                if self._through.pop(batch_id, None) == "pending" and sent:
                    self._note_unanswered((record,))  # nobody will apply its answer
                self._through_records.pop(batch_id, None)
            if isinstance(reason, Rejection):
                raise StoreRejected(
                    f"the store refused {key!r} for good ({reason.reason}); nothing was written"
                )
            if reason is not None:
                raise StoreUnavailable(f"write-through of {key!r} failed: {reason}")
            return Receipt(key, version, self.shard, 0)

    async def write_many(
        self, items: Sequence[tuple[str, bytes | None, bytes]]
    ) -> list[Receipt | StoreRejected]:
        """:meth:`write` of many distinct keys of this shard, ``(key, value or None, UTF-8
        key)`` each: admitted once, journaled as one append, one wait for the ack mode.

        All or nothing for the shard's part: an error raised means no key of it was
        acknowledged (after a refusal, ``Overloaded`` or ``JournalFull``, none happened; after
        one of ``UNCERTAIN_OUTCOME`` each may or may not have). The one exception is
        ``ack='store'``, where the store may refuse single records of the batch for good:
        their place in the list holds the :class:`StoreRejected` (nothing of them written),
        the others their receipts."""
        await _checkpoint_if_cancelled()
        core = self.core
        if core is None or self._closed:
            core = await self._ready_core()
        now = self._clock.current_time()
        unpersisted = core.unpersisted
        # Admitted like one put (the part may take the shard past max_dirty by its size, as
        # that many concurrent puts would): requiring room for all of it would starve a part
        # larger than the limit forever.
        if unpersisted >= self._max_dirty or now >= self._admit_until:
            core = await self._admit(core)
            now = self._clock.current_time()
            unpersisted = core.unpersisted
        if self._ack == "store":
            return await self._write_through_many(items)
        journal = self.journal
        assert journal is not None
        base, first = self._version_base, self._counter + 1
        self._counter += len(items)
        versions = [base | (first + i) for i in range(len(items))]
        self._fault_inline("put.before_journal_append")
        try:
            last = journal.append_encoded_many(
                [(raw, value, versions[i]) for i, (_, value, raw) in enumerate(items)]
            )
        except JournalFull:
            raise  # refused before anything happened: the caller retries later
        except JournalError as exc:
            raise ShardCrashed(f"{self.name}'s journal is unusable: {exc}") from exc
        seq = last - len(items) + 1
        kick = False
        count = 0
        for i, (key, value, _) in enumerate(items):
            count = core.write(key, value, versions[i], seq, now)
            seq += 1
            kick = kick or count == 1  # the first dirty key starts the flush timer
        if not unpersisted and count:  # the shard was clean: the age clock starts now
            self._admit_until = now + self._max_dirty_age
        self._fault_inline("put.after_journal_append")
        if kick or count >= self._flush_threshold:
            self._kick()
        try:
            if self._ack == "fsync":
                await journal.wait_synced(last)
            elif self._ack == "journal":
                await journal.wait_written(last)
            else:
                await _yield()  # done: not cancellable now
        except JournalError as exc:
            raise ShardCrashed(
                f"{self.name} crashed while these writes were in flight ({exc}); each may or "
                "may not be durable; retry them"
            ) from exc
        if self.core is not core:  # the incarnation that took the writes died while we waited
            raise ShardCrashed(
                f"{self.name} crashed while these writes were in flight; each may or may not "
                "be durable; retry them"
            )
        self._fault_inline("put.after_sync_before_ack")
        if last > self.acked_seq:
            self.acked_seq = last
        first_seq = last - len(items) + 1
        return [
            Receipt(key, versions[i], self.shard, first_seq + i)
            for i, (key, _, _) in enumerate(items)
        ]

    async def _write_through_many(
        self, items: Sequence[tuple[str, bytes | None, bytes]]
    ) -> list[Receipt | StoreRejected]:
        """``ack='store'``: the part's records as one write-through batch (one transaction)."""
        async with self._through_limit:
            inbox = self._inbox
            incarnation = self._incarnation
            if inbox is None:
                raise ShardCrashed(f"{self.name} is restarting; retry")
            base, first = self._version_base, self._counter + 1
            self._counter += len(items)
            records = tuple(
                StoreRecord(key, value, base | (first + i))
                for i, (key, value, _) in enumerate(items)
            )
            self._through_ids -= 1  # negative ids never collide with the core's batches
            batch_id = self._through_ids
            self._through_many[batch_id] = records
            sent = False
            try:
                await self._store_mailbox.send(
                    (FlushBatch(self.shard, incarnation, batch_id, records, self._fence), inbox)
                )
                sent = True
                while batch_id not in self._through_many_done:
                    if self._incarnation != incarnation or self._closed:
                        raise ShardCrashed(
                            f"{self.name} restarted while this write-through batch was in "
                            "flight; each write may or may not be in the store; retry them"
                        )
                    await self._progress.wait()
                outcome = self._through_many_done[batch_id]
            finally:
                if self._through_many.pop(batch_id, None) is not None and sent:
                    self._note_unanswered(records)  # nobody will apply its answer
                self._through_many_done.pop(batch_id, None)
            if isinstance(outcome, str):
                raise StoreUnavailable(f"write-through of {len(records)} keys failed: {outcome}")
            return [
                Receipt(r.key, r.version, self.shard, 0) if r.key not in outcome
                else StoreRejected(
                    f"the store refused {r.key!r} for good ({outcome[r.key].reason}); "
                    "nothing was written"
                )
                for r in records
            ]

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """:meth:`get` of many keys of this shard: the hits in one pass (one schedule
        point), the misses read through the store one by one."""
        await _checkpoint_if_cancelled()
        core = await self._ready_core()
        journal = self.journal
        found: dict[str, bytes | None] = {}
        missed: list[str] = []
        for key in keys:
            entry = core.read(key)
            if entry is None:
                missed.append(key)
            else:
                found[key] = entry.value
        if not missed:
            await _yield()
        self._check_may_serve(journal)
        for key in missed:
            found[key] = await self.get(key)
        return found

    def _check_may_serve(self, journal: JournalBackend | None) -> None:
        """Refuse to answer a read when ``journal``, that of the incarnation the value was
        taken from, says it may no longer speak for its keys (a cluster partition whose
        lease lapsed: a newer owner may have acknowledged newer writes). Checked after the
        value was taken, with no schedule point in between that could let the lease lapse
        unseen; asked of that incarnation's journal even if it died meanwhile (the cluster
        suite found a zombie's read answered from memory when the check asked the shard's
        journal of the moment: none, the incarnation having just given up)."""
        may_serve = getattr(journal, "may_serve", None)
        if may_serve is not None and not may_serve():
            raise ShardCrashed(f"{self.name} may no longer answer reads: its journal's "
                               "owner lost the right to serve (a partition lease lapsed)")

    async def get(self, key: str) -> bytes | None:
        await trio.lowlevel.checkpoint_if_cancelled()
        core = await self._ready_core()
        journal = self.journal
        entry = core.read(key)
        if entry is not None:
            # A hit is still a schedule point, so a read loop never starves the actors.
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._check_may_serve(journal)
            return entry.value
        reader, before = core, core.mutation_count()
        record = await self._read_store(key)
        core = await self._ready_core()
        self._check_may_serve(self.journal)
        entry = core.peek(key)
        if entry is not None:
            return entry.value
        # Cache what was read only if nothing happened to the shard meanwhile: no write or
        # eviction, and no restart (a new incarnation's counter says nothing of the old one's).
        if record is not None and core is reader and core.mutation_count() == before:
            unanswered = self._unanswered.get(key)
            if unanswered is None or record.version >= unanswered:
                self._unanswered.pop(key, None)  # that write landed, or a newer one did
                core.load_clean(record)
        return None if record is None else record.value

    async def wait_persisted(self, receipt: Receipt) -> None:
        while True:
            core = await self._ready_core()
            if receipt.seq == 0 or core.is_persisted(receipt.key, receipt.version, receipt.seq):
                return
            core.request_flush()
            self._kick()
            await self._progress.wait()

    async def flush(self) -> None:
        """Wait until every write acknowledged before the call is persisted or quarantined."""
        if self.config.ack == "store":
            return
        core = await self._ready_core()
        owed = core.owed()
        while not core.paid(owed):
            core.request_flush()
            self._kick()
            await self._progress.wait()
            core = await self._ready_core()

    def statistics(self) -> ShardStatistics:
        core, journal = self.core, self.journal
        js = journal.statistics() if journal is not None else None
        cs = core.statistics() if core is not None else None
        now = trio.current_time()
        since = cs.oldest_dirty_since if cs is not None else None
        return ShardStatistics(
            name=self.name,
            shard=self.shard,
            status=self.status.value,
            restarts=self.restarts,
            entries=cs.entries if cs else 0,
            dirty=cs.dirty if cs else 0,
            inflight_batches=cs.inflight_batches if cs else 0,
            unpersisted=cs.unpersisted if cs else 0,
            oldest_dirty_age=None if since is None else max(0.0, now - since),
            mailbox_depth=cs.inflight_batches if cs else 0,
            acked_seq=self.acked_seq,
            written_seq=js.written_seq if js else 0,
            synced_seq=js.synced_seq if js else 0,
            persisted_seq=js.persisted_seq if js else 0,
            journal_bytes=js.bytes if js else 0,
            journal_segments=js.segments if js else 0,
            batches_acked=cs.batches_acked if cs else 0,
            records_persisted=cs.records_persisted if cs else 0,
            evictions=cs.evictions if cs else 0,
            quarantined=cs.quarantined if cs else 0,
            last_error=self.last_error,
            last_error_time=self.last_error_time,
            batches_per_second=sum(t > now - RATE_WINDOW for t in self._ack_times) / RATE_WINDOW,
            flush_failures=self.flush_failures,
            refused=self.refused,
            backpressure_waits=self.backpressure_waits,
            overloaded=self.overloaded,
            recovered_records=self.recovered_records,
            recovery_seconds=self.recovery_seconds,
        )
