"""The trio bridge to nats-py: results, errors, cancellation, and a thread that is joined."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from writebehind._cluster._bridge import connect, open_asyncio_loop, split_servers

from .nodes import NatsCluster


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "writebehind-nats"]


async def test_run_returns_the_coroutine_result_and_raises_its_error() -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        assert threading.current_thread().name == "writebehind-nats"
        return a + b

    async def fail() -> None:
        raise KeyError("from asyncio")

    with trio.fail_after(10):
        async with open_asyncio_loop() as bridge:
            assert await bridge.run(add, 2, b=3) == 5
            with pytest.raises(KeyError, match="from asyncio"):
                await bridge.run(fail)
            assert bridge.statistics()["calls"] == 2


async def test_cancelling_the_trio_caller_cancels_the_asyncio_task() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with trio.fail_after(10):
        async with open_asyncio_loop() as bridge:
            with trio.move_on_after(0.05) as scope:
                await bridge.run(forever)
            assert scope.cancelled_caught
            await trio.to_thread.run_sync(cancelled.wait, 5)
            assert cancelled.is_set()


async def test_the_loop_thread_ends_with_the_block_and_leftover_tasks_are_cancelled() -> None:
    leftover_cancelled = threading.Event()

    async def spawn() -> None:
        async def linger() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                leftover_cancelled.set()
                raise

        asyncio.get_running_loop().create_task(linger())

    before = len(_loop_threads())
    with trio.fail_after(10):
        async with open_asyncio_loop() as bridge:
            await bridge.run(spawn)
            assert len(_loop_threads()) == before + 1
    assert len(_loop_threads()) == before
    assert leftover_cancelled.is_set()


def test_split_servers() -> None:
    assert split_servers("nats://a:1, b:2") == ["nats://a:1", "nats://b:2"]
    with pytest.raises(ValueError, match="no NATS server"):
        split_servers(" , ")


async def test_connect_publishes_to_the_cluster_and_closes(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(30):
        async with connect(nats_cluster.servers) as conn:
            assert conn.connected_url in nats_cluster.urls
            await conn.run(conn.js.add_stream, name="BRIDGE", subjects=["bridge.>"],
                           num_replicas=3)
            acks = [await conn.run(conn.js.publish, "bridge.x", b"%d" % i) for i in range(5)]
            assert [a.seq for a in acks] == [1, 2, 3, 4, 5]
            client = conn.client
        assert client.is_closed
    assert not _loop_threads()
