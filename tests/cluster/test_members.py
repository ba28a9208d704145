"""Several live instances on one cluster and one store table (PostgreSQL), on a real
three-node NATS cluster: membership, assignment, hosting, hand-over and routing.

Each instance hosts exactly the partitions rendezvous gives it over the live members; one
that joins takes only its share, one that leaves gracefully hands its share over without
the others waiting out a lease, one that is SIGKILLed has its share taken over once its
membership and leases lapsed. Every instance reads every instance's acknowledged writes
(routed to the owner), and every acknowledged write ends in the store."""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from writebehind import Cache, Config, WritebehindError, open_cache
from writebehind._cluster._bridge import connect
from writebehind._cluster._membership import Membership
from writebehind._core._partitions import assign, owned_by
from writebehind._core._routing import shard_of
from writebehind._stores._postgres import PostgresStore

from .nodes import NatsCluster

log = logging.getLogger(__name__)
# Member names are random (host:pid:token), so shares are too: with 16 partitions a member
# of two gets none with probability 2^-16.
PARTITIONS = 16
TTL = 3.0  # leases and membership keys: renewed every 0.6 s, lapsing 3 s after the last


def _config(nats_cluster: NatsCluster, pg: tuple[str, str], journal: Path, name: str,
            **overrides: object) -> Config:
    url, table = pg
    fields: dict[str, object] = {
        "cluster": nats_cluster.servers, "cluster_name": name, "partitions": PARTITIONS,
        "ack": "replicated", "lease_ttl": TTL, "store": url, "store_table": table,
        "journal_dir": journal, "replicas": 3,
        # Nothing is flushed but by flush(), wait_persisted() and hand-overs: what the
        # store holds afterwards is what they put there.
        "flush_interval": 3600.0,
    }
    fields.update(overrides)
    return Config(**fields)  # type: ignore[arg-type]


def _stored(pg: tuple[str, str]) -> dict[str, bytes | None]:
    store = PostgresStore(pg[0], table=pg[1])
    store.connect()
    try:
        return {k: r.value for k, r in store.read_all().items()}
    finally:
        store.close()


def _hosted(cache: Cache) -> frozenset[int]:
    return frozenset(cache.cluster_view().hosted)


async def _settled(caches: list[Cache]) -> dict[str, frozenset[int]]:
    """Wait until every cache sees all of them live and they host disjoint shares that
    cover every partition, each the share rendezvous gives it; return the shares."""
    with trio.fail_after(30):
        while True:
            views = [c.cluster_view() for c in caches]
            names = {v.member for v in views}
            shares = {v.member: frozenset(v.hosted) for v in views}
            expected = assign(PARTITIONS, names)
            if all(set(v.live) == names and not v.starting for v in views) and all(
                shares[m] == owned_by(expected, m) for m in names
            ):
                return shares
            await trio.sleep(0.05)


@asynccontextmanager
async def _flowing(caches: dict[str, Cache], acknowledged: dict[str, bytes | None],
                   errors: list[WritebehindError]) -> AsyncIterator[None]:
    """Put keys through each of ``caches`` one after another for the block's duration,
    recording each acknowledged write (and each error: none is expected)."""
    stop = trio.Event()

    async def writer(cache: Cache, who: str) -> None:
        n = 0
        while not stop.is_set():
            key, value = f"flow-{who}-{n}", b"f%d" % n
            try:
                await cache.put(key, value)
            except WritebehindError as exc:
                errors.append(exc)
            else:
                acknowledged[key] = value
            n += 1

    async with trio.open_nursery() as nursery:
        for who, cache in caches.items():
            nursery.start_soon(writer, cache, who)
        yield
        stop.set()


async def _run_instance(config: Config, leave: trio.Event, left: trio.Event, *,
                        task_status: trio.TaskStatus[Cache] = trio.TASK_STATUS_IGNORED) -> None:
    """An instance as a task: serves until ``leave``, then stops (a graceful leave)."""
    try:
        async with open_cache(config) as cache:
            task_status.started(cache)
            await leave.wait()
    finally:
        left.set()


@asynccontextmanager
async def _instance(config: Config) -> AsyncIterator[Cache]:
    async with open_cache(config) as cache:
        yield cache


