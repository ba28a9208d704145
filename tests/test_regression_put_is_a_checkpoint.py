"""A put is a trio checkpoint in every ack mode (found by the inspector's slow-client test:
in ack='memory' a put loop never yielded, so the flusher never ran and the loop could not be
cancelled)."""

from pathlib import Path

import trio

from writebehind import Config, Seams, open_cache
from writebehind._journal import SimulatedFileSystem
from writebehind.harness import MemoryStore

MAX_PUTS = 200_000  # a bound so that the broken behaviour fails instead of spinning forever


def config(tmp_path: Path) -> Config:
    return Config(journal_dir=tmp_path / "journal", ack="memory", shards=1, flush_interval=0.01)


async def test_regression_a_put_loop_in_ack_memory_lets_the_flusher_run(tmp_path: Path) -> None:
    store = MemoryStore()
    seams = Seams(store_factory=store.factory, filesystem=SimulatedFileSystem(1))
    with trio.fail_after(30):
        async with open_cache(config(tmp_path), seams=seams) as cache:
            for i in range(MAX_PUTS):
                await cache.put(f"k{i % 10}", b"%d" % i)
                if store.values():
                    break
            assert store.values(), "no flush ran while the put loop was running"


async def test_regression_a_put_loop_in_ack_memory_can_be_cancelled(tmp_path: Path) -> None:
    seams = Seams(store_factory=MemoryStore().factory, filesystem=SimulatedFileSystem(1))
    with trio.fail_after(30):
        async with open_cache(config(tmp_path), seams=seams) as cache:
            done = 0
            with trio.move_on_after(0.05) as scope:
                while done < MAX_PUTS:
                    await cache.put(f"k{done % 10}", b"v")
                    done += 1
            assert scope.cancelled_caught and done < MAX_PUTS


async def test_regression_a_cancelled_put_is_refused_before_anything_happens(
    tmp_path: Path,
) -> None:
    seams = Seams(store_factory=MemoryStore().factory, filesystem=SimulatedFileSystem(1))
    with trio.fail_after(30):
        async with open_cache(config(tmp_path), seams=seams) as cache:
            with trio.CancelScope() as scope:
                scope.cancel()
                await cache.put("k", b"v")
            assert scope.cancelled_caught
            assert await cache.get("k") is None


async def test_regression_a_get_loop_on_cached_keys_lets_other_tasks_run(tmp_path: Path) -> None:
    seams = Seams(store_factory=MemoryStore().factory, filesystem=SimulatedFileSystem(1))
    with trio.fail_after(30):
        async with open_cache(config(tmp_path), seams=seams) as cache:
            await cache.put("k", b"v")
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await trio.sleep(0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                for _ in range(1000):
                    assert await cache.get("k") == b"v"
                nursery.cancel_scope.cancel()
            assert ticks > 100
