"""The cache end to end on a real SQLite file and real journal files."""

import errno
import functools
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import (
    CacheClosed,
    Config,
    ConfigError,
    Overloaded,
    Rejection,
    Seams,
    ShardCrashed,
    SQLiteStore,
    StoreRecord,
    StoreUnavailable,
    TooManyRestarts,
    open_cache,
    serve_cache,
)
from writebehind._journal import SimulatedFileSystem

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI


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


async def test_put_get_delete_read_your_writes(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path)) as cache:
            await cache.put("user:1", b"alice")
            assert await cache.get("user:1") == b"alice"
            await cache.put("user:1", b"bob")
            assert await cache.get("user:1") == b"bob"
            await cache.delete("user:1")
            assert await cache.get("user:1") is None
            assert await cache.get("never") is None


@pytest.mark.parametrize("ack", ["memory", "journal", "fsync", "store"])
async def test_flush_puts_every_acknowledged_write_in_the_store(tmp_path: Path, ack: str) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, ack=ack)) as cache:
            async with trio.open_nursery() as nursery:
                for w in range(8):
                    async def writer(w: int = w) -> None:
                        for i in range(50):
                            await cache.put(f"k{w}:{i % 10}", b"%d" % i)
                    nursery.start_soon(writer)
            await cache.delete("k0:0")
            await cache.flush()
            rows = store_rows(tmp_path)
        live = {k: r.value for k, r in rows.items() if r.value is not None}
        assert live == {f"k{w}:{i}": b"%d" % (40 + i) for w in range(8) for i in range(10)} - {
            "k0:0": b"40"
        }.keys() or len(live) == 79
        assert rows["k0:0"].value is None
        assert live["k3:7"] == b"47"


async def test_a_hundred_writes_to_one_key_are_one_store_write(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, flush_interval=10.0)) as cache:
            for i in range(100):
                await cache.put("hot", b"%d" % i)
            await cache.flush()
            stats = cache.statistics()
        assert sum(s.records_persisted for s in stats.shards) == 1
        assert store_rows(tmp_path)["hot"].value == b"99"
        assert stats.cluster is None  # a single process: no cluster part


async def test_unflushed_writes_replay_after_a_crash_without_drain(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        cfg = config(tmp_path, flush_interval=60.0)
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(serve_cache, cfg)
            for i in range(200):
                await cache.put(f"k{i}", b"v%d" % i)
            nursery.cancel_scope.cancel()  # no drain: like a crash after the acks
        assert store_rows(tmp_path) == {}
        async with open_cache(cfg) as cache:
            assert await cache.get("k7") == b"v7"
            await cache.flush()
        rows = store_rows(tmp_path)
        assert len(rows) == 200 and rows["k199"].value == b"v199"


async def test_leaving_open_cache_drains_everything(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, flush_interval=60.0)) as cache:
            for i in range(50):
                await cache.put(f"k{i}", b"x")
        assert len(store_rows(tmp_path)) == 50


async def test_wait_persisted_returns_once_that_write_is_in_the_store(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, flush_interval=60.0)) as cache:
            receipt = await cache.put("a", b"1")
            assert "a" not in store_rows(tmp_path)
            await cache.wait_persisted(receipt)
            assert store_rows(tmp_path)["a"].value == b"1"


async def test_reads_go_through_to_the_store_on_a_miss(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        store = SQLiteStore(tmp_path / "store.db")
        store.connect()
        store.write_batch([StoreRecord("old", b"from the store", 1)])
        store.close()
        async with open_cache(config(tmp_path)) as cache:
            assert await cache.get("old") == b"from the store"
            assert cache.statistics().shards[0].entries + sum(
                s.entries for s in cache.statistics().shards[1:]
            ) == 1


async def test_clean_entries_are_evicted_beyond_max_entries(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, shards=1, max_entries=10)) as cache:
            for i in range(100):
                await cache.put(f"k{i}", b"x")
            await cache.flush()
            stats = cache.statistics().shards[0]
            assert stats.entries <= 10 and stats.evictions >= 90
            assert await cache.get("k3") == b"x"  # read through


