"""Issue 12, item 2: the store must never be ahead of what the cache serves.

- When the store answers that it holds a newer version of a key than a record it was sent
  (the conditional upsert did not apply), the shard drops its copy and the next read reads
  the store's value through: reads never go backwards.
- With ``ack='journal'``/``'fsync'`` a record reaches the store only once its journal write
  has the ack mode's durability, so a power loss can never leave the store ahead of the
  journal.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import (
    Config,
    Seams,
    ShardCrashed,
    SQLiteStore,
    Store,
    StoreRecord,
    StoreUnavailable,
    serve_cache,
)
from writebehind._core._routing import EPOCH_SHIFT
from writebehind._journal._fs import OsFileSystem


def config(tmp_path: Path, **kw: Any) -> Config:
    kw.setdefault("store", f"sqlite:///{tmp_path}/store.db")
    kw.setdefault("journal_dir", tmp_path / "journal")
    kw.setdefault("shards", 1)
    return Config(**kw)


def write_store(tmp_path: Path, record: StoreRecord) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    try:
        store.write_batch([record])
    finally:
        store.close()


@pytest.mark.parametrize("ack", ["memory", "journal", "fsync"])
async def test_a_replayed_record_older_than_the_store_is_not_served(
    tmp_path: Path, ack: str
) -> None:
    # The journal holds "old" unflushed (the cache is killed: no drain); meanwhile the store
    # got a newer version (in ack='memory': flushed, then its journal record lost to a power
    # loss). The restart replays "old"; the store refuses to go back, and says so.
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(
                serve_cache, config(tmp_path, ack=ack, flush_interval=3600.0)
            )
            await cache.put("k", b"old")
            await cache.put("other", b"x")
            if ack == "memory":
                await trio.sleep(0.5)  # the background journal write
            nursery.cancel_scope.cancel()  # killed: nothing drains
        write_store(tmp_path, StoreRecord("k", b"new", 10_000 << EPOCH_SHIFT))

        async with trio.open_nursery() as nursery:
            cache = await nursery.start(serve_cache, config(tmp_path, ack=ack))
            await cache.flush()
            assert await cache.get("k") == b"new"
            assert await cache.get("other") == b"x"
            await cache.aclose()


class _BlockingSync(OsFileSystem):
    """The real file system, whose fdatasync waits until the test lets it finish."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.syncing = threading.Event()

    def fdatasync(self, fd: int) -> None:
        self.syncing.set()
        self.release.wait(20)
        super().fdatasync(fd)


