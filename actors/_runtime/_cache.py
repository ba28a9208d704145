"""The cache: :class:`Cache`, and running one (``serve_cache``/``open_cache``).

What runs beside a cache (the inspector, the metrics endpoint) lives in a layer above and is
handed in as *attachments*; ``writebehind.open_cache`` passes the ones ``Config`` asks for.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from zlib import crc32

import trio

from .._core._config import Config, mask_url
from .._core._epochs import EpochSource
from .._core._errors import (
    UNCERTAIN_OUTCOME,
    CacheClosed,
    ConfigError,
    PartiallyAcknowledged,
    ShardCrashed,
    StoreRejected,
    StoreUnavailable,
    Unstorable,
    WritebehindError,
    describe,
    leaves,
)
from .._core._limits import StoreLimits, store_limits
from .._core._messages import Receipt, StoreRecord
from .._core._stats import (
    KEPT_EVENTS,
    CacheEvent,
    CacheStatistics,
    ClusterStatistics,
    LatencyRecorder,
    LatencyStatistics,
)
from .._core._status import CACHE, Status
from .._journal import file_journals, run_io
from .._journal._backend import OpenJournal
from .._journal._fs import FileSystem, OsFileSystem, write_file_atomic
from .._stores._protocol import DISCARD, Store
from .._stores._registry import store_factory
from ._elsewhere import Partition
from ._lease import LeaseKeeper
from ._recover import recover_journals
from ._seams import Seams
from ._shard import ShardActor
from ._store_actor import Outgoing, StoreActor, call_store
from ._supervisor import Supervisor

log = logging.getLogger("writebehind")
# Compared on every put: a module global, not an attribute of the enum class (slower).
_RUNNING = Status.RUNNING


class Endpoint(Protocol):
    """A server running beside a cache (the inspector, the metrics endpoint)."""

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...


#: Starts something beside a running cache, in its nursery, once its shards serve (the
#: inspector, the metrics endpoint). It logs rather than raises when it cannot start.
Attachment = Callable[["Cache", trio.Nursery], Awaitable[None]]

LAYOUT_FILE = "writebehind.json"


class Cache:
    """A running cache. Get one from :func:`open_cache` or ``nursery.start(serve_cache, ...)``."""

    def __init__(
        self,
        config: Config,
        seams: Seams,
        attachments: Sequence[Attachment] = (),
        *,
        open_journal: OpenJournal | None = None,
        epochs: EpochSource | None = None,
        store_lease: bool = True,
        elsewhere: Callable[[int], Partition] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        cluster_view: Callable[[], ClusterStatistics | None] | None = None,
    ) -> None:
        """``open_journal`` gives each shard its journals (default: files under
        ``Config.journal_dir``), ``epochs`` its incarnations' epochs (default: the store's
        counter): the seams a cluster mode plugs its replicated log and its lease into.
        ``store_lease=False`` skips the store table's one-instance lease: a cluster's
        partition leases decide who writes which keys, so several instances share a table.

        ``elsewhere`` (cluster mode) makes the cache host no shard at start: shard ``i``'s
        calls go to ``elsewhere(i)`` until :meth:`host` starts it here (and again after
        :meth:`unhost`). ``on_stop`` runs when a stop is asked, before the drain (a cluster
        member leaves and hands its shards over there). ``cluster_view`` gives
        :meth:`cluster_view`'s snapshot, also ``statistics().cluster`` (None: a single
        process)."""
        self.config = config
        self._attachments = tuple(attachments)
        self._seams = seams
        self._rng = random.Random(config.seed)
        self._factory = seams.store_factory or store_factory(
            config.store, table=config.store_table, timeout=config.store_timeout
        )
        self._reader: Store | None = None
        self._reader_limiter = trio.CapacityLimiter(1)
        self._lease: LeaseKeeper | None = None  # a store that supports leases has one
        self._store_lease = store_lease
        send, receive = trio.open_memory_channel[Outgoing](config.store_actors * 2)
        self._mailbox = send
        self._store_actors = [
            StoreActor(
                i, self._factory, receive, seams=seams,
                reconnect_delay=config.retry_initial, reconnect_max=config.retry_max,
            )
            for i in range(config.store_actors)
        ]
        self._shard_count = config.shards
        self._max_key_bytes = config.max_key_bytes
        self._set_limits(store_limits(config.store))  # refined from the store itself at start
        self._max_value_bytes = config.max_value_bytes
        self._epochs: EpochSource = epochs or StoreEpochs(self._reader_call)
        journals = open_journal or file_journals(config, seams.filesystem)
        self._actors = [
            ShardActor(
                i, config, store_mailbox=send, epochs=self._epochs, open_journal=journals,
                read_store=self._read, seams=seams, alert=self._alert,
                rng=random.Random(self._rng.getrandbits(64)),
            )
            for i in range(config.shards)
        ]
        # Who answers each shard's calls: its actor here, or (cluster mode) a stand-in that
        # routes them to the member hosting it. _route reads it on every put.
        self._elsewhere = elsewhere
        self._shards: list[Partition] = (
            list(self._actors) if elsewhere is None
            else [elsewhere(i) for i in range(config.shards)]
        )
        self._on_stop = on_stop
        self._cluster_view = cluster_view
        self._nursery: trio.Nursery | None = None
        self._supervisor = Supervisor(
            max_restarts=config.max_restarts, restart_period=config.restart_period,
            on_event=self._emit,
        )
        self._listeners: list[Callable[[CacheEvent], None]] = []
        # Kept from the start whether or not anyone listens: a listener added later (the
        # inspector starts after the journals replayed) still sees what happened before.
        self._recent_events: collections.deque[CacheEvent] = collections.deque(
            maxlen=KEPT_EVENTS
        )
        self.inspector: Endpoint | None = None  # serving when Config.inspector is set
        self.metrics: Endpoint | None = None  # serving when Config.metrics is set
        self._ack_latency = LatencyRecorder()
        self._now = trio.lowlevel.current_clock().current_time
        self.status = CACHE.initial
        self._running_since: float | None = None  # trio clock
        self.alerts = 0
        self.last_alert: str | None = None
        self._stop = trio.Event()
        self._stopped = trio.Event()

    # -- the public API -----------------------------------------------------------------------

    async def put(self, key: str, value: bytes) -> Receipt:
        """Store ``value`` under ``key``; returns once acknowledged as the ack mode says."""
        start = self._now()
        shard, raw = self._route(key)
        self._check_storable(key, raw)
        if type(value) is not bytes or len(value) > self._max_value_bytes:
            value = self._as_value(value, f"value for {key!r}")
        receipt = await shard.write(key, value, raw)
        self._ack_latency.observe(self._now() - start)
        return receipt

    async def delete(self, key: str) -> Receipt:
        """Delete ``key`` (a versioned tombstone); acknowledged like a put."""
        start = self._now()
        shard, raw = self._route(key)
        self._check_storable(key, raw)
        receipt = await shard.write(key, None, raw)
        self._ack_latency.observe(self._now() - start)
        return receipt

    async def put_many(
        self, items: Mapping[str, bytes] | Iterable[tuple[str, bytes]]
    ) -> list[Receipt]:
        """Store many values at once: each key as :meth:`put` would, with one journal append
        and one wait for the ack mode per shard (the shards waited on concurrently).

        Returns a receipt per distinct key, in the order the keys first appear. A key given
        twice means what ``dict(items)`` means: the later value wins, and only it is written.
        Every item is checked first (as ``put`` checks one): a bad one raises ``TypeError``,
        ``ValueError`` or :class:`Unstorable` naming it, and nothing is written.
        If a shard's part fails (it crashed, ``Overloaded``, ``JournalFull``, the store...),
        the call raises :class:`PartiallyAcknowledged`, which says which keys were
        acknowledged (each exactly as a returned ``put``) and, for each other key, its error.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        return await self._write_many(pairs, "put_many")

    async def delete_many(self, keys: Iterable[str]) -> list[Receipt]:
        """Delete many keys at once: :meth:`put_many`'s rules, each key as :meth:`delete`."""
        return await self._write_many(((key, None) for key in keys), "delete_many")

    async def get_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """The newest value of each key (None: absent), as :meth:`get` reads one; the shards
        are read concurrently. The dict is in the order the keys first appear."""
        parts: dict[int, list[str]] = {}
        order: dict[str, None] = {}
        for index, key in enumerate(keys):
            if key in order:
                continue
            shard = self._check_item(index, key, None, "get_many")[0]
            parts.setdefault(shard.shard, []).append(key)
            order[key] = None
        if not parts:
            await trio.lowlevel.checkpoint()
            return {}
        found: dict[str, bytes | None] = {}

        async def read(shard: Partition, part: list[str]) -> None:
            found.update(await shard.get_many(part))

        if len(parts) == 1:
            [(number, part)] = parts.items()
            await read(self._shards[number], part)
        else:
            try:
                async with trio.open_nursery() as nursery:
                    for number, part in parts.items():
                        nursery.start_soon(read, self._shards[number], part)
            except BaseExceptionGroup as group:
                _raise_single(group, first_of=UNCERTAIN_OUTCOME)
        return {key: found[key] for key in order}

    async def _write_many(
        self, pairs: Iterable[tuple[str, bytes | None]], call: str
    ) -> list[Receipt]:
        start = self._now()
        # key -> (its shard, value, UTF-8 key); a later item of a key replaces the earlier.
        chosen: dict[str, tuple[Partition, bytes | None, bytes]] = {}
        for index, pair in enumerate(pairs):
            try:
                key, value = pair
            except (TypeError, ValueError):
                raise TypeError(
                    f"{call} item {index} must be a (key, value) pair, got {pair!r}; "
                    "nothing was written"
                ) from None
            chosen[key] = self._check_item(index, key, value, call)
        if not chosen:
            await trio.lowlevel.checkpoint()
            return []
        parts: dict[int, list[tuple[str, bytes | None, bytes]]] = {}
        for key, (shard, value, raw) in chosen.items():
            parts.setdefault(shard.shard, []).append((key, value, raw))
        outcomes: dict[int, list[Receipt | StoreRejected] | WritebehindError] = {}
        taken_by: dict[int, int | None] = {}  # shard -> the incarnation that acknowledged

        async def write(shard: Partition, part: list[tuple[str, bytes | None, bytes]]) -> None:
            try:
                outcomes[shard.shard] = await shard.write_many(part)
                taken_by[shard.shard] = shard.incarnation_serving()
            except WritebehindError as exc:  # the others' parts go on: their acks stand
                outcomes[shard.shard] = exc

        if len(parts) == 1:
            [(number, part)] = parts.items()
            await write(self._shards[number], part)
        else:
            try:
                async with trio.open_nursery() as nursery:
                    for number, part in parts.items():
                        nursery.start_soon(write, self._shards[number], part)
            except BaseExceptionGroup as group:
                _raise_single(group)
        if self.config.ack == "memory":
            # A shard that acknowledged its part in memory, then crashed while the call waited
            # on the others, lost it (its journal buffer): the call must not report it as
            # acknowledged. Journaled or stored acknowledgements survive a shard crash.
            for number, incarnation in taken_by.items():
                if self._shards[number].incarnation_serving() != incarnation:
                    outcomes[number] = ShardCrashed(
                        f"shard-{number} crashed after taking its part of this call in memory "
                        "and before the call returned; each write may or may not have "
                        "happened; retry them"
                    )
        acknowledged: dict[str, Receipt] = {}
        failed: dict[str, WritebehindError] = {}
        for number, part in parts.items():
            outcome = outcomes[number]
            for i, (key, _, _) in enumerate(part):
                answer = outcome if isinstance(outcome, WritebehindError) else outcome[i]
                if isinstance(answer, Receipt):
                    acknowledged[key] = answer
                else:
                    failed[key] = answer
        if failed:
            key, error = next(iter(failed.items()))
            raise PartiallyAcknowledged(
                f"{call}: {len(failed)} of {len(chosen)} keys were not acknowledged (first: "
                f"{key!r}: {describe(error)}); {len(acknowledged)} were: see .acknowledged "
                "and .failed",
                acknowledged=acknowledged, failed=failed,
            )
        self._ack_latency.observe(self._now() - start)
        return [acknowledged[key] for key in chosen]

    def _check_item(
        self, index: int, key: str, value: bytes | None, call: str
    ) -> tuple[Partition, bytes | None, bytes]:
        """``put``'s checks of one item of a call on many keys (the value: unless None), with
        the item named in the error; returns its shard, its value as bytes and its UTF-8 key."""
        try:
            shard, raw = self._route(key)
            if call != "get_many":
                self._check_storable(key, raw)
            if value is not None or call == "put_many":
                value = self._as_value(value, "value")
        except (TypeError, ValueError) as exc:  # Unstorable too: it is a ValueError
            nothing = "" if call == "get_many" else "; nothing was written"
            raise type(exc)(f"{call} item {index} ({key!r}): {exc}{nothing}") from None
        return shard, value, raw

    def _as_value(self, value: object, what: str) -> bytes:
        """``value`` as bytes, if it is bytes-like and within ``Config.max_value_bytes``;
        else the error, naming it as ``what``."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(
                f"value must be bytes, got {type(value).__name__}; encode it first "
                "(for text: value.encode())"
            )
        value = bytes(value)
        if len(value) > self._max_value_bytes:
            raise ValueError(
                f"{what} is {len(value)} bytes, over "
                f"Config.max_value_bytes={self._max_value_bytes}"
            )
        return value

    async def get(self, key: str) -> bytes | None:
        """The newest value (read-your-writes), reading through the store on a miss."""
        return await self._route(key)[0].get(key)

    async def flush(self) -> None:
        """Return once every write acknowledged before the call is in the store.

        Records the store refused for good are quarantined rather than waited for; see
        ``statistics().quarantined``.
        """
        self._check_open()
        try:
            async with trio.open_nursery() as nursery:
                for shard in self._shards:
                    nursery.start_soon(shard.flush)
        except BaseExceptionGroup as group:
            # The cache closing (or a shard crashing) under every shard's flush: one error.
            _raise_single(group, first_of=(CacheClosed, ShardCrashed))

    async def wait_persisted(self, receipt: Receipt) -> None:
        """Return once the write behind ``receipt`` (or a newer one of its key) is in the store."""
        self._check_open()
        await self._shards[receipt.shard].wait_persisted(receipt)

    def statistics(self) -> CacheStatistics:
        """A frozen snapshot of every actor."""
        shards = tuple(s.statistics() for s in self._actors)
        return CacheStatistics(
            ack=self.config.ack,
            status=self.status.value,
            shards=shards,
            stores=tuple(a.statistics() for a in self._store_actors),
            store_mailbox_depth=self._mailbox.statistics().current_buffer_used,
            quarantined=sum(s.quarantined for s in shards),
            alerts=self.alerts,
            last_alert=self.last_alert,
            ack_latency=self._ack_latency.statistics(),
            flush_latency=LatencyStatistics.merge(
                s.flush_latency.statistics() for s in self._actors
            ),
            store=mask_url(self.config.store),
            store_table=self.config.store_table,
            uptime=0.0 if self._running_since is None else self._now() - self._running_since,
            cluster=self.cluster_view(),
        )

    def cluster_view(self) -> ClusterStatistics | None:
        """Cluster mode: a frozen snapshot of this member (live members, hosted partitions,
        leases and their epochs, take-overs, hand-overs; ``statistics().cluster``); None in
        single-process mode."""
        return None if self._cluster_view is None else self._cluster_view()

    def quarantined(self) -> list[tuple[str, int, str]]:
        """``(key, version, reason)`` of every record the store refused for good."""
        return [
            (q.key, q.version, q.reason)
            for shard in self._actors
            for q in shard.quarantined()
        ]

    async def retry_quarantined(self, keys: Iterable[str] | None = None) -> int:
        """Put quarantined records (of ``keys``, or all) back in line for the store (after
        fixing what made the store refuse them); returns how many. The store's quarantine
        table forgets them: if refused again, they are quarantined (and recorded) afresh."""
        return await self._resolve_quarantine("retry", keys)

    async def discard_quarantined(self, keys: Iterable[str] | None = None) -> int:
        """Give up quarantined records (of ``keys``, or all) for good; returns how many.

        The store keeps what it holds for each key (an older version, or nothing), and reads
        return that from now on: the refused writes are lost, by the operator's decision.
        Their journal records no longer pin the checkpoint. The decision is recorded in the
        store's quarantine table, so a replay of the same records (a restart before the
        checkpoint moved) finds them discarded too.
        """
        return await self._resolve_quarantine(DISCARD, keys)

    async def _resolve_quarantine(self, action: str, keys: Iterable[str] | None) -> int:
        self._check_open()
        wanted = None if keys is None else set(keys)
        chosen = sorted({
            q.key
            for shard in self._actors
            for q in shard.quarantined()
            if wanted is None or q.key in wanted
        })
        if not chosen:
            return 0
        reader = self._reader
        if reader is not None and hasattr(reader, "resolve_quarantine"):
            await self._reader_call("resolve_quarantine", action, chosen)
        count = 0
        now = trio.current_time()
        for shard in self._actors:
            if action == DISCARD:
                count += shard.discard_quarantined(wanted)
            else:
                count += shard.retry_quarantined(wanted, now)
        return count

    async def aclose(self) -> None:
        """Drain (within ``Config.drain_timeout``) and stop; what is left replays next start."""
        self._stop.set()
        await self._stopped.wait()

    # -- internals ----------------------------------------------------------------------------

    def _route(self, key: str) -> tuple[Partition, bytes]:
        """Validate ``key`` (and that the cache is open); return the shard that owns it
        (:func:`~writebehind.shard_of`) and the key's UTF-8 bytes, which the journal reuses."""
        if not isinstance(key, str):
            raise TypeError(f"key must be str, got {type(key).__name__}")
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"key {key!r} is not valid Unicode text: {exc}") from None
        if not raw:
            raise ValueError("key must not be empty")
        if len(raw) > self._max_key_bytes:
            raise ValueError(
                f"key is {len(raw)} bytes in UTF-8, over Config.max_key_bytes="
                f"{self._max_key_bytes}"
            )
        if self.status is not _RUNNING:
            self._check_open()
        # shard_of_utf8's rule, spelled out: a call costs 2-5% of a put in ack='memory'
        # (tests/test_routing.py checks that the two agree).
        return self._shards[crc32(raw) % self._shard_count], raw

    def _check_storable(self, key: str, raw: bytes) -> None:
        """Refuse a write of ``key`` the store could never hold (a read of it is a miss)."""
        if len(raw) > self._store_key_bytes:
            raise Unstorable(
                f"key is {len(raw)} bytes in UTF-8, over the {self._limits.name} store's "
                f"limit of {self._store_key_bytes} (its index cannot hold a longer key); "
                "shorten the key (hash a long one), nothing was written"
            )
        if self._refuse_nul and "\0" in key:
            raise Unstorable(
                f"key {key!r} holds a NUL character, which the {self._limits.name} store's "
                "text keys cannot hold; remove it or encode the key (percent-encoding, "
                "base64), nothing was written"
            )

    def _set_limits(self, limits: StoreLimits) -> None:
        self._limits = limits
        self._store_key_bytes = limits.max_key_bytes or self._max_key_bytes
        self._refuse_nul = not limits.nul_in_keys

    def _become(self, status: Status) -> None:
        self.status = CACHE.advance(self.status, status, "the cache")

    def _check_open(self) -> None:
        if self.status is not Status.RUNNING:
            raise CacheClosed(f"the cache is {self.status}; writes and reads are refused")

    def add_listener(self, listener: Callable[[CacheEvent], None]) -> None:
        """Call ``listener(event)`` for every :class:`CacheEvent` from now on.

        Listeners run synchronously inside the actor that had the event: keep them cheap (hand
        the event to a bounded queue). An exception a listener raises is logged and ignored.
        """
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[CacheEvent], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def recent_events(self) -> list[CacheEvent]:
        """The cache's most recent events, oldest first: at most ``KEPT_EVENTS`` (256),
        kept from its start whether or not a listener was added yet."""
        return list(self._recent_events)

    def record_event(self, kind: str, actor: str, detail: str) -> None:
        """Publish an event from outside the runtime (the chaos harness reports faults here)."""
        self._emit(kind, actor, detail)

    def _emit(self, kind: str, actor: str, detail: str, *, alert: bool = False) -> None:
        event = CacheEvent(kind, actor, detail, trio.current_time(), alert)
        self._recent_events.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a cache event listener raised; the cache carries on")

    def _alert(self, kind: str, actor: str, message: str) -> None:
        self._emit(kind, actor, message, alert=kind != "replay")
        if kind == "replay":
            return
        self.alerts += 1
        self.last_alert = message
        log.warning("%s", message)
        if self.config.on_alert is not None:
            try:
                self.config.on_alert(message)
            except Exception:
                log.exception("Config.on_alert raised; the cache carries on")

    async def _reader_call(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the reader connection; after a transient failure reconnect and
        try once more (a dropped connection must not fail every later read or restart)."""
        reader = self._reader
        if reader is None:
            raise CacheClosed("the cache's store reader is closed")
        try:
            return await call_store(
                reader.blocking, self._reader_limiter, getattr(reader, method), *args
            )
        except StoreUnavailable as exc:
            log.warning("the store reader failed (%s); reconnecting", exc)
            await call_store(reader.blocking, self._reader_limiter, reader.close)
            await call_store(reader.blocking, self._reader_limiter, reader.connect)
            return await call_store(
                reader.blocking, self._reader_limiter, getattr(reader, method), *args
            )

    async def _read(self, key: str) -> StoreRecord | None:
        record: StoreRecord | None = await self._reader_call("read", key)
        return record

    async def _prepare(self) -> None:
        reader = self._factory()
        if self._seams.wrap_store is not None:
            reader = self._seams.wrap_store(reader)
        await call_store(reader.blocking, self._reader_limiter, reader.connect)
        self._reader = reader
        if self._epochs.fences and not hasattr(reader, "write_batch_fenced"):
            raise ConfigError(
                f"{reader!r} cannot fence batches by partition epoch (no write_batch_fenced), "
                "which a cluster needs to refuse a former owner's late flushes; use a "
                "PostgreSQL (or SQLite) store"
            )
        if self._store_lease and hasattr(reader, "acquire_lease"):
            # One live instance per table, before anything is written to it (two would
            # overwrite each other's newer writes: the later epoch always wins).
            lease = LeaseKeeper(self._reader_call, self.config.store_table,
                                clock=self._seams.wall_clock, ttl=self.config.lease_ttl)
            await lease.acquire()
            self._lease = lease
        # The store itself says what it can hold (a harness's store stands in for the URL's).
        limits = getattr(reader, "limits", None)
        if isinstance(limits, StoreLimits):
            self._set_limits(limits)
        journal_dir = Path(self.config.journal_dir)
        fs: FileSystem = self._seams.filesystem or OsFileSystem()
        previous = await _journal_dir_io(fs, journal_dir, _read_layout, fs, journal_dir)
        if (previous is not None and previous != self.config.shards) or self.config.ack == "store":
            # Keys move between shards (or, with ack='store', journals are not used): first
            # put whatever the journals still hold into the store, so nothing is stranded.
            try:
                report = await recover_journals(
                    journal_dir, store=reader, filesystem=self._seams.filesystem,
                    limiter=self._reader_limiter, batch_size=self.config.batch_size,
                    retire_above=self.config.shards - 1,
                    on_cut=lambda kind, message: self._alert(kind, "cache", message),
                )
            except OSError as exc:
                error = _journal_dir_error(journal_dir, exc)
                if error is None:
                    raise
                raise error from exc
            if report.records:
                log.info(
                    "replayed %d journal records from %d shards into the store before start",
                    report.records, report.shards,
                )
            if report.quarantined:
                first = report.quarantined[0]
                self._alert(
                    "quarantine", "cache",
                    f"the store refused {len(report.quarantined)} journal records for good "
                    f"(first: {first.key!r}: {first.reason}); they stay journaled and "
                    "quarantined: see `writebehind quarantine list --config FILE`",
                )
        if previous != self.config.shards:
            await _journal_dir_io(
                fs, journal_dir, _write_layout, fs, journal_dir, self.config.shards
            )

    async def _serve(self, task_status: Any) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await self._prepare()
                if self._lease is not None:
                    nursery.start_soon(self._lease.keep)
                for actor in self._store_actors:
                    await nursery.start(self._supervisor.supervise, actor)
                self._nursery = nursery
                if self._elsewhere is None:
                    for shard in self._actors:
                        await nursery.start(self._supervisor.supervise, shard)
                self._become(Status.RUNNING)
                self._running_since = self._now()
                for attach in self._attachments:
                    await attach(self, nursery)
                task_status.started(self)
                await self._stop.wait()
                if self._on_stop is not None:
                    await self._on_stop()
                self._become(Status.DRAINING)
                await self._drain()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _raise_single(group, journal_dir=self.config.journal_dir)
        finally:
            self._become(Status.STOPPED)
            self._nursery = None
            for shard in self._actors:
                shard.close()
            if self._lease is not None:
                await self._lease.release()
                self._lease = None
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._stopped.set()

    def _hosted(self) -> list[ShardActor]:
        """The shards this process hosts (all of them but in cluster mode)."""
        return [actor for actor in self._actors if self._shards[actor.shard] is actor]

    # -- hosting shards at run time (cluster mode) ---------------------------------------------

    def hosted(self, shard: int) -> ShardActor | None:
        """Shard ``shard``'s actor if this process hosts it now, else None (the member
        answering a routed call asks this before it touches the shard)."""
        actor = self._actors[shard]
        return actor if self._shards[shard] is actor else None

    async def host(self, shard: int) -> None:
        """Start serving shard ``shard`` here: its first incarnation takes the epoch (a
        cluster's partition lease: this may wait for another member's to end), opens and
        replays the journal, and runs under the supervisor; from then on its calls are
        answered here. Returns once it serves; cancelled, it leaves nothing running."""
        actor = self._actors[shard]
        if self._shards[shard] is actor:
            await trio.lowlevel.checkpoint()
            return
        if self._nursery is None or self.status is not Status.RUNNING:
            raise CacheClosed(f"the cache is {self.status}; it hosts no more shards")
        actor.take_back()
        await self._nursery.start(self._supervisor.supervise, actor)
        self._shards[shard] = actor

    async def unhost(self, shard: int) -> None:
        """Hand shard ``shard`` over: its calls go elsewhere from now on; what it holds is
        flushed to the store and checkpointed (each within ``Config.drain_timeout``; what is
        left stays in the journal for the next owner to replay), then it stops. A call
        still waiting for it gets :class:`PartitionMoved` (nothing happened: retry)."""
        actor = self._actors[shard]
        if self._shards[shard] is not actor or self._elsewhere is None:
            await trio.lowlevel.checkpoint()
            return
        self._shards[shard] = self._elsewhere(shard)
        with trio.move_on_after(self.config.drain_timeout):
            await actor.flush()
        with trio.move_on_after(self.config.drain_timeout):
            await actor.seal()
        await self._supervisor.stop(actor)
        actor.hand_off()

    async def _drain(self) -> None:
        with trio.move_on_after(self.config.drain_timeout):
            async with trio.open_nursery() as nursery:
                for shard in self._hosted():
                    nursery.start_soon(shard.flush)
        # Even ack='memory' leaves a complete journal on a clean stop: one missing its newest
        # records would replay older values over what the store holds.
        with trio.move_on_after(self.config.drain_timeout):
            for shard in self._hosted():
                await shard.seal()
        left = sum(s.unpersisted() for s in self._hosted())
        if left:
            log.warning(
                "drain timed out after %ss: %d entries stay journaled and will replay on the "
                "next start", self.config.drain_timeout, left,
            )


class StoreEpochs:
    """The single-process :class:`EpochSource`: the store's epoch counter, through the
    cache's reader connection. Not fences: one process owns the table (its lease)."""

    fences = False

    def __init__(self, call: Callable[..., Awaitable[Any]]) -> None:
        self._call = call

    def fenced(self, shard: int, epoch: int) -> None:
        """Never called: the store's counter does not fence."""

    async def take_epoch(self, shard: int) -> int:
        epoch: int = await self._call("take_epoch")
        return epoch


