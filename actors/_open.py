"""The way in: a cache with what its ``Config`` asks to run beside it.

The top of the tree: it joins the runtime (``_runtime``), the cluster mode (``_cluster``,
imported only when ``Config.cluster`` is set) and the servers that watch it (``_inspector``),
which the runtime itself never imports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._core._config import Config
from ._inspector._attach import ATTACHMENTS
from ._runtime import _cache
from ._runtime._cache import Cache
from ._runtime._seams import Seams


async def serve_cache(
    config: Config | None = None,
    *,
    seams: Seams | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a cache in the caller's nursery: ``cache = await nursery.start(serve_cache, config)``.

    Journals replay before ``start`` returns. Stop it with ``await cache.aclose()`` (drains)
    or by cancelling the nursery (no drain: what is unflushed stays journaled).
    With ``Config.cluster`` (preview), the cache runs on the NATS cluster (see
    ``open_cache``).
    """
    if config is not None and config.cluster is not None:
        # Imported here: a single-process cache never loads nats-py.
        from ._cluster._cache import serve_cluster_cache

        await serve_cluster_cache(config, seams=seams, attachments=ATTACHMENTS,
                                  task_status=task_status)
        return
    await _cache.serve_cache(config, seams=seams, attachments=ATTACHMENTS, task_status=task_status)


@asynccontextmanager
async def open_cache(
    config: Config | None = None, *, seams: Seams | None = None
) -> AsyncIterator[Cache]:
    """Run a cache for the ``async with`` block; drains on the way out.

    With ``Config.cluster`` (preview: ``specs/cluster.md``), it connects to the NATS
    servers and runs every shard as a partition of the cluster: journaled on a replicated
    JetStream subject, owned through a lease. This instance owns every partition; a second
    live instance on the same store table is refused (:class:`LeaseHeld`), and one started
    after this one died takes its partitions over once their leases expired
    (``Config.lease_ttl``), replaying every acknowledged write.
    """
    if config is not None and config.cluster is not None:
        from ._cluster._cache import open_cluster_cache

        async with open_cluster_cache(config, seams=seams, attachments=ATTACHMENTS) as cache:
            yield cache
        return
    async with _cache.open_cache(config, seams=seams, attachments=ATTACHMENTS) as cache:
        yield cache