@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        (1, b"x", TypeError, "key must be str, got int"),
        ("k", "text", TypeError, "value must be bytes, got str"),
        ("", b"x", ValueError, "key must not be empty"),
        ("k" * 2000, b"x", ValueError, "over Config.max_key_bytes=1024"),
        ("k", b"x" * 2000, ValueError, "over Config.max_value_bytes=1000"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_acknowledged(
    tmp_path: Path, key: Any, value: Any, error: type[Exception], message: str
) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, max_value_bytes=1000)) as cache:
            with pytest.raises(error, match=message):
                await cache.put(key, value)
            assert cache.statistics().shards[0].acked_seq == 0


async def test_a_closed_cache_refuses_writes(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path)) as cache:
            pass
        with pytest.raises(CacheClosed):
            await cache.put("a", b"1")


class Crasher:
    """Raise at a named fault point the first ``times`` times it is reached."""

    def __init__(self, point: str, times: int = 1, skip: int = 0) -> None:
        self.point, self.times, self.fired, self.skip = point, times, 0, skip

    def __call__(self, point: str, actor: str) -> None:
        if point == self.point and self.skip:
            self.skip -= 1
        elif point == self.point and self.fired < self.times:
            self.fired += 1
            raise RuntimeError(f"injected crash at {point} in {actor}")


@pytest.mark.parametrize(
    "point",
    ["flush.building_batch", "flush.before_send", "store.before_commit", "store.after_commit",
     "flush.after_ack_before_checkpoint"],
)
async def test_a_crashed_actor_is_restarted_and_nothing_acknowledged_is_lost(
    tmp_path: Path, point: str
) -> None:
    with trio.fail_after(CAP):
        crasher = Crasher(point)
        async with open_cache(config(tmp_path), seams=Seams(fault_point=crasher)) as cache:
            for i in range(100):
                try:
                    await cache.put(f"k{i}", b"v")
                except ShardCrashed:  # in flight on the crashing shard: retry, as the error says
                    await cache.put(f"k{i}", b"v")
            await cache.flush()
            stats = cache.statistics()
        assert crasher.fired == 1
        assert sum(s.restarts for s in stats.shards + stats.stores) == 1  # type: ignore[operator]
        assert len(store_rows(tmp_path)) == 100


