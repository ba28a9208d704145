"""The shard actor takes its journals and its epochs through interfaces: a cache built with
other ones (what a cluster mode would pass) uses them, and only them."""

from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import Config, Seams, ShardCrashed, SQLiteStore
from writebehind._core._epochs import EpochSource
from writebehind._core._errors import Relinquished
from writebehind._core._routing import EPOCH_SHIFT
from writebehind._journal import JournalBackend, OpenJournal, file_journals
from writebehind._runtime._cache import Cache

CAP = 30


class CountingJournal:
    """A backend that delegates to another and counts what the shard asks of it."""

    def __init__(self, inner: JournalBackend, calls: dict[str, int]) -> None:
        self._inner = inner
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if callable(attribute):
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] = self.calls.get(name, 0) + 1
                return attribute(*args, **kwargs)
            return counted
        return attribute


class Counter:
    """Epochs from a counter of our own (a lease, in a cluster)."""

    fences = False

    def fenced(self, shard: int, epoch: int) -> None:
        raise AssertionError("a source that does not fence is never told of a fence")

    def __init__(self, start: int) -> None:
        self.taken: list[int] = []
        self._next = start

    async def take_epoch(self, shard: int) -> int:
        await trio.lowlevel.checkpoint()
        self._next += 1
        self.taken.append(self._next)
        return self._next


async def test_a_cache_uses_the_journals_and_epochs_it_is_given(tmp_path: Path) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=2, ack="fsync", flush_interval=0.05)
    files = file_journals(config)
    opened: list[int] = []
    calls: dict[str, int] = {}

    async def open_journal(shard: int, **kwargs: Any) -> JournalBackend:
        opened.append(shard)
        return CountingJournal(await files(shard, **kwargs), calls)  # type: ignore[return-value]

    factory: OpenJournal = open_journal
    epochs: EpochSource = Counter(start=1000)
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            cache = Cache(config, Seams(), open_journal=factory, epochs=epochs)
            await nursery.start(cache._serve)
            receipts = [await cache.put(f"k{i}", b"v%d" % i) for i in range(20)]
            await cache.flush()
            await cache.aclose()
    assert sorted(opened) == [0, 1]
    assert calls["replay"] == 2 and calls["append_encoded"] == 20
    assert calls["wait_synced"] >= 20  # ack='fsync': each put waited on its sync
    assert calls.get("wait_written", 0) == 0
    assert calls["checkpoint_nowait"] >= 2 and calls["close"] == 2
    assert sorted(epochs.taken) == [1001, 1002]  # type: ignore[attr-defined]
    assert {r.version >> EPOCH_SHIFT for r in receipts} == {1001, 1002}
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    try:
        assert store.read_all()["k7"].value == b"v7"
        assert store.take_epoch() == 1  # the store's own counter was never asked
    finally:
        store.close()
    # The default factory wrote the journals where the cache always put them.
    assert sorted(p.name for p in (tmp_path / "journal").iterdir() if p.is_dir()) == [
        "shard-0000", "shard-0001"
    ]


async def test_on_serving_hears_each_incarnation_after_its_journal_was_replayed(
    tmp_path: Path,
) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=2, ack="fsync")
    files = file_journals(config)
    calls: dict[int, dict[str, int]] = {0: {}, 1: {}}
    heard: list[tuple[int, int, int]] = []  # (shard, epoch, replays by then)

    async def open_journal(shard: int, **kwargs: Any) -> JournalBackend:
        return CountingJournal(await files(shard, **kwargs), calls[shard])  # type: ignore[return-value]

    def on_serving(shard: int, epoch: int) -> None:
        heard.append((shard, epoch, calls[shard].get("replay", 0)))

    epochs = Counter(start=1000)
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            cache = Cache(config, Seams(on_serving=on_serving), open_journal=open_journal,
                          epochs=epochs)
            await nursery.start(cache._serve)
            receipts = [await cache.put(f"k{i}", b"v") for i in range(8)]
            await cache.aclose()
    # Once per incarnation, with the epoch its writes carry, after its replay.
    assert sorted(shard for shard, _, _ in heard) == [0, 1]
    assert sorted(epoch for _, epoch, _ in heard) == sorted(epochs.taken)
    assert all(replays == 1 for _, _, replays in heard)
    by_shard = {shard: epoch for shard, epoch, _ in heard}
    assert all(r.version >> EPOCH_SHIFT == by_shard[r.shard] for r in receipts)


class LeasedJournal(CountingJournal):
    """A journal that may answer reads only while its owner's lease stands (``lease``), as a
    cluster partition's replicated journal does."""

    def __init__(self, inner: JournalBackend, calls: dict[str, int]) -> None:
        super().__init__(inner, calls)
        self.lease = True

    def may_serve(self) -> bool:
        return self.lease


async def test_a_read_is_answered_only_while_its_incarnations_journal_may_serve(
    tmp_path: Path,
) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=1, ack="fsync", flush_interval=60)
    files = file_journals(config)
    journals: list[LeasedJournal] = []

    async def open_journal(shard: int, **kwargs: Any) -> JournalBackend:
        journals.append(LeasedJournal(await files(shard, **kwargs), {}))
        return journals[-1]  # type: ignore[return-value]

    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            cache = Cache(config, Seams(), open_journal=open_journal, epochs=Counter(1))
            await nursery.start(cache._serve)
            await cache.put("k", b"old")
            assert await cache.get("k") == b"old"
            journals[-1].lease = False  # a zombie woke past its lease
            with pytest.raises(ShardCrashed, match="may no longer answer reads"):
                await cache.get("k")
            with pytest.raises(ShardCrashed, match="may no longer answer reads"):
                await cache.get_many(["k"])
            # The lease lapses and the incarnation gives up between taking the value from
            # memory and the check: the dying incarnation's journal still answers for it.
            shard = cache._shards[0]
            core = shard.core
            assert core is not None
            journals[-1].lease = True
            take = core.read

            def read_then_lapse(key: str) -> Any:
                entry = take(key)
                journals[0].lease = False
                shard.crash(Relinquished("partition 0: the lease lapsed"))
                return entry

            core.read = read_then_lapse  # type: ignore[method-assign]
            with pytest.raises(ShardCrashed, match="may no longer answer reads"):
                await cache.get("k")
            await cache.aclose()
