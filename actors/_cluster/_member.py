"""One cluster member's side of the seams: what a :class:`~writebehind._runtime._cache.Cache`
needs to run its shards as the cluster's partitions (partition = shard id).

    async with connect(servers) as conn, open_member(conn, "orders", "host-a") as member:
        cache = Cache(config, seams, open_journal=member.open_journal, epochs=member.epochs)

``writebehind.open_cache(Config(cluster=...))`` builds one (``_cluster/_cache.py``) and adds
its :class:`~writebehind._cluster._hosting.Hosting` (membership, the partitions it hosts,
routing); :meth:`Member.view` is the snapshot statistics show. See ``specs/cluster.md``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from .._core._partition_lease import DRIFT_MARGIN, LEASE_TTL, RENEW_EVERY
from .._core._stats import ClusterStatistics
from .._journal._backend import OpenJournal
from ._bridge import NatsConnection
from ._epochs import LeaseEpochs
from ._hosting import Hosting
from ._journal import open_stream
from ._lease import PartitionLeases
from ._replicated import replicated_journals
from ._status import lease_bucket


@attrs.define
class Member:
    """A member's connection, its partition leases (the ``EpochSource``) and its journal
    factory (the ``OpenJournal``); ``hosting`` once a cache runs on it."""

    conn: NatsConnection
    epochs: LeaseEpochs
    open_journal: OpenJournal
    hosting: Hosting | None = None
    cluster: str = ""
    partitions: int | None = None  # the cluster's number, when the member was told it

    @property
    def name(self) -> str:
        return self.epochs.leases.member

    def view(self) -> ClusterStatistics:
        """A frozen snapshot for ``Cache.statistics().cluster`` (the cache's ``cluster_view``):
        live members, the partitions hosted here and starting, the leases held with their
        epochs and remaining time, and the counters. Before a :class:`Hosting` runs on this
        member (a cache given its seams directly hosts every shard itself) the live members
        are itself and the hosted partitions those it holds a lease on."""
        leases = self.epochs.lease_statistics()
        epochs = self.epochs
        stats = ClusterStatistics(
            cluster=self.cluster, member=self.name, live=(self.name,), leases=leases,
            partitions=self.partitions if self.partitions is not None else len(leases),
            hosted=tuple(lease.partition for lease in leases),
            acquisitions=epochs.acquired, takeovers=epochs.leases.takeovers,
            renewals=epochs.renewals, losses=epochs.lost,
        )
        if self.hosting is None:
            return stats
        view = self.hosting.view()
        return attrs.evolve(
            stats, live=view.live, hosted=view.hosted, starting=view.starting,
            handovers=view.handovers, routed_served=view.routed_served,
            routed_refused=view.routed_refused, routed_expired=view.routed_expired,
            routed_repeats=view.routed_repeats,
        )


@asynccontextmanager
async def open_member(
    conn: NatsConnection, cluster: str, member: str, *, replicas: int = 3,
    ttl: float = LEASE_TTL, renew_every: float = RENEW_EVERY, drift: float = DRIFT_MARGIN,
    publish_timeout: float = 5.0, partitions: int | None = None,
    wall: Callable[[], float] = time.time,
) -> AsyncIterator[Member]:
    """The cluster's journal stream and lease bucket (created if missing), and the renew
    loop for as long as the block runs. On a normal exit every lease is released (close the
    cache first: it drains); when the block is cancelled (a crash) they are left to expire.
    With ``partitions``, the bucket must record that number of partitions (the first member
    records it); a member with another number is refused (``ConfigError``). ``wall`` is the
    clock lease expiries are written and judged by (a test's or the harness's skewed one)."""
    await open_stream(conn, cluster, replicas=replicas)
    leases = await PartitionLeases.open(conn, lease_bucket(cluster), member, replicas=replicas,
                                        ttl=ttl, renew_every=renew_every, drift=drift,
                                        wall=wall)
    if partitions is not None:
        await leases.fix_partitions(partitions)
    epochs = LeaseEpochs(leases, wall=wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(epochs.run)
        yield Member(conn, epochs,
                     replicated_journals(conn, cluster, epochs, timeout=publish_timeout),
                     cluster=cluster, partitions=partitions)
        await epochs.release_all()
        nursery.cancel_scope.cancel()