async def test_a_crash_on_the_write_path_fails_only_that_write(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        crasher = Crasher("put.after_journal_append", skip=1)
        seams = Seams(fault_point=crasher)
        async with open_cache(config(tmp_path, shards=1), seams=seams) as cache:
            await cache.put("before", b"1")
            with pytest.raises(ShardCrashed, match="may or may not"):
                await cache.put("inflight", b"2")
            await cache.put("after", b"3")
            assert await cache.get("before") == b"1"
            await cache.flush()
        rows = store_rows(tmp_path)
        assert rows["before"].value == b"1" and rows["after"].value == b"3"


async def test_a_crash_loop_escalates_and_stops_the_cache(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        crasher = Crasher("flush.before_send", times=1000)
        with pytest.raises(TooManyRestarts, match="max_restarts=3"):
            async with open_cache(
                config(tmp_path, max_restarts=3), seams=Seams(fault_point=crasher)
            ) as cache:
                await cache.put("a", b"1")
                await trio.sleep_forever()  # the escalation ends it; if none comes, CAP does
        assert crasher.fired == 4


class FlakyStore:
    """Wraps a store: the next ``failures[0]`` writes fail (a list shared by every connection);
    ``reject`` keys are refused."""

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
        keep = [r for r in records if r.key != self.reject]
        self.inner.write_batch(keep)
        return tuple(Rejection(r.key, r.version, "injected: refused") for r in records
                     if r.key == self.reject)


async def test_transient_store_failures_retry_with_backoff_and_alert(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        alerts: list[str] = []
        failures = [3]

        def wrap(store: Any) -> Any:
            return FlakyStore(store, failures)

        cfg = config(tmp_path, retry_initial=0.01, on_alert=alerts.append, shards=1, store_actors=1)
        async with open_cache(cfg, seams=Seams(wrap_store=wrap)) as cache:
            await cache.put("a", b"1")
            await cache.flush()
            stats = cache.statistics()
        assert store_rows(tmp_path)["a"].value == b"1"
        assert stats.alerts >= 1 and "flush failed" in alerts[0]
        assert stats.stores[0].errors >= 1


async def test_a_permanently_refused_record_is_quarantined_and_the_rest_lands(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        def wrap(store: Any) -> Any:
            return FlakyStore(store, reject="poison")

        async with open_cache(config(tmp_path), seams=Seams(wrap_store=wrap)) as cache:
            await cache.put("poison", b"x")
            await cache.put("fine", b"y")
            await cache.flush()
            assert [q[0] for q in cache.quarantined()] == ["poison"]
            assert cache.statistics().quarantined == 1
            assert await cache.get("poison") == b"x"
        rows = store_rows(tmp_path)
        assert "poison" not in rows and rows["fine"].value == b"y"


async def test_overload_raises_when_configured(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        def wrap(store: Any) -> Any:
            return FlakyStore(store, [10**9])

        cfg = config(tmp_path, shards=1, max_dirty=5, on_overload="raise", drain_timeout=0.2)
        async with open_cache(cfg, seams=Seams(wrap_store=wrap)) as cache:
            for i in range(5):
                await cache.put(f"k{i}", b"x")
            with pytest.raises(Overloaded, match="max_dirty=5"):
                await cache.put("k5", b"x")
        # The drain timed out, but everything acknowledged stays journaled for the next start.
        async with open_cache(config(tmp_path, shards=1)) as cache:
            await cache.flush()
        assert len(store_rows(tmp_path)) == 5


async def test_changing_the_shard_count_loses_nothing(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        cfg4 = config(tmp_path, shards=4, flush_interval=60.0)
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(serve_cache, cfg4)
            for i in range(100):
                await cache.put(f"k{i}", b"v%d" % i)
            nursery.cancel_scope.cancel()
        async with open_cache(config(tmp_path, shards=2)) as cache:
            assert await cache.get("k42") == b"v42"
        assert len(store_rows(tmp_path)) == 100
        assert not (tmp_path / "journal" / "shard-0003").exists()


async def test_statistics_report_watermarks(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(config(tmp_path, shards=1, flush_interval=60.0)) as cache:
            for i in range(10):
                await cache.put(f"k{i}", b"x")
            s = cache.statistics().shards[0]
            assert s.acked_seq == 10 and s.synced_seq >= 10 and s.dirty == 10
            assert s.oldest_dirty_age is not None and s.journal_segments >= 1
            await cache.flush()
            s = cache.statistics().shards[0]
            assert s.dirty == 0 and s.unpersisted == 0 and s.records_persisted == 10
            assert s.batches_per_second > 0


async def test_a_zombie_instance_never_overwrites_a_newer_epoch(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        old = config(tmp_path, journal_dir=tmp_path / "old", flush_interval=600.0)
        new = config(tmp_path, journal_dir=tmp_path / "new")
        now = [1_800_000_000.0]
        seams = Seams(wall_clock=lambda: now[0])  # the store lease's clock
        async with trio.open_nursery() as nursery:
            zombie = await nursery.start(functools.partial(serve_cache, seams=seams), old)
            await zombie.put("k", b"from the zombie")  # acknowledged, not flushed yet
            # The zombie stalls past its lease (a live one would refuse the new instance), and
            # the new instance takes the table over with a newer epoch.
            now[0] += 3600
            async with open_cache(new, seams=seams) as fresh:
                await fresh.put("k", b"from the new instance")
                await fresh.flush()
            await zombie.flush()  # the late batch arrives after the newer write
            await zombie.aclose()
        assert store_rows(tmp_path)["k"].value == b"from the new instance"


async def test_a_replayed_older_write_never_undoes_a_newer_one(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        cfg = config(tmp_path, flush_interval=600.0)
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(serve_cache, cfg)
            await cache.put("k", b"old")
            nursery.cancel_scope.cancel()  # "old" stays journaled
        # Another instance (its own journal) writes a newer value straight to the store.
        async with open_cache(config(tmp_path, journal_dir=tmp_path / "other")) as other:
            await other.put("k", b"newer")
        async with open_cache(cfg) as cache:  # replays "old", which must lose
            await cache.flush()
        assert store_rows(tmp_path)["k"].value == b"newer"


async def test_listeners_see_crashes_restarts_and_replays(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        events: list[str] = []
        crasher = Crasher("flush.before_send")
        seams = Seams(fault_point=crasher)
        async with open_cache(config(tmp_path, shards=1), seams=seams) as cache:
            cache.add_listener(lambda e: events.append(f"{e.kind} {e.actor}"))
            cache.add_listener(lambda e: 1 / 0)  # a broken listener never hurts the cache
            await cache.put("a", b"1")
            await cache.flush()
        assert events[:3] == ["crash shard-0", "restart shard-0", "replay shard-0"]


async def test_overload_raises_when_the_oldest_write_is_too_old(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        def wrap(store: Any) -> Any:
            return FlakyStore(store, [10**9])

        cfg = config(tmp_path, shards=1, max_dirty_age=0.3, on_overload="raise", drain_timeout=0.2,
                     retry_initial=0.01, retry_max=0.05)
        async with open_cache(cfg, seams=Seams(wrap_store=wrap)) as cache:
            await cache.put("k", b"1")
            await trio.sleep(0.5)
            with pytest.raises(Overloaded, match=r"max_dirty_age=0\.3s"):
                await cache.put("k", b"2")  # the same key: still one unpersisted entry, but old


# -- an unusable journal_dir is a ConfigError that says what to do (issue 12, item 10) --------


@pytest.mark.parametrize("ack", ["fsync", "store"])
async def test_a_file_where_the_journal_dir_should_be_is_a_config_error(
    tmp_path: Path, ack: str
) -> None:
    with trio.fail_after(CAP):
        (tmp_path / "journal").write_text("not a directory")
        with pytest.raises(ConfigError) as info:
            async with open_cache(config(tmp_path, ack=ack)):
                pass
        message = str(info.value)
        assert message.startswith(f"Config.journal_dir={str(tmp_path / 'journal')!r} cannot hold")
        assert "a file is in the way where a directory should be" in message
        with pytest.raises(ConfigError, match=r"Not a directory.*a file is in the way"):
            async with open_cache(config(tmp_path, journal_dir=tmp_path / "journal" / "sub")):
                pass


async def test_a_file_where_a_shard_directory_should_be_is_a_config_error(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        (tmp_path / "journal").mkdir()
        (tmp_path / "journal" / "shard-0001").write_text("in the way")
        in_the_way = r"Config.journal_dir=.*shard-0001.*file is in the way"
        with pytest.raises(ConfigError, match=in_the_way):
            async with open_cache(config(tmp_path)):
                pass


class _ReadOnlyDisk(SimulatedFileSystem):
    def write_file(self, path: str, data: bytes) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


async def test_a_journal_dir_without_write_permission_is_a_config_error(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        seams = Seams(filesystem=_ReadOnlyDisk())
        with pytest.raises(ConfigError) as info:
            async with open_cache(config(tmp_path), seams=seams):
                pass
        assert "Config.journal_dir=" in str(info.value)
        assert "Permission denied" in str(info.value)
        assert "give the user running the cache write access to it" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_a_read_only_parent_directory_is_a_config_error(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        try:
            with pytest.raises(ConfigError, match=r"Permission denied.*write access"):
                async with open_cache(config(tmp_path, journal_dir=parent / "journal")):
                    pass
        finally:
            parent.chmod(0o755)
