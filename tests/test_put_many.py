"""``put_many`` / ``get_many`` / ``delete_many``: one journal append and one wait per shard,
the same contract per key as ``put``, and an error that says which keys were acknowledged."""

from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import (
    Config,
    Overloaded,
    PartiallyAcknowledged,
    Receipt,
    Rejection,
    Seams,
    ShardCrashed,
    SQLiteStore,
    StoreRecord,
    StoreRejected,
    StoreUnavailable,
    Unstorable,
    open_cache,
    shard_of,
)
from writebehind._core._limits import StoreLimits
from writebehind._journal import JournalBackend, file_journals
from writebehind._runtime._cache import Cache

CAP = 30


class Crasher:
    """Raise at a named fault point the first time it is reached."""

    def __init__(self, point: str) -> None:
        self.point, self.fired = point, 0

    def __call__(self, point: str, actor: str) -> None:
        if point == self.point and not self.fired:
            self.fired += 1
            raise RuntimeError(f"injected crash at {point} in {actor}")


class FlakyStore:
    """Wraps a store: the next ``failures[0]`` writes fail; ``reject`` keys are refused."""

    def __init__(self, inner: Any, failures: list[int] | None = None,
                 reject: str | None = None) -> None:
        self.inner, self.failures, self.reject = inner, failures or [0], reject
        self.blocking = inner.blocking

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write_batch(self, records: Any) -> tuple[Rejection, ...]:
        if self.failures[0]:
            self.failures[0] -= 1
            raise StoreUnavailable("injected: connection reset")
        self.inner.write_batch([r for r in records if r.key != self.reject])
        return tuple(Rejection(r.key, r.version, "injected: refused") for r in records
                     if r.key == self.reject)


class CountingJournal:
    """A journal backend that delegates to another and counts the calls made of it."""

    def __init__(self, inner: JournalBackend, calls: dict[str, int]) -> None:
        self._inner, self.calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attribute(*args, **kwargs)
        return counted


def config(tmp_path: Path, **kw: Any) -> Config:
    kw.setdefault("store", f"sqlite:///{tmp_path}/store.db")
    kw.setdefault("journal_dir", tmp_path / "journal")
    kw.setdefault("flush_interval", 0.05)
    return Config(**kw)


def store_rows(tmp_path: Path) -> dict[str, StoreRecord]:
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    try:
        return store.read_all()
    finally:
        store.close()


def acked(cache: Cache) -> int:
    return sum(s.acked_seq for s in cache.statistics().shards)


@pytest.mark.parametrize("ack", ["memory", "journal", "fsync", "store"])
async def test_put_many_acknowledges_every_key_and_the_store_gets_them(
    tmp_path: Path, ack: str
) -> None:
    items = {f"k{i}": b"v%d" % i for i in range(200)}
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, ack=ack, shards=4)) as cache:
            receipts = await cache.put_many(items)
            assert [r.key for r in receipts] == list(items)
            assert all(r.shard == shard_of(r.key, 4) for r in receipts)
            assert len({r.version for r in receipts}) == 200
            assert await cache.get_many(["k7", "k199", "nope"]) == {
                "k7": b"v7", "k199": b"v199", "nope": None,
            }
            await cache.flush()
            for receipt in receipts[:5]:
                await cache.wait_persisted(receipt)
    rows = store_rows(tmp_path)
    assert {k: r.value for k, r in rows.items()} == items
    assert all(rows[r.key].version == r.version for r in receipts)


