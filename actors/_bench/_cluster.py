"""``writebehind bench --cluster``: cluster mode side by side with its limits (issue 14).

One run starts its own three-node NATS cluster (``nats-server`` on loopback ports, stores in
a temporary directory, ``sync_interval: always``), then measures, one cell after another on
the same machine:

- the limit: a raw JetStream publish-ack loop through the same trio bridge
  (``_cluster/_bridge.py``), 64 concurrent publishers, on a stream of 1 and of 3 replicas,
  each measured right before the cache cell it is compared with (the machine's load drifts);
- ``ack='replicated'`` with 1 and 3 replicas, 64 writers: a cache whose shards are
  partitions journaled on the cluster's stream;
- the local ``ack='fsync'`` on the same store, for scale;
- with one writer, raw R3, replicated R3 and fsync (the latency of a lone put);
- a routed put (on an instance that does not host the key's partition, so it goes to the
  owner over NATS request/reply) against a local one: two instances of one cluster in this
  process, one writer on the first, rounds alternating.

Each cell reports acknowledged writes per second, p50/p99 per write (call to return) and the
CPU time per acknowledged write: this process's (trio, the bridge's loop thread, the client)
and the NATS servers' (all three, summed, from ``/proc``). The CPU figures are what say what
N machines would do: on a 2-core machine scaling cannot be measured by adding instances.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from .._cluster._nodes import NatsCluster
from .._core._config import Config
from .._open import open_cache
from .._runtime._cache import Cache
from ._latency import Latencies
from ._workloads import WORKLOADS, key_chooser, value_pool

#: Bytes per raw message: about one record frame of a 100-byte value and its key.
RAW_PAYLOAD = b"r" * 128
VALUE_BYTES = 100
WRITERS = 64


@attrs.frozen
class ClusterCell:
    """One measured cell. ``kind`` is ``raw`` (publish-ack loop), ``replicated``, ``fsync``,
    ``routed`` or ``local``; ``replicas`` the stream's (None for the local journal)."""

    kind: str
    replicas: int | None
    writers: int
    seconds: float
    acks: int
    p50_ms: float
    p99_ms: float
    cpu_s: float  # this process
    server_cpu_s: float  # every NATS server of the run, summed
    leader_cpu_s: float  # the busiest one (the stream leader, which every publish goes to)
    messages: int | None = None  # stream messages published in the window (None: no stream)

    @property
    def name(self) -> str:
        where = "" if self.replicas is None else f" R{self.replicas}"
        label = {"raw": "raw publish-ack loop", "replicated": "ack=replicated",
                 "fsync": "ack=fsync (local file)", "routed": "routed put (non-owner)",
                 "local": "local put (owner)"}[self.kind]
        return f"{label}{where}"

    @property
    def acks_s(self) -> float:
        return self.acks / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_ack(self) -> float:
        return self.cpu_s / self.acks * 1e6 if self.acks else 0.0

    @property
    def server_cpu_us_per_ack(self) -> float:
        return self.server_cpu_s / self.acks * 1e6 if self.acks else 0.0

    @property
    def acks_per_message(self) -> float | None:
        """Acknowledged writes per published message: the group commits' size."""
        return self.acks / self.messages if self.messages else None

    @property
    def leader_cpu_us_per_ack(self) -> float:
        return self.leader_cpu_s / self.acks * 1e6 if self.acks else 0.0


@attrs.define
class ClusterRun:
    """Everything one ``bench --cluster`` run measured."""

    scale: str
    seed: int
    cell_seconds: float
    nats_version: str = ""
    partitions: int = 0
    cells: list[ClusterCell] = attrs.field(factory=list)
    #: Why a cell the issue asks for was not run (kind -> reason).
    skipped: dict[str, str] = attrs.field(factory=dict)
    #: CPU seconds per second the three servers spend with no client writing (heartbeats,
    #: Raft, timers): part of every cell's server figure, more of a slow cell's per write.
    idle_server_cpu: float = 0.0
    wall_seconds: float = 0.0

    def cell(self, kind: str, replicas: int | None, writers: int = WRITERS
             ) -> ClusterCell | None:
        return next((c for c in self.cells if (c.kind, c.replicas, c.writers)
                     == (kind, replicas, writers)), None)


