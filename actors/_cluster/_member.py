"""One cluster member's side of the seams: what a :class:`~writebehind._runtime._cache.Cache`
needs to run its shards as the cluster's partitions (partition = shard id).

    async with connect(servers) as conn, open_member(conn, "orders", "host-a") as member:
        cache = Cache(config, seams, open_journal=member.open_journal, epochs=member.epochs)

``writebehind.open_cache(Config(cluster=...))`` builds one (``_cluster/_cache.py``). There is
no membership yet (this member takes every partition its shards cover, waiting out other
holders' leases) and no routing; see ``specs/cluster.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from .._core._partition_lease import DRIFT_MARGIN, LEASE_TTL, RENEW_EVERY
from .._core._partitions import assign, owned_by
from .._core._stats import ClusterStatistics
from .._journal._backend import OpenJournal
from ._bridge import NatsConnection
from ._epochs import LeaseEpochs
from ._journal import open_stream
from ._lease import PartitionLeases
from ._replicated import replicated_journals
from ._status import lease_bucket


@attrs.frozen
class Member:
    """A member's connection, its partition leases (the ``EpochSource``) and its journal
    factory (the ``OpenJournal``)."""

    conn: NatsConnection
    epochs: LeaseEpochs
    open_journal: OpenJournal
    cluster: str = ""
    partitions: int | None = None  # the cluster's number, when the member was told it

    @property
    def name(self) -> str:
        return self.epochs.leases.member

    def statistics(self) -> ClusterStatistics:
        """This member's view, for ``Cache.statistics().cluster``. There is no membership
        yet: the live members it knows of are itself, and the assignment over them gives it
        every partition."""
        leases = self.epochs.lease_statistics()
        count = self.partitions if self.partitions is not None else len(leases)
        members = (self.name,)
        return ClusterStatistics(
            cluster=self.cluster, member=self.name, members=members, partitions=count,
            assigned=tuple(sorted(owned_by(assign(count, members), self.name))),
            leases=leases, acquisitions=self.epochs.acquired,
            take_overs=self.epochs.take_overs, renewals=self.epochs.renewals,
            losses=self.epochs.lost,
        )


@asynccontextmanager
async def open_member(
    conn: NatsConnection, cluster: str, member: str, *, replicas: int = 3,
    ttl: float = LEASE_TTL, renew_every: float = RENEW_EVERY, drift: float = DRIFT_MARGIN,
    publish_timeout: float = 5.0, partitions: int | None = None,
) -> AsyncIterator[Member]:
    """The cluster's journal stream and lease bucket (created if missing), and the renew
    loop for as long as the block runs. On a normal exit every lease is released (close the
    cache first: it drains); when the block is cancelled (a crash) they are left to expire.
    With ``partitions``, the bucket must record that number of partitions (the first member
    records it); a member with another number is refused (``ConfigError``)."""
    await open_stream(conn, cluster, replicas=replicas)
    leases = await PartitionLeases.open(conn, lease_bucket(cluster), member, replicas=replicas,
                                        ttl=ttl, renew_every=renew_every, drift=drift)
    if partitions is not None:
        await leases.fix_partitions(partitions)
    epochs = LeaseEpochs(leases)
    async with trio.open_nursery() as nursery:
        await nursery.start(epochs.run)
        yield Member(conn, epochs,
                     replicated_journals(conn, cluster, epochs, timeout=publish_timeout),
                     cluster=cluster, partitions=partitions)
        await epochs.release_all()
        nursery.cancel_scope.cancel()
