"""Runtime bugs the chaos harness found, each pinned by the rule it broke."""

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from writebehind import (
    Config,
    Rejection,
    Seams,
    ShardCrashed,
    Store,
    StoreRecord,
    StoreRejected,
    StoreUnavailable,
    open_cache,
)
from writebehind._journal import SimulatedFileSystem
from writebehind.harness import MemoryStore

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI


class RefusingStore:
    """Refuses every record of one key for good; passes the rest through."""

    def __init__(self, inner: Store, key: str) -> None:
        self.inner = inner
        self.key = key
        self.blocking = inner.blocking

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write_batch(self, records: Sequence[StoreRecord]) -> tuple[Rejection, ...]:
        self.inner.write_batch([r for r in records if r.key != self.key])
        return tuple(Rejection(r.key, r.version, "refused") for r in records if r.key == self.key)


def memory_config(tmp_path: Path, **kw: object) -> Config:
    return Config(store="sqlite:///unused.db", journal_dir=tmp_path / "journal", **kw)  # type: ignore[arg-type]


async def test_regression_a_write_through_the_store_refused_is_never_acknowledged(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        # ack='store' used to settle a refused record as committed and acknowledge the put.
        db = MemoryStore()
        seams = Seams(store_factory=db.factory, wrap_store=lambda s: RefusingStore(s, "poison"))
        async with open_cache(memory_config(tmp_path, ack="store"), seams=seams) as cache:
            with pytest.raises(StoreRejected, match="refused 'poison' for good"):
                await cache.put("poison", b"x")
            await cache.put("fine", b"y")
            assert await cache.get("poison") is None
        assert db.values() == {"fine": b"y"}


class FailingStore:
    """Fails the first ``failures`` batches with StoreUnavailable."""

    def __init__(self, inner: Store, failures: list[int]) -> None:
        self.inner = inner
        self.failures = failures
        self.blocking = inner.blocking

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write_batch(self, records: Sequence[StoreRecord]) -> tuple[Rejection, ...]:
        if self.failures[0]:
            self.failures[0] -= 1
            raise StoreUnavailable("injected")
        return self.inner.write_batch(records)


class StepCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


async def test_regression_a_flush_waiting_out_a_store_backoff_does_not_spin(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        # flush() used to be woken by its own kick and kick again at once: a busy loop for the
        # whole backoff (forever under MockClock's autojump, since time never got idle to jump).
        db = MemoryStore()
        failures = [2]
        seams = Seams(store_factory=db.factory, wrap_store=lambda s: FailingStore(s, failures))
        cfg = memory_config(tmp_path, shards=1, retry_initial=0.2, retry_max=0.2)
        async with open_cache(cfg, seams=seams) as cache:
            await cache.put("a", b"1")
            counter = StepCounter()
            trio.lowlevel.add_instrument(counter)
            try:
                await cache.flush()
            finally:
                trio.lowlevel.remove_instrument(counter)
        assert db.values() == {"a": b"1"} and failures == [0]
        assert counter.steps < 500, f"{counter.steps} task steps to wait out two backoffs"


async def test_regression_a_clean_stop_never_leaves_an_older_value_to_replay_over_a_newer_one(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # ack='memory' used to close the journal with its newest records still buffered: the next
    # start replayed an older journaled value into the map and served it over the store's.
    # Whether the buffer got written first depended on task order, so try a few orders.
    for attempt in range(8):
        db = MemoryStore()
        seams = Seams(store_factory=db.factory, filesystem=SimulatedFileSystem())
        cfg = memory_config(
            tmp_path / str(attempt), ack="memory", shards=1, flush_interval=60.0
        )
        async with open_cache(cfg, seams=seams) as cache:
            await cache.put("a", b"old")
            await trio.sleep(5)  # the background journal writer gets "old" to the OS
            await cache.put("a", b"new")
        assert db.values() == {"a": b"new"}
        async with open_cache(cfg, seams=seams) as cache:
            assert await cache.get("a") == b"new", f"attempt {attempt}"


async def test_regression_a_write_whose_shard_crashed_mid_put_is_never_acknowledged(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        # ack='memory' yields once after applying a put. A put that reached a shard whose actor
        # had just crashed (its incarnation still unwinding) used to be acknowledged after the
        # crash was over: the dead incarnation's unwritten journal buffer took the write with it.
        armed = [True]

        def crash_flusher(point: str, actor: str) -> None:
            if point == "flush.building_batch" and armed[0]:
                armed[0] = False
                raise RuntimeError("injected")

        db = MemoryStore()
        seams = Seams(store_factory=db.factory, fault_point=crash_flusher)
        cfg = memory_config(
            tmp_path, ack="memory", shards=1, batch_size=1, flush_threshold=1, flush_interval=60.0
        )
        crashed = [False]
        acked_after_crash: list[str] = []
        async with open_cache(cfg, seams=seams) as cache:
            cache.add_listener(
                lambda e: crashed.__setitem__(0, True) if e.kind == "crash" else None
            )
            for i in range(20):
                try:
                    await cache.put(f"k{i}", b"v")
                except ShardCrashed:
                    continue
                if crashed[0]:
                    acked_after_crash.append(f"k{i}")
            assert crashed[0] and acked_after_crash
            # No crash after these acknowledgements: every one must read back.
            assert [k for k in acked_after_crash if await cache.get(k) != b"v"] == []