class _Clock:
    """Process and server CPU over one timed window."""

    def __init__(self, cluster: NatsCluster) -> None:
        self._cluster = cluster
        self._began = time.perf_counter()
        self._cpu = time.process_time()
        self._servers = [n.cpu_seconds() for n in cluster.nodes]

    def stop(self) -> tuple[float, float, float, float]:
        """(wall seconds, process CPU, servers' CPU summed, the busiest server's CPU)."""
        elapsed = time.perf_counter() - self._began
        cpu = time.process_time() - self._cpu
        spent = [n.cpu_seconds() - before
                 for n, before in zip(self._cluster.nodes, self._servers, strict=True)]
        return elapsed, cpu, sum(spent), max(spent, default=0.0)


async def _writers(count: int, seconds: float, one: Callable[[int, int], Awaitable[None]],
                   cluster: NatsCluster) -> tuple[Latencies, int, tuple[float, ...]]:
    """Run ``one(writer, n)`` in ``count`` tasks until ``seconds`` passed; each returns when
    its write was acknowledged."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds

    async def writer(i: int) -> None:
        n = 0
        # At least one each, so a loaded machine still measures something.
        while (start := time.perf_counter()) < deadline or not n:
            await one(i, n)
            samples.append(time.perf_counter() - start)
            n += 1

    clock = _Clock(cluster)
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(writer, i)
    figures = clock.stop()
    lat = Latencies()
    for s in samples:
        lat.record(s)
    return lat, len(samples), figures


def _cell(kind: str, replicas: int | None, writers: int, lat: Latencies, acks: int,
          figures: tuple[float, ...], messages: int | None = None) -> ClusterCell:
    elapsed, cpu, servers, leader = figures
    return ClusterCell(kind, replicas, writers, elapsed, acks, lat.percentile_ms(50),
                       lat.percentile_ms(99), cpu, servers, leader, messages)


async def raw_publish_loop(cluster: NatsCluster, replicas: int, writers: int,
                           seconds: float) -> ClusterCell:
    """The limit: ``writers`` tasks each publishing 128-byte messages to a stream of
    ``replicas`` and awaiting each publish-ack, through the cache's own bridge."""
    import nats.js.errors

    from .._cluster._bridge import connect

    name = f"BENCH_RAW_R{replicas}_{writers}"
    async with connect(cluster.servers, name="writebehind bench") as conn:
        try:
            await conn.run(conn.js.delete_stream, name)
        except nats.js.errors.NotFoundError:
            pass  # the usual case: a fresh cluster
        await conn.run(conn.js.add_stream, name=name, subjects=[f"{name}.>"],
                       num_replicas=replicas)
        publish = conn.js.publish

        async def one(i: int, n: int) -> None:
            await conn.run(publish, f"{name}.{i}", RAW_PAYLOAD, stream=name)

        await _writers(writers, min(0.5, seconds), one, cluster)  # warm-up
        lat, acks, figures = await _writers(writers, seconds, one, cluster)
        await conn.run(conn.js.delete_stream, name)
    return _cell("raw", replicas, writers, lat, acks, figures, messages=acks)