class _Recording:
    """A store that notes every record it is sent (and when)."""

    def __init__(self, inner: Store, sent: list[str]) -> None:
        self._inner = inner
        self._sent = sent
        self.blocking = inner.blocking

    def write_batch(self, records: Any) -> Any:
        self._sent.extend(r.key for r in records)
        return self._inner.write_batch(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_fsync_mode_never_sends_a_record_before_its_group_commit_is_synced(
    tmp_path: Path,
) -> None:
    disk = _BlockingSync()
    sent: list[str] = []
    seams = Seams(filesystem=disk, wrap_store=lambda store: _Recording(store, sent))
    # A flush threshold of one dirty key: the flusher is asked to send at once.
    cfg = config(tmp_path, ack="fsync", flush_interval=0.01, flush_threshold=1)
    disk.release.set()  # start-up syncs (layout, segments) go through
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(functools.partial(serve_cache, cfg, seams=seams))
            disk.release.clear()
            disk.syncing.clear()
            done = trio.Event()

            async def put() -> None:
                await cache.put("k", b"v")
                done.set()

            nursery.start_soon(put)
            await trio.to_thread.run_sync(disk.syncing.wait, 10)
            await trio.sleep(0.3)  # many flush intervals while the group commit syncs
            assert not done.is_set()
            assert "k" not in sent, "the store got a record its journal could still lose"
            disk.release.set()
            await done.wait()
            await cache.flush()
            assert "k" in sent
            await cache.aclose()


def test_the_blocking_disk_is_the_real_one() -> None:
    # (_BlockingSync only delays; it must sync for real.)
    assert _BlockingSync.fdatasync is not OsFileSystem.fdatasync
    assert hasattr(os, "fdatasync")


class _CommitsThenFails:
    """A store whose next write, once armed, commits and then reports a lost connection."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.blocking = inner.blocking
        self.armed = False

    def write_batch(self, records: Any) -> Any:
        outcome = self._inner.write_batch(records)
        if self.armed:
            self.armed = False
            raise StoreUnavailable("connection lost after the commit")
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_a_write_through_of_unknown_outcome_drops_the_older_cached_value(
    tmp_path: Path,
) -> None:
    # ack='store': the put of "new" committed, but its answer was lost, so it raised. The
    # cache still held "old" (clean); serving it now would serve a value the store no longer
    # holds. The next read must ask the store.
    stores: list[_CommitsThenFails] = []

    def wrap(store: Store) -> Store:
        stores.append(_CommitsThenFails(store))
        return stores[-1]  # type: ignore[return-value]

    cfg = config(tmp_path, ack="store")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(
                functools.partial(serve_cache, cfg, seams=Seams(wrap_store=wrap))
            )
            await cache.put("k", b"old")
            assert await cache.get("k") == b"old"
            for store in stores:
                store.armed = True
            with pytest.raises(StoreUnavailable):
                await cache.put("k", b"new")
            assert await cache.get("k") == b"new"
            await cache.aclose()


class _HeldWrite:
    """A store whose next write, once armed, waits (in the store's worker thread) until the
    test releases it, and only then commits."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.blocking = inner.blocking
        self.armed = False
        self.holding = threading.Event()
        self.release = threading.Event()

    def write_batch(self, records: Any) -> Any:
        if self.armed:
            self.armed = False
            self.holding.set()
            self.release.wait(20)
        return self._inner.write_batch(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _crash_then_land(
    cache: Any, stores: list[_HeldWrite], tmp_path: Path, why: str
) -> None:
    """With "new" for "k" held in a store's worker thread: crash the shard, read "old"
    through the restarted one, let "new" commit, and check the cache then serves it."""
    with trio.fail_after(10):
        while not any(store.holding.is_set() for store in stores):
            await trio.sleep(0.01)
        cache._shards[0].crash(RuntimeError(f"injected: {why}"))
        assert await cache.get("k") == b"old"  # what the store holds now
        for store in stores:
            store.release.set()
        reader = SQLiteStore(tmp_path / "store.db")
        reader.connect()
        try:
            while (await trio.to_thread.run_sync(reader.read, "k")).value != b"new":
                await trio.sleep(0.01)  # the held write commits in its worker thread
        finally:
            reader.close()
        assert await cache.get("k") == b"new"


async def test_a_write_through_landing_after_a_restart_is_not_hidden_by_a_cached_read(
    tmp_path: Path,
) -> None:
    # ack='store': the write-through of "new" is in the store's hands when its shard crashes
    # (the caller hears ShardCrashed: outcome unknown). The restarted shard reads "old"
    # through from the store; then "new" commits. Caching that read would serve "old" for as
    # long as the entry lives, while the store holds "new" (found by the harness's coherence
    # check, plan seed 1602718311).
    stores: list[_HeldWrite] = []

    def wrap(store: Store) -> Store:
        stores.append(_HeldWrite(store))
        return stores[-1]  # type: ignore[return-value]

    cfg = config(tmp_path, ack="store")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(
                functools.partial(serve_cache, cfg, seams=Seams(wrap_store=wrap))
            )
            await cache.put("k", b"old")
            for store in stores:
                store.armed = True
            outcome: list[BaseException] = []

            async def put_new() -> None:
                try:
                    await cache.put("k", b"new")
                except ShardCrashed as exc:
                    outcome.append(exc)

            nursery.start_soon(put_new)
            await _crash_then_land(cache, stores, tmp_path, "the shard dies mid write-through")
            assert len(outcome) == 1 and isinstance(outcome[0], ShardCrashed)
            await cache.aclose()


class _HeldOnTheWire:
    """A store whose next write, once armed, fails without committing; the test lands its
    records later (a batch held up on its way: the harness's ``store.reorder``)."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.blocking = inner.blocking
        self.armed = False
        self.held: list[StoreRecord] = []

    def write_batch(self, records: Any) -> Any:
        if self.armed:
            self.armed = False
            self.held.extend(records)
            raise StoreUnavailable("timed out while the batch is still on its way")
        return self._inner.write_batch(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_a_failed_write_through_that_lands_later_is_not_hidden_by_a_cached_read(
    tmp_path: Path,
) -> None:
    # ack='store': the write-through of "new" failed (StoreUnavailable: outcome unknown) and
    # lands only later. A read in between gets "old" from the store; caching it would hide
    # "new" once it landed.
    stores: list[_HeldOnTheWire] = []

    def wrap(store: Store) -> Store:
        stores.append(_HeldOnTheWire(store))
        return stores[-1]  # type: ignore[return-value]

    cfg = config(tmp_path, ack="store")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(
                functools.partial(serve_cache, cfg, seams=Seams(wrap_store=wrap))
            )
            await cache.put("k", b"old")
            for store in stores:
                store.armed = True
            with pytest.raises(StoreUnavailable):
                await cache.put("k", b"new")
            assert await cache.get("k") == b"old"  # what the store holds now
            (held,) = [record for store in stores for record in store.held]
            assert held.value == b"new"
            await trio.to_thread.run_sync(write_store, tmp_path, held)  # it lands now
            assert await cache.get("k") == b"new"
            await cache.aclose()


async def test_a_flush_batch_landing_after_a_restart_is_not_hidden_by_a_cached_read(
    tmp_path: Path,
) -> None:
    # ack='memory': "new" went to the store in a flush batch before its journal write, and
    # the shard crashed with the batch in the store's hands: the journal never got "new", so
    # the restarted shard reads "old" through; then the batch commits. Caching that read would
    # serve "old" while the store holds "new" (the full chaos suite's plan seed 4266932337).
    stores: list[_HeldWrite] = []

    def wrap(store: Store) -> Store:
        stores.append(_HeldWrite(store))
        return stores[-1]  # type: ignore[return-value]

    cfg = config(tmp_path, ack="memory", flush_interval=0.01, flush_threshold=1,
                 memory_write_interval=5.0)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(
                functools.partial(serve_cache, cfg, seams=Seams(wrap_store=wrap))
            )
            await cache.put("k", b"old")
            await cache.flush()
            for store in stores:
                store.armed = True
            await cache.put("k", b"new")  # acknowledged in memory; flushed at once
            # ("new" is lost with the journal buffer, which ack='memory' allows.)
            await _crash_then_land(cache, stores, tmp_path, "the shard dies mid flush")
            await cache.aclose()
