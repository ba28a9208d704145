"""What ``writebehind cluster status`` reports: servers, JetStream meta leader, the cluster's
journal stream and lease bucket, and each server's fsync policy.

The fsync policy is not visible to a client: the NATS protocol's INFO and JetStream's account
API do not carry it. Each server reports it on its HTTP monitoring port, in ``/varz`` under
``jetstream.config``: ``sync_always: true`` when it runs with ``sync_interval: always``, and
otherwise only ``sync_interval`` (nanoseconds; two minutes by default). A server older than
2.10 reports neither (it has no such setting, and syncs lazily). The meta leader comes from
``/jsz`` (``meta_cluster.leader``). So the status needs each server's monitoring URL; by
default ``http://<host>:8222``, the port ``nats-server -m 8222`` or ``http: 8222`` sets.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import attrs
import nats.errors
import nats.js.errors
import trio

from ._bridge import AsyncioLoop, connect, open_asyncio_loop
from ._journal import stream_name

DEFAULT_MONITOR_PORT = 8222


def lease_bucket(cluster: str) -> str:
    return f"wb-{cluster}-leases"


def default_monitor(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or "127.0.0.1"
    return f"http://{host}:{DEFAULT_MONITOR_PORT}"


@attrs.frozen
class ServerStatus:
    url: str
    reachable: bool
    version: str | None = None
    error: str | None = None
    monitor: str | None = None
    name: str | None = None
    #: True: ``sync_interval: always``; False: lazy; None: not reported (monitor unreachable)
    sync_always: bool | None = None
    sync_interval_s: float | None = None
    monitor_error: str | None = None
    meta_leader: str | None = None


@attrs.frozen
class ClusterStatus:
    servers: tuple[ServerStatus, ...]
    meta_leader: str | None
    stream: dict[str, Any] | None
    bucket: dict[str, Any] | None
    cluster: str

    @property
    def ok(self) -> bool:
        return all(s.reachable for s in self.servers) and self.meta_leader is not None

    def warnings(self) -> list[str]:
        found = []
        for s in self.servers:
            if s.sync_always:
                continue
            if s.sync_always is None and s.monitor_error is not None:
                found.append(f"cannot tell whether {s.url} fsyncs each write: its monitoring "
                             f"endpoint {s.monitor} is unreachable ({s.monitor_error})")
            else:
                interval = (f"every {s.sync_interval_s:g} s" if s.sync_interval_s
                            else "lazily (this server has no sync_interval setting)")
                found.append(
                    f"{s.name or s.url} runs JetStream with lazy fsync ({interval}): a "
                    "write it acknowledged can be lost when the replicas lose power together "
                    "(Jepsen's 2025 NATS analysis); set `jetstream { sync_interval: always }`"
                )
        for s in self.servers:
            if not s.reachable:
                found.append(f"{s.url} is unreachable: {s.error}")
        if self.meta_leader is None:
            if all(s.monitor_error is not None for s in self.servers):
                found.append("no JetStream meta leader is known: no monitoring endpoint "
                             "answered (--monitor)")
            else:
                found.append("no JetStream meta leader is known (a cluster without one "
                             "takes no writes; a single server without a cluster has none)")
        return found

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "ok": self.ok, "meta_leader": self.meta_leader,
                "servers": [attrs.asdict(s) for s in self.servers], "stream": self.stream,
                "bucket": self.bucket, "warnings": self.warnings()}


def _fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        document: dict[str, Any] = json.load(response)
        return document


async def _server(bridge: AsyncioLoop, url: str, monitor: str | None, timeout: float
                  ) -> ServerStatus:
    version = error = None
    try:
        with trio.fail_after(timeout + 1):
            async with connect([url], allow_reconnect=False, connect_timeout=timeout,
                               bridge=bridge) as conn:
                v = conn.client.connected_server_version
                version = f"{v.major}.{v.minor}.{v.patch}"
    except (OSError, trio.TooSlowError, nats.errors.Error) as exc:
        error = f"{type(exc).__name__}: {exc}"
    status = ServerStatus(url, error is None, version, error, monitor)
    if monitor is None:
        return status
    try:
        varz = await trio.to_thread.run_sync(_fetch, f"{monitor}/varz")
        jsz = await trio.to_thread.run_sync(_fetch, f"{monitor}/jsz")
    except (OSError, ValueError) as exc:
        return attrs.evolve(status, monitor_error=f"{type(exc).__name__}: {exc}")
    config = (varz.get("jetstream") or {}).get("config") or {}
    interval = config.get("sync_interval")
    leader = (jsz.get("meta_cluster") or {}).get("leader")
    return attrs.evolve(
        status, name=varz.get("server_name"), version=status.version or varz.get("version"),
        sync_always=bool(config.get("sync_always", False)),
        sync_interval_s=interval / 1e9 if isinstance(interval, int | float) else None,
        meta_leader=leader or None,
    )


async def _assets(bridge: AsyncioLoop, servers: Sequence[str], cluster: str, timeout: float
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    stream = bucket = None
    try:
        with trio.fail_after(3 * timeout):
            async with connect(list(servers), allow_reconnect=False,
                               connect_timeout=timeout, bridge=bridge) as conn:
                for name, kind in ((stream_name(cluster), "stream"),
                                   (f"KV_{lease_bucket(cluster)}", "bucket")):
                    try:
                        info = await conn.run(conn.js.stream_info, name)
                    except nats.js.errors.NotFoundError:
                        continue
                    found = {
                        "name": name, "replicas": info.config.num_replicas,
                        "messages": info.state.messages, "bytes": info.state.bytes,
                        "leader": info.cluster.leader if info.cluster else None,
                    }
                    if kind == "stream":
                        stream = found
                    else:
                        bucket = found
    except (OSError, trio.TooSlowError, nats.errors.Error):
        pass  # the per-server lines say why
    return stream, bucket


async def cluster_status(servers: Sequence[str], *, monitors: Sequence[str | None] | None = None,
                         cluster: str = "writebehind", timeout: float = 2.0) -> ClusterStatus:
    """Ask every server (and its monitoring endpoint) how it is; ``monitors`` pairs with
    ``servers`` (None: the default port on the server's host)."""
    monitor_urls = list(monitors) if monitors is not None else [default_monitor(s)
                                                                for s in servers]
    results: list[ServerStatus | None] = [None] * len(servers)

    async with open_asyncio_loop() as bridge:  # one loop thread for every connection

        async def one(i: int) -> None:
            results[i] = await _server(bridge, servers[i], monitor_urls[i], timeout)

        async with trio.open_nursery() as nursery:
            for i in range(len(servers)):
                nursery.start_soon(one, i)
        stream, bucket = await _assets(bridge, servers, cluster, timeout)
    statuses = tuple(r for r in results if r is not None)
    leaders = {s.meta_leader for s in statuses if s.meta_leader}
    return ClusterStatus(statuses, leaders.pop() if len(leaders) == 1 else None, stream,
                         bucket, cluster)