def _read_layout(fs: FileSystem, journal_dir: Path) -> int | None:
    """The shard count ``journal_dir``'s layout file records, or None if it has none."""
    layout = str(journal_dir / LAYOUT_FILE)
    if not fs.exists(layout):
        return None
    try:
        return int(json.loads(fs.read_file(layout))["shards"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{layout} is not a writebehind layout file ({exc}); it must hold "
            '{"shards": N}'
        ) from None


def _write_layout(fs: FileSystem, journal_dir: Path, shards: int) -> None:
    # Atomic and synced: a power loss right after a first start must leave either no layout
    # file or a whole one, never an empty file that refuses the next start.
    fs.makedirs(str(journal_dir))
    data = (json.dumps({"shards": shards}) + "\n").encode()
    write_file_atomic(fs, str(journal_dir / LAYOUT_FILE), data)


async def _journal_dir_io(fs: FileSystem, journal_dir: Path, fn: Callable[..., Any],
                          *args: Any) -> Any:
    """Run blocking layout I/O off the event loop; an OSError becomes a ConfigError."""
    try:
        return await run_io(fs, fn, *args)
    except OSError as exc:
        error = _journal_dir_error(journal_dir, exc)
        if error is None:
            raise
        raise error from exc


def _journal_dir_error(journal_dir: Path, exc: OSError) -> ConfigError | None:
    """Which setting is at fault and what to do, for an OSError on ``journal_dir``, one of
    its parents or anything inside it; None for an error about some other file."""
    if not isinstance(exc.filename, str):
        return None
    filename, root = os.path.abspath(exc.filename), os.path.abspath(journal_dir)
    if not (filename == root or filename.startswith(root + os.sep)
            or root.startswith(filename + os.sep)):
        return None
    if exc.errno in (errno.EACCES, errno.EPERM):
        fix = ("give the user running the cache write access to it, or set "
               "Config.journal_dir to a writable directory")
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = ("a file is in the way where a directory should be: move it, or set "
               "Config.journal_dir to another directory")
    elif exc.errno == errno.EROFS:
        fix = "it is on a read-only file system: set Config.journal_dir to a writable directory"
    else:
        fix = "set Config.journal_dir to a writable local directory"
    return ConfigError(
        f"Config.journal_dir={str(journal_dir)!r} cannot hold the journals: "
        f"{exc.strerror or exc} ({exc.filename}); {fix}"
    )


def _raise_single(
    group: BaseExceptionGroup[Any],
    *,
    journal_dir: Path | None = None,
    first_of: tuple[type[BaseException], ...] = (),
) -> None:
    """Re-raise a group holding one real error as that error, or holding only errors of the
    ``first_of`` kinds as the first of them; anything else as it is.

    With ``journal_dir``: OS errors about that directory (a shard could not open its
    journal there) become the :class:`ConfigError` that says what to do."""
    found = leaves(group, skip=trio.Cancelled)
    if journal_dir is not None and found:
        errors = [
            _journal_dir_error(journal_dir, leaf) if isinstance(leaf, OSError) else None
            for leaf in found
        ]
        first = errors[0]
        if first is not None and all(errors):
            raise first from found[0]
    if len(found) == 1 or (found and first_of and all(isinstance(x, first_of) for x in found)):
        raise found[0]
    raise group


async def serve_cache(
    config: Config | None = None,
    *,
    seams: Seams | None = None,
    attachments: Sequence[Attachment] = (),
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """``writebehind.serve_cache`` with the attachments given here."""
    cache = Cache(config or Config(), seams or Seams(), attachments)
    await cache._serve(task_status)


@asynccontextmanager
async def open_cache(
    config: Config | None = None,
    *,
    seams: Seams | None = None,
    attachments: Sequence[Attachment] = (),
) -> AsyncIterator[Cache]:
    """``writebehind.open_cache`` with the attachments given here."""
    async with open_served(
        partial(serve_cache, config, seams=seams, attachments=attachments)
    ) as cache:
        yield cache


@asynccontextmanager
async def open_served(serve: Callable[..., Awaitable[None]]) -> AsyncIterator[Cache]:
    """The cache ``nursery.start(serve)`` runs (``serve_cache`` or one like it), for the
    ``async with`` block; drains on the way out, and raises one error, not a group."""
    try:
        async with trio.open_nursery() as nursery:
            cache: Cache = await nursery.start(serve)
            try:
                yield cache
            finally:
                with trio.CancelScope(shield=True):
                    await cache.aclose()
    except BaseExceptionGroup as group:
        _raise_single(group)