@pytest.mark.parametrize("ack", ["journal", "fsync"])
async def test_one_journal_append_and_one_wait_per_shard(tmp_path: Path, ack: str) -> None:
    cfg = config(tmp_path, ack=ack, shards=2)
    files = file_journals(cfg)
    calls: dict[str, int] = {}

    async def open_journal(shard: int, **kwargs: Any) -> JournalBackend:
        return CountingJournal(await files(shard, **kwargs), calls)  # type: ignore[return-value]

    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            cache = Cache(cfg, Seams(), open_journal=open_journal)
            await nursery.start(cache._serve)
            receipts = await cache.put_many((f"k{i}", b"x") for i in range(50))
            counted = dict(calls)  # (a clean close waits on each shard's checkpoint too)
            await cache.aclose()
    assert {r.shard for r in receipts} == {0, 1}
    assert counted["append_encoded_many"] == 2 and "append_encoded" not in counted
    waited = counted.get("wait_synced" if ack == "fsync" else "wait_written", 0)
    assert waited == 2
    # Consecutive sequence numbers per shard, one record per key.
    for shard in (0, 1):
        seqs = sorted(r.seq for r in receipts if r.shard == shard)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_key_given_twice_is_written_once_with_its_later_value(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, shards=1)) as cache:
            receipts = await cache.put_many([("a", b"1"), ("b", b"2"), ("a", b"3")])
            assert [r.key for r in receipts] == ["a", "b"]
            assert acked(cache) == 2  # two journal records, not three
            assert await cache.get_many(["a", "b", "a"]) == {"a": b"3", "b": b"2"}
            await cache.flush()
    assert store_rows(tmp_path)["a"].value == b"3"


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ((7, b"x"), TypeError, r"item 1 \(7\): key must be str"),
        (("k", "text"), TypeError, r"item 1 \('k'\): value must be bytes"),
        (("", b"x"), ValueError, r"item 1 \(''\): key must not be empty"),
        (("k", b"x" * 2000), ValueError, r"item 1 \('k'\): value is 2000 bytes"),
        (("k" * 300, b"x"), ValueError, "item 1 .*over Config.max_key_bytes=256"),
        (("k", None), TypeError, "value must be bytes, got NoneType"),
        ("abc", TypeError, "item 1 must be a \\(key, value\\) pair"),
    ],
)
async def test_one_bad_item_refuses_the_call_and_nothing_is_written(
    tmp_path: Path, bad: Any, error: type[Exception], message: str
) -> None:
    with trio.fail_after(CAP):
        cfg = config(tmp_path, max_value_bytes=1000, max_key_bytes=256, shards=2)
        async with open_cache(cfg) as cache:
            with pytest.raises(error, match=message) as caught:
                await cache.put_many([("good", b"1"), bad, ("later", b"2")])
            assert "nothing was written" in str(caught.value)
            assert acked(cache) == 0
            assert await cache.get_many(["good", "later"]) == {"good": None, "later": None}


async def test_an_unstorable_key_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    class NoNul(FlakyStore):
        limits = StoreLimits("nul-refusing", max_key_bytes=64, nul_in_keys=False)

    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path), seams=Seams(wrap_store=NoNul)) as cache:
            with pytest.raises(Unstorable, match=r"item 2 \('a\\x00b'\).*NUL"):
                await cache.put_many([("x", b"1"), ("y", b"2"), ("a\0b", b"3")])
            assert acked(cache) == 0


async def test_a_shard_crashing_mid_call_fails_only_its_keys(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(40)]
    crasher = Crasher("put.after_journal_append")
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, shards=2),
                              seams=Seams(fault_point=crasher)) as cache:
            with pytest.raises(PartiallyAcknowledged) as caught:
                await cache.put_many({key: b"v" for key in keys})
            error = caught.value
            assert crasher.fired == 1
            # Every key is in exactly one of the two; the failed ones are one shard's part.
            assert set(error.acknowledged) | set(error.failed) == set(keys)
            assert not set(error.acknowledged) & set(error.failed)
            crashed = {shard_of(k, 2) for k in error.failed}
            assert len(crashed) == 1 and {shard_of(k, 2) for k in error.acknowledged} == (
                {0, 1} - crashed
            )
            assert all(isinstance(e, ShardCrashed) for e in error.failed.values())
            assert sorted(error.uncertain) == sorted(error.failed) and error.refused == []
            assert all(isinstance(r, Receipt) for r in error.acknowledged.values())
            assert "may or may not" in str(next(iter(error.failed.values())))
            await cache.flush()
    rows = store_rows(tmp_path)
    for key, receipt in error.acknowledged.items():
        assert rows[key].version == receipt.version  # acknowledged means persisted after all


