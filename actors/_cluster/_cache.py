"""A cache in cluster mode: what ``writebehind.open_cache(Config(cluster=...))`` runs.

One NATS connection (on its own asyncio loop thread), one member (the journal stream, the
lease bucket and the renew loop) and a :class:`~writebehind._runtime._cache.Cache` whose
shards are the cluster's partitions: their journals are the partitions' subjects, their
epochs the partitions' leases. The store table's one-instance lease is not taken: the
partition leases decide who writes which keys.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import nats.errors
import trio

from .._core._config import Config, cluster_servers
from .._core._errors import ClusterUnavailable
from .._runtime._cache import Attachment, Cache, open_served
from .._runtime._seams import Seams
from ._bridge import connect
from ._hosting import Hosting
from ._member import open_member
from ._membership import Membership
from ._routing import PartitionServer, RemotePartition

#: Partition-lease timings as fractions of ``Config.lease_ttl``: renewed every fifth of it
#: (so one failed renewal still leaves time for the next), and the holder stops
#: acknowledging a fifth of it before it ends (the clock-drift margin). Membership keys
#: use the same timings.
RENEW_FRACTION = 0.2
DRIFT_FRACTION = 0.2
#: What a routed call allows beyond the longest a partition can stay without an owner
#: (a dead member's lease and membership lapsing, the next owner noticing, fencing and
#: replaying).
ROUTE_MARGIN = 5.0


def route_deadline(config: Config) -> float:
    """How long a routed call keeps asking while no member serves its partition."""
    ttl = config.lease_ttl
    return ttl * (1 + DRIFT_FRACTION + RENEW_FRACTION) + ROUTE_MARGIN


def member_name() -> str:
    """This instance's name in the leases: host and pid (for people), and a random part, so
    a restarted process never passes for the one before it."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def serve_cluster_cache(
    config: Config, *, seams: Seams | None = None, attachments: Sequence[Attachment] = (),
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """``serve_cache`` for a ``Config`` with ``cluster``: connect, open the member, run the
    cache on its seams. A normal stop drains the cache, then releases the leases; a
    cancelled one (a crash) leaves them to expire."""
    assert config.cluster is not None
    servers = cluster_servers(config.cluster)
    ttl = config.lease_ttl
    async with AsyncExitStack() as stack:
        try:
            conn = await stack.enter_async_context(
                connect(servers, name=f"writebehind {config.cluster_name}")
            )
        except (nats.errors.Error, OSError) as exc:
            raise ClusterUnavailable(
                f"cannot reach the NATS servers of Config.cluster ({', '.join(servers)}): "
                f"{exc!r}"
            ) from exc
        name = member_name()
        renew_every, drift = ttl * RENEW_FRACTION, ttl * DRIFT_FRACTION
        wall = (seams.wall_clock if seams is not None else None) or time.time
        member = await stack.enter_async_context(open_member(
            conn, config.cluster_name, name, replicas=config.replicas, ttl=ttl,
            renew_every=renew_every, drift=drift, partitions=config.shards, wall=wall,
        ))
        membership = await Membership.open(
            conn, config.cluster_name, name, replicas=config.replicas, ttl=ttl,
            renew_every=renew_every, drift=drift, wall=wall,
        )
        deadline = route_deadline(config)
        hosting = member.hosting = Hosting(
            membership, member.epochs,
            PartitionServer(conn, config.cluster_name, name, epochs=member.epochs,
                            drift=drift, remember=2 * deadline + drift),
            partitions=config.shards,
        )
        rng = random.Random(config.seed)
        # Write calls are named by member and count: unique in the cluster, since a
        # member's name is new with every process.
        calls = itertools.count(1)

        def call_name() -> bytes:
            return f"{name}/{next(calls)}".encode()

        def elsewhere(partition: int) -> RemotePartition:
            return RemotePartition(conn, config.cluster_name, partition, deadline=deadline,
                                   rng=random.Random(rng.getrandbits(64)),
                                   call_name=call_name)

        cache = Cache(config, seams or Seams(), (hosting.attach, *attachments),
                      open_journal=member.open_journal, epochs=member.epochs,
                      store_lease=False, elsewhere=elsewhere, on_stop=hosting.leave,
                      cluster_view=member.view)
        await cache._serve(task_status)


@asynccontextmanager
async def open_cluster_cache(
    config: Config, *, seams: Seams | None = None, attachments: Sequence[Attachment] = (),
) -> AsyncIterator[Cache]:
    """``open_cache`` for a ``Config`` with ``cluster``: drains on the way out, then
    releases the partitions."""
    async with open_served(
        partial(serve_cluster_cache, config, seams=seams, attachments=attachments)
    ) as cache:
        yield cache
