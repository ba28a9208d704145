"""A slow or stuck client never slows the cache, and is disconnected when it falls behind."""

from __future__ import annotations

from pathlib import Path

import trio

from writebehind import Cache

from .conftest import connect, memory_cache, receive, receive_until, running_inspector


async def count_puts(cache: Cache, seconds: float) -> int:
    done = 0
    with trio.move_on_after(seconds):
        while True:
            await cache.put(f"k{done % 100}", b"x" * 100)
            done += 1
    return done


async def test_a_stuck_client_does_not_slow_the_cache_or_other_clients(tmp_path: Path) -> None:
    # Real clock: throughput is compared within this run only, with a generous factor.
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache, send_timeout=60) as server:
                alone = await count_puts(cache, 0.4)
                async with trio.open_nursery() as nursery:
                    stuck = await connect(server, nursery, lockstep=True)  # never reads
                    watcher = await connect(server, nursery)
                    await receive_until(watcher, "snapshot")
                    updates = 0

                    async def watch() -> None:
                        nonlocal updates
                        while True:
                            if (await receive(watcher))["type"] == "update":
                                updates += 1

                    nursery.start_soon(watch)
                    with_stuck = await count_puts(cache, 0.4)
                    # The stuck client is still connected (send_timeout is long): its sends
                    # are blocked, yet the cache and the other client carried on.
                    assert server.statistics().clients == 2
                    assert updates >= 1
                    assert with_stuck * 4 >= alone, (alone, with_stuck)
                    assert stuck.closed is None
                    nursery.cancel_scope.cancel()


async def test_a_client_that_takes_nothing_is_disconnected_after_send_timeout(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(60):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache, send_timeout=2.0) as server:
                async with trio.open_nursery() as nursery:
                    await connect(server, nursery, lockstep=True)
                    watcher = await connect(server, nursery)
                    await receive_until(watcher, "snapshot")
                    for i in range(200):  # keep the state changing: updates keep coming
                        await cache.put(f"k{i}", b"v")
                        await trio.sleep(0.02)
                    stats = server.statistics()
                    assert stats.disconnected_slow == 1 and stats.clients == 1
                    assert (await receive_until(watcher, "update"))["type"] == "update"
                    nursery.cancel_scope.cancel()


async def test_a_client_flooded_past_its_event_queue_is_disconnected_not_buffered(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(60):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache, send_timeout=1000, max_events=8) as server:
                async with trio.open_nursery() as nursery:
                    await connect(server, nursery, lockstep=True)
                    await trio.sleep(1)  # its sends are now blocked
                    for i in range(100):
                        cache.record_event("fault", "shard-0", f"fault #{i}")
                    await trio.sleep(1)
                    stats = server.statistics()
                    assert stats.disconnected_slow == 1 and stats.clients == 0
                    assert 0 < stats.dropped_events <= 100
                    await cache.put("k", b"v")  # the cache never noticed
                    nursery.cancel_scope.cancel()