async def test_overloaded_refuses_the_whole_part_before_the_append(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        def wrap(store: Any) -> Any:
            return FlakyStore(store, [10**9])

        cfg = config(tmp_path, shards=1, max_dirty=5, on_overload="raise", drain_timeout=0.2)
        async with open_cache(cfg, seams=Seams(wrap_store=wrap)) as cache:
            await cache.put_many({f"k{i}": b"x" for i in range(5)})
            before = acked(cache)
            with pytest.raises(PartiallyAcknowledged) as caught:
                await cache.put_many({"a": b"1", "b": b"2"})
            assert caught.value.acknowledged == {}
            assert sorted(caught.value.refused) == ["a", "b"]
            assert all(isinstance(e, Overloaded) for e in caught.value.failed.values())
            assert acked(cache) == before  # nothing appended


async def test_backpressure_makes_put_many_wait_until_the_store_catches_up(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        failures = [3]

        def wrap(store: Any) -> Any:
            return FlakyStore(store, failures)

        cfg = config(tmp_path, shards=1, max_dirty=5, retry_initial=0.01, store_actors=1)
        async with open_cache(cfg, seams=Seams(wrap_store=wrap)) as cache:
            await cache.put_many({f"k{i}": b"x" for i in range(5)})
            receipts = await cache.put_many({"a": b"1", "b": b"2"})
            stats = cache.statistics()
            assert stats.shards[0].backpressure_waits >= 1
            assert failures == [0]  # it waited for the failing flushes to end
            assert [r.key for r in receipts] == ["a", "b"]


async def test_ack_store_a_refused_key_fails_alone_and_the_rest_is_in_the_store(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        def wrap(store: Any) -> Any:
            return FlakyStore(store, reject="poison")

        cfg = config(tmp_path, ack="store", shards=1)
        async with open_cache(cfg, seams=Seams(wrap_store=wrap)) as cache:
            with pytest.raises(PartiallyAcknowledged) as caught:
                await cache.put_many({"fine": b"1", "poison": b"2", "also": b"3"})
            assert sorted(caught.value.acknowledged) == ["also", "fine"]
            assert caught.value.refused == ["poison"]
            assert isinstance(caught.value.failed["poison"], StoreRejected)
            assert await cache.get_many(["fine", "poison"]) == {"fine": b"1", "poison": None}
    rows = store_rows(tmp_path)
    assert "poison" not in rows and rows["fine"].value == b"1" and rows["also"].value == b"3"


async def test_delete_many_and_an_empty_call(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, shards=3)) as cache:
            await cache.put_many({"a": b"1", "b": b"2", "c": b"3"})
            receipts = await cache.delete_many(["a", "c"])
            assert [r.key for r in receipts] == ["a", "c"]
            assert await cache.get_many("abc") == {"a": None, "b": b"2", "c": None}
            assert await cache.put_many({}) == []
            assert await cache.delete_many([]) == []
            assert await cache.get_many([]) == {}
            await cache.flush()
    rows = store_rows(tmp_path)
    assert rows["a"].value is None and rows["b"].value == b"2" and rows["c"].value is None


async def test_get_many_reads_misses_through_the_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    store.write_batch([StoreRecord("old", b"stored", 1)])
    store.close()
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, shards=2)) as cache:
            await cache.put("new", b"cached")
            assert await cache.get_many(["new", "old", "none"]) == {
                "new": b"cached", "old": b"stored", "none": None,
            }
            with pytest.raises(TypeError, match=r"get_many item 1 \(5\): key must be str"):
                await cache.get_many(["new", 5])  # type: ignore[list-item]


async def test_ack_memory_a_part_lost_to_a_crash_before_the_call_returns_is_not_acknowledged(
    tmp_path: Path,
) -> None:
    """Shard 0 takes its part in memory at once; shard 1 makes the call wait (backpressure)
    and shard 0 crashes meanwhile, losing what it held in memory: the call must report shard
    0's keys as uncertain, not acknowledged."""
    ours = [k for k in (f"k{i}" for i in range(100)) if shard_of(k, 2) == 0][:3]
    theirs = [k for k in (f"k{i}" for i in range(100)) if shard_of(k, 2) == 1][:6]
    armed = [False]

    def crash_shard_0(point: str, actor: str) -> None:
        if armed[0] and point == "flush.building_batch" and actor == "shard-0":
            armed[0] = False
            raise RuntimeError("injected crash of shard-0")

    with trio.fail_after(CAP):
        def wrap(store: Any) -> Any:
            return FlakyStore(store, failures)

        failures = [8]
        cfg = config(tmp_path, ack="memory", shards=2, max_dirty=10, retry_initial=0.02,
                     store_actors=1)
        seams = Seams(fault_point=crash_shard_0, wrap_store=wrap)
        async with open_cache(cfg, seams=seams) as cache:
            await cache.put_many({k: b"old" for k in theirs[:5]})  # shard 1 is full now
            armed[0] = True
            with pytest.raises(PartiallyAcknowledged) as caught:
                await cache.put_many({k: b"new" for k in [*ours, theirs[5]]})
            assert not armed[0]  # shard 0 crashed while the call waited on shard 1
            assert sorted(caught.value.uncertain) == sorted(ours)
            assert list(caught.value.acknowledged) == [theirs[5]]
            assert "before the call returned" in str(caught.value.failed[ours[0]])