async def cache_cell(cluster: NatsCluster, config: Config, writers: int, seconds: float,
                     seed: int) -> ClusterCell:
    """``writers`` tasks putting uniform keys with 100-byte values into a cache on
    ``config``; the cache's start and final flush are outside the window."""
    rngs = [random.Random(seed * 1_000_003 + i) for i in range(writers)]
    choosers = [key_chooser(WORKLOADS["uniform"], rng) for rng in rngs]
    pools = [value_pool(rng, VALUE_BYTES) for rng in rngs]
    async with open_cache(config) as cache:
        put = cache.put

        async def one(i: int, n: int) -> None:
            await put(choosers[i](), pools[i][n & 63])

        before = await _published(cluster, config)
        lat, acks, figures = await _writers(writers, seconds, one, cluster)
        after = await _published(cluster, config)
        await cache.flush()
    kind = "fsync" if config.cluster is None else "replicated"
    messages = None if before is None or after is None else after - before
    return _cell(kind, config.replicas if config.cluster else None, writers, lat, acks,
                 figures, messages)


async def _published(cluster: NatsCluster, config: Config) -> int | None:
    """The journal stream's last sequence: every message the cache published so far (group
    commits, fences); None for a local journal. Read on a connection of its own."""
    if config.cluster is None:
        return None
    from .._cluster._bridge import connect
    from .._cluster._journal import stream_name

    async with connect(cluster.servers, name="writebehind bench") as conn:
        info = await conn.run(conn.js.stream_info, stream_name(config.cluster_name))
    return int(info.state.last_seq)


#: Partitions of the routed-put cell: enough that two members each host some.
ROUTED_PARTITIONS = 8
#: Interleaved rounds of local and routed puts, so both see the same machine.
ROUTED_ROUNDS = 4


async def _settled(caches: Sequence[Cache], partitions: int, timeout: float) -> None:
    """Wait until every cache sees all of them live, none is still starting a partition,
    and between them they host every partition once."""
    with trio.fail_after(timeout):
        while True:
            views = [c.cluster_view() for c in caches]
            if all(v is not None for v in views):
                names = {v.member for v in views if v is not None}
                hosted = [p for v in views if v is not None for p in v.hosted]
                if all(v is not None and set(v.live) == names and not v.starting
                       for v in views) and sorted(hosted) == list(range(partitions)):
                    return
            await trio.sleep(0.05)


async def routed_cells(cluster: NatsCluster, config: Config, seconds: float, seed: int
                       ) -> tuple[ClusterCell, ClusterCell] | str:
    """A routed put (on an instance that does not own the key's partition: one NATS
    request/reply to the owner) against a local one, one writer, two instances of one
    cluster in this process; rounds alternate so both see the same machine. Returns the
    (local, routed) cells, or why they could not be measured."""
    from .._core._routing import shard_of

    partitions = config.shards
    values = value_pool(random.Random(seed), VALUE_BYTES)
    async with open_cache(config) as a, open_cache(config) as b:
        await _settled([a, b], partitions, timeout=60)
        view = a.cluster_view()
        assert view is not None
        here = set(view.hosted)
        if not here or len(here) == partitions:
            return f"one instance hosts every partition ({sorted(here)} of {partitions})"
        keys = [f"route-{i:07d}" for i in range(100_000)]
        local_keys = [k for k in keys if shard_of(k, partitions) in here]
        routed_keys = [k for k in keys if shard_of(k, partitions) not in here]
        found: dict[str, list[Any]] = {"local": [], "routed": []}
        for _ in range(ROUTED_ROUNDS):
            for kind, pool in (("local", local_keys), ("routed", routed_keys)):
                rng = random.Random(seed + len(found[kind]))

                async def one(i: int, n: int, pool: list[str] = pool,
                              rng: random.Random = rng) -> None:
                    await a.put(pool[rng.randrange(len(pool))], values[n & 63])

                found[kind].append(await _writers(1, seconds / ROUTED_ROUNDS, one, cluster))
        # The routed puts must have reached the other instance, or they timed nothing.
        other = b.cluster_view()
        if other is None or other.routed_served == 0:
            raise RuntimeError("the routed puts never reached the other instance "
                               f"({other!r}); the routed cell measured nothing")
    cells = []
    for kind in ("local", "routed"):
        lat = Latencies()
        acks = 0
        totals = [0.0, 0.0, 0.0, 0.0]
        for part_lat, part_acks, figures in found[kind]:
            lat.merge(part_lat)
            acks += part_acks
            totals = [t + f for t, f in zip(totals, figures, strict=True)]
        cells.append(_cell(kind, config.replicas, 1, lat, acks, tuple(totals)))
    return cells[0], cells[1]