async def test_live_instances_share_the_partitions_route_calls_and_hand_over(
    nats_cluster: NatsCluster, pg_table: tuple[str, str], tmp_path: Path,
) -> None:
    name = "three"
    written: dict[str, bytes | None] = {}
    flowed: dict[str, bytes | None] = {}  # acknowledged while partitions moved
    errors: list[WritebehindError] = []
    with trio.fail_after(180):
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                _instance(_config(nats_cluster, pg_table, tmp_path / "a", name)))
            alone = await _settled([a])
            assert alone[a.cluster_view().member] == set(range(PARTITIONS))

            # A second instance takes only its share: every move is from A to B.
            # Instances that leave mid-test run as tasks (their nurseries nest in this one).
            instances = await stack.enter_async_context(trio.open_nursery())
            leave_b, b_left, leave_c, c_left = (trio.Event() for _ in range(4))
            stack.callback(leave_b.set)
            stack.callback(leave_c.set)
            b = await instances.start(
                _run_instance, _config(nats_cluster, pg_table, tmp_path / "b", name),
                leave_b, b_left)
            two = await _settled([a, b])
            ma, mb = a.cluster_view().member, b.cluster_view().member
            assert two[ma] | two[mb] == set(range(PARTITIONS)) and not two[ma] & two[mb]

            # A third one: again only its share moves, and nothing moves between A and B.
            # Writes keep flowing through A and B while it joins (and, below, leaves).
            async with _flowing({"join-a": a, "join-b": b}, flowed, errors):
                c = await instances.start(
                    _run_instance, _config(nats_cluster, pg_table, tmp_path / "c", name),
                    leave_c, c_left)
                three = await _settled([a, b, c])
            mc = c.cluster_view().member
            assert three[ma] <= two[ma] and three[mb] <= two[mb]
            assert three[mc] == (two[ma] - three[ma]) | (two[mb] - three[mb])
            assert three[ma] | three[mb] | three[mc] == set(range(PARTITIONS))

            # Every instance writes, every instance reads everybody's writes (routed).
            caches = {"a": a, "b": b, "c": c}
            for who, cache in caches.items():
                for i in range(40):
                    key = f"{who}-{i}"
                    written[key] = f"{who}{i}".encode()
                    receipt = await cache.put(key, written[key])
                    assert receipt.shard == shard_of(key, PARTITIONS)
                await cache.delete(f"{who}-0")
                written[f"{who}-0"] = None
                many = {f"{who}-many-{i}": b"m%d" % i for i in range(30)}
                receipts = await cache.put_many(many)
                assert [r.key for r in receipts] == list(many)
                written.update(many)
            await a.delete_many(["b-1", "c-1"])
            written["b-1"] = written["c-1"] = None
            for cache in caches.values():
                assert await cache.get_many(list(written)) == written
                assert await cache.get("a-5") == b"a5"
                assert await cache.get("never-written") is None
            # flush() reaches every partition's owner: all of it is in the store after.
            await b.flush()
            snapshot = dict(written)
            stored_now = await trio.to_thread.run_sync(_stored, pg_table)
            assert {k: stored_now.get(k) for k in snapshot} == snapshot
            elsewhere = next(k for k in (f"wp-{i}" for i in range(1000))
                             if shard_of(k, PARTITIONS) not in _hosted(c))
            receipt = await c.put(elsewhere, b"persisted")
            written[elsewhere] = b"persisted"
            await c.wait_persisted(receipt)  # routed too
            assert (await trio.to_thread.run_sync(_stored, pg_table))[elsewhere] == b"persisted"
            # Errors a routed call meets are the local ones, raised before any request.
            with pytest.raises(TypeError, match="value must be bytes"):
                await b.put("a-5", "text")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="key must not be empty"):
                await c.put("", b"x")

            # Routed vs local put latency, side by side in one run (reported, not asserted),
            # on the instance hosting the most partitions.
            on = max(caches.values(), key=lambda x: len(_hosted(x)))
            local_keys = [k for k in (f"lat-{i}" for i in range(4000))
                          if shard_of(k, PARTITIONS) in _hosted(on)][:200]
            routed_keys = [k for k in (f"lat-{i}" for i in range(4000))
                           if shard_of(k, PARTITIONS) not in _hosted(on)][:200]
            timings: dict[str, list[float]] = {"local": [], "routed": []}
            for _ in range(2):  # interleaved rounds: both see the same machine
                for kind, keys in (("local", local_keys), ("routed", routed_keys)):
                    for key in keys[:100]:
                        start = trio.current_time()
                        await on.put(key, b"x" * 64)
                        timings[kind].append(trio.current_time() - start)
                        written[key] = b"x" * 64
            local = statistics.median(timings["local"]) * 1e6
            routed = statistics.median(timings["routed"]) * 1e6
            log.warning("put p50: local %.0f us, routed %.0f us (%.2fx); %d each", local,
                        routed, routed / local, len(timings["local"]))
            print(f"\nput p50: local {local:.0f} us, routed {routed:.0f} us "
                  f"({routed / local:.2f}x)")

            # A graceful leave: C's share moves to A and B without waiting out a lease, and
            # nothing it acknowledged is lost.
            async with _flowing({"leave-a": a, "leave-b": b}, flowed, errors):
                leaving = trio.current_time()
                leave_c.set()
                await c_left.wait()
                after = await _settled([a, b])
                handed = trio.current_time() - leaving
                await trio.sleep(0.2)  # and a little after
            log.warning("%d writes acknowledged while a member joined and left; %d failed",
                        len(flowed), len(errors))
            assert not errors
            assert {k.split("-")[1] for k in flowed} == {"join", "leave"}
            written.update(flowed)
            log.warning("a graceful leave of %d partitions took %.2fs (ttl %.1fs)",
                        len(three[mc]), handed, TTL)
            # Every partition moved by its release, none by waiting out an expiry (which
            # the time alone cannot show on a loaded machine).
            assert a.cluster_view().takeovers == b.cluster_view().takeovers == 0
            assert a.cluster_view().handovers + b.cluster_view().handovers > 0
            assert after[ma] == three[ma] | (after[ma] & three[mc])
            assert after[mb] == three[mb] | (after[mb] & three[mc])
            for cache in (a, b):
                assert await cache.get_many(list(written)) == written
            # A takes its writes back home: one more leave, then A alone.
            leave_b.set()
            await b_left.wait()
            assert (await _settled([a]))[ma] == set(range(PARTITIONS))
            assert await a.get_many(list(written)) == written
    stored = _stored(pg_table)
    assert {k: stored.get(k) for k in written} == written


CHILD = textwrap.dedent("""
    import sys, trio
    from writebehind import Config, open_cache

    async def main() -> None:
        servers, name, partitions, ttl, url, table, journal = sys.argv[1:]
        config = Config(cluster=servers, cluster_name=name, partitions=int(partitions),
                        ack="replicated", lease_ttl=float(ttl), store=url, store_table=table,
                        journal_dir=journal, flush_interval=3600.0)
        async with open_cache(config) as cache:
            while len(cache.cluster_view().live) < 2 or cache.cluster_view().starting:
                await trio.sleep(0.05)
            for i in range(120):
                await cache.put(f"child-{i}", b"c%d" % i)
            print(sorted(cache.cluster_view().hosted), flush=True)
            await trio.sleep_forever()

    trio.run(main)
""")


async def test_a_killed_instances_partitions_are_taken_over_and_nothing_is_lost(
    nats_cluster: NatsCluster, pg_table: tuple[str, str], tmp_path: Path,
) -> None:
    name = "killed"
    expected = {f"child-{i}": b"c%d" % i for i in range(120)}
    with trio.fail_after(180):
        async with open_cache(_config(nats_cluster, pg_table, tmp_path / "a", name)) as a:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, nats_cluster.servers, name, str(PARTITIONS),
                 str(TTL), *pg_table, str(tmp_path / "child")],
                stdout=subprocess.PIPE, text=True,
            )
            try:
                line = await trio.to_thread.run_sync(child.stdout.readline)  # type: ignore[union-attr]
                child_share = set(json.loads(line))  # the partitions it hosted
            finally:
                os.kill(child.pid, signal.SIGKILL)
                await trio.to_thread.run_sync(child.wait)
            killed = trio.current_time()
            assert child_share and not child_share & _hosted(a)
            # Read at once: the calls routed to the dead member are retried until A took
            # its partitions over (its key and leases lapse within the ttl).
            assert await a.get_many(list(expected)) == expected
            took = trio.current_time() - killed
            view = a.cluster_view()
            assert set(view.hosted) == set(range(PARTITIONS))
            assert view.live == (view.member,)
            assert view.takeovers >= len(child_share)
            log.warning("%d partitions of a SIGKILLed instance taken over and read %.2fs "
                        "after the kill (ttl %.1fs)", len(child_share), took, TTL)
            recovered = sum(a.statistics().shards[p].recovered_records for p in child_share)
            assert recovered > 0  # nothing was flushed: it came back from the journal
    stored = _stored(pg_table)
    assert {k: stored.get(k) for k in expected} == expected