Step = tuple[str, Callable[[], Any]]


def plan(run: ClusterRun, cluster: NatsCluster, root: Path, *, tiny: bool) -> list[Step]:
    """The run as named steps (the progress bar counts them)."""
    seconds, seed = run.cell_seconds, run.seed
    steps: list[Step] = []
    store = f"sqlite:///{(root / 'store.db').resolve()}"
    counter = iter(range(1, 1000))

    def config(replicas: int | None) -> Config:
        index = next(counter)
        if replicas is None:
            return Config(store=store, store_table=f"bench_fsync_{index}",
                          journal_dir=root / f"journal-{index}", ack="fsync", seed=seed)
        # A stream and bucket of their own per cell: the replicas are the stream's.
        return Config(store=store, store_table=f"bench_repl_{index}",
                      journal_dir=root / f"journal-{index}", ack="replicated", seed=seed,
                      cluster=cluster.servers, cluster_name=f"bench{index}",
                      replicas=replicas)

    def add(label: str, fn: Callable[[], Awaitable[ClusterCell]]) -> None:
        steps.append((label, lambda: run.cells.append(trio.run(fn))))

    def raw(writers: int, replicas: int) -> Callable[[], Awaitable[ClusterCell]]:
        return lambda: raw_publish_loop(cluster, replicas, writers, seconds)

    def cache(writers: int, replicas: int | None) -> Callable[[], Awaitable[ClusterCell]]:
        return lambda: cache_cell(cluster, config(replicas), writers, seconds, seed)

    def idle() -> None:
        before = sum(n.cpu_seconds() for n in cluster.nodes)
        began = time.perf_counter()
        time.sleep(min(2.0, 4 * seconds))
        spent = sum(n.cpu_seconds() for n in cluster.nodes) - before
        run.idle_server_cpu = spent / (time.perf_counter() - began)

    steps.append(("servers idle", idle))
    # Each cache cell right after the raw loop it is compared with.
    shapes = [(WRITERS, 1), (WRITERS, 3)] + ([] if tiny else [(1, 3)])
    for writers, replicas in shapes:
        add(f"raw publish-ack R{replicas}, {writers}w", raw(writers, replicas))
        add(f"ack=replicated R{replicas}, {writers}w", cache(writers, replicas))
    for writers in (WRITERS,) if tiny else (WRITERS, 1):
        add(f"ack=fsync, {writers}w", cache(writers, None))

    def routed() -> None:
        index = next(counter)
        config = Config(store=store, store_table=f"bench_route_{index}",
                        journal_dir=root / f"journal-{index}", ack="replicated", seed=seed,
                        cluster=cluster.servers, cluster_name=f"bench{index}", replicas=3,
                        partitions=ROUTED_PARTITIONS, lease_ttl=10.0)
        found = trio.run(routed_cells, cluster, config, seconds, seed)
        if isinstance(found, str):
            run.skipped["routed"] = found
        else:
            run.cells.extend(found)

    steps.append(("routed vs local put, 1w", routed))
    run.partitions = Config().shards
    return steps


def start_cluster(binary: Path, root: Path) -> NatsCluster:
    """Three routed JetStream servers on free loopback ports, fsyncing every write."""
    cluster = NatsCluster.create(binary, root / "nats", sync_always=True, name="wbbench")
    try:
        cluster.start()
    except BaseException:
        for node in cluster.nodes:
            node.kill()
        raise
    return cluster


def server_version(cluster: NatsCluster) -> str:
    try:
        return str(cluster.nodes[0].monitor("varz").get("version", ""))
    except (OSError, ValueError):
        return ""


def temporary_root(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="writebehind-bench-cluster-", dir=parent))