async def test_membership_sees_members_come_and_go(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            timings = {"ttl": 1.5, "renew_every": 0.3, "drift": 0.3}
            a = await Membership.open(conn, "mem", "a", replicas=3, **timings)
            b = await Membership.open(conn, "mem", "b", replicas=3, **timings)
            assert await a.read() == {"a"}
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                await nursery.start(b.run)
                assert await a.read() == {"a", "b"} == await b.read()
                await b.leave()
                assert await a.read() == {"a"}
                nursery.cancel_scope.cancel()
            await a.heartbeat()  # a's key lapses 1.5 s after its last write, plus drift
            assert await b.read() == {"a", "b"}
            await trio.sleep(1.5 + 0.3 + 0.1)
            assert await b.read() == {"b"}


ZOMBIE = CHILD.replace("await trio.sleep_forever()", """while True:
                await trio.sleep(0.5)
                print(cache.status.value, flush=True)""")


async def test_a_paused_instance_is_taken_over_and_its_return_loses_nothing(
    nats_cluster: NatsCluster, pg_table: tuple[str, str], tmp_path: Path,
) -> None:
    # SIGSTOP past its leases: the survivor takes its partitions over while its routing
    # subscriptions still exist on the server; SIGCONT: it finds its leases gone.
    name = "paused"
    expected: dict[str, bytes | None] = {f"child-{i}": b"c%d" % i for i in range(120)}
    with trio.fail_after(180):
        async with open_cache(_config(nats_cluster, pg_table, tmp_path / "a", name)) as a:
            child = subprocess.Popen(
                [sys.executable, "-c", ZOMBIE, nats_cluster.servers, name, str(PARTITIONS),
                 str(TTL), *pg_table, str(tmp_path / "child")],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            try:
                line = await trio.to_thread.run_sync(child.stdout.readline)  # type: ignore[union-attr]
                share = set(json.loads(line))
                os.kill(child.pid, signal.SIGSTOP)
                paused = trio.current_time()
                # Reads are asked again until the survivor took the partitions over.
                assert await a.get_many(list(expected)) == expected
                log.warning("a paused instance's %d partitions served by the survivor %.2fs "
                            "after SIGSTOP (ttl %.1fs)", len(share),
                            trio.current_time() - paused, TTL)
                assert set(a.cluster_view().hosted) == set(range(PARTITIONS))
                during = {k: b"during" for k in (f"d-{i}" for i in range(400))
                          if shard_of(k, PARTITIONS) in share}
                await a.put_many(during)
                expected.update(during)
                os.kill(child.pid, signal.SIGCONT)
                resumed = trio.current_time()
                # It finds its leases taken over: its shards give the partitions up (no
                # crash loop: Relinquished is not counted toward max_restarts) and wait for
                # their leases; it renews its membership, so the survivor hands its share
                # back to it.
                while not (len(a.cluster_view().live) == 2
                           and share == set(range(PARTITIONS)) - _hosted(a)):
                    assert child.poll() is None, "the resumed instance stopped"
                    await trio.sleep(0.05)
                log.warning("the resumed instance had its %d partitions back %.2fs after "
                            "SIGCONT", len(share), trio.current_time() - resumed)
                await a.put("after", b"resumed")
                expected["after"] = b"resumed"
                assert await a.get_many(list(expected)) == expected
            finally:
                if child.poll() is None:
                    os.kill(child.pid, signal.SIGKILL)
                await trio.to_thread.run_sync(child.wait)
        # Acknowledged writes the resumed instance held when it was killed are in its
        # partitions' journals, not the store: the next instance replays them.
        async with open_cache(_config(nats_cluster, pg_table, tmp_path / "b", name)) as b:
            while len(b.cluster_view().hosted) < PARTITIONS:
                await trio.sleep(0.05)
            assert await b.get_many(list(expected)) == expected
    stored = _stored(pg_table)
    assert {k: stored.get(k) for k in expected} == expected
