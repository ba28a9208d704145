"""Prometheus metrics: a collector that reads ``Cache.statistics()`` at scrape time, and
``GET /metrics`` (on the inspector's port, or on a port of its own with :func:`serve_metrics`).

Nothing here runs on the cache's hot path: the runtime keeps plain counters and two bucketed
latency recorders (``_stats``); a scrape takes one snapshot and turns it into metric families
with ``prometheus_client``. The runtime never imports this module's dependencies. The metrics
are listed in ``specs/metrics.md``.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._core._addresses import dial_netloc, is_loopback
from .._core._errors import ConfigError, describe
from .._core._stats import CacheStatistics, ClusterStatistics, LatencyStatistics
from ._http import ConnectionBound, connection_cap, parse_head, read_head, respond

if TYPE_CHECKING:
    from .._runtime._cache import Cache

log = logging.getLogger("writebehind.metrics")

METRICS_PATH = "/metrics"
#: The port :func:`serve_metrics` binds when given none (OpenTelemetry's Prometheus exporter's).
DEFAULT_METRICS_PORT = 9464
WATERMARKS = ("written", "synced", "persisted")


class CacheCollector:
    """A ``prometheus_client`` collector for one cache (``cache`` may be reassigned, or None:
    no samples). Register it in a registry of your own to add the cache's metrics to it:
    ``registry.register(CacheCollector(cache))``."""

    def __init__(self, cache: Cache | None) -> None:
        self.cache = cache

    def describe(self) -> list[Metric]:
        """The metric families without samples (the registry checks names with it)."""
        return families(None)

    def collect(self) -> Iterator[Metric]:
        cache = self.cache
        yield from families(None if cache is None else cache.statistics())


def families(stats: CacheStatistics | None) -> list[Metric]:
    """Every metric family, with samples from ``stats`` (none when it is None)."""
    shard = ["shard"]

    def counter(
        name: str, doc: str, labels: Iterable[str] = (), unit: str = ""
    ) -> CounterMetricFamily:
        return CounterMetricFamily(f"writebehind_{name}", doc, labels=list(labels), unit=unit)

    def gauge(
        name: str, doc: str, labels: Iterable[str] = (), unit: str = ""
    ) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"writebehind_{name}", doc, labels=list(labels), unit=unit)

    def histogram(name: str, doc: str, labels: Iterable[str] = ()) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            f"writebehind_{name}", doc, labels=list(labels), unit="seconds"
        )

    running = gauge("running", "1 while the cache accepts reads and writes, else 0.")
    acked = counter("acked_writes", "Puts and deletes acknowledged, by ack mode.", ["ack"])
    ack_latency = histogram(
        "ack_latency_seconds", "Call to acknowledgement of acknowledged puts and deletes.",
        ["ack"],
    )
    flush_batches = counter("flush_batches", "Flush batches the store committed.")
    flush_latency = histogram(
        "flush_latency_seconds", "A flush batch's send to the store actors until it committed."
    )
    flush_failures = counter(
        "flush_failures",
        "Flush batches the store did not commit; each one is retried after a backoff.", shard,
    )
    store_tx = counter(
        "store_transactions", "Batches a store actor committed, one transaction each.",
        ["actor"],
    )
    store_rows = counter("store_rows", "Records a store actor wrote.", ["actor"])
    store_errors = counter(
        "store_errors",
        "Failed store calls and connection attempts; each is retried on a fresh connection.",
        ["actor"],
    )
    refused = counter(
        "refused_records", "Records the store refused for good (each one is quarantined).",
        shard,
    )
    quarantined = gauge("quarantined_records", "Records held in quarantine now.", shard)
    entries = gauge("entries", "Keys held in the shard's map.", shard)
    dirty = gauge("dirty_entries", "Keys written and not yet sent to the store.", shard)
    unpersisted = gauge(
        "unpersisted_entries", "Keys not yet in the store (dirty or in flight).", shard
    )
    inflight = gauge("inflight_batches", "Batches sent to the store, not yet answered.", shard)
    oldest = gauge(
        "oldest_dirty_age_seconds", "Age of the oldest unpersisted write (0 when none).", shard,
        unit="seconds",
    )
    evictions = counter(
        "evictions", "Clean keys evicted (counted per incarnation: resets on restart).", shard
    )
    journal_bytes = gauge("journal_bytes", "Bytes in the shard's journal segments.", shard,
                          unit="bytes")
    journal_segments = gauge("journal_segments", "Segment files in the shard's journal.", shard)
    sequence = gauge(
        "journal_sequence", "A watermark's journal position: acked, written, synced, persisted.",
        ["shard", "watermark"],
    )
    lag = gauge(
        "watermark_lag_records",
        "Journal positions the acked watermark is ahead of the written, synced or persisted one.",
        ["shard", "watermark"],
    )
    restarts = counter("restarts", "Supervisor restarts of an actor.", ["actor"])
    actor_running = gauge("actor_running", "1 while an actor runs, else 0.", ["actor"])
    alerts = counter("alerts", "Alerts the cache raised (flush failures, quarantines, ...).")
    waits = counter(
        "backpressure_waits", "Writes that waited for the store to catch up (max_dirty, "
        "max_dirty_age).", shard,
    )
    overloaded = counter(
        "overloaded", "Writes refused with Overloaded (on_overload='raise').", shard
    )
    recovered = counter(
        "recovery_records", "Journal records replayed when the shard started or restarted.",
        shard,
    )
    recovery_seconds = counter(
        "recovery_seconds", "Time spent opening and replaying the shard's journal.", shard,
        unit="seconds",
    )
    mailbox = gauge("store_mailbox_depth", "Batches waiting for a store actor.")
    cluster = _cluster_families()
    result: list[Metric] = [
        running, acked, ack_latency, flush_batches, flush_latency, flush_failures, store_tx,
        store_rows, store_errors, refused, quarantined, entries, dirty, unpersisted, inflight,
        oldest, evictions, journal_bytes, journal_segments, sequence, lag, restarts,
        actor_running, alerts, waits, overloaded, recovered, recovery_seconds, mailbox,
        *cluster.values(),
    ]
    if stats is None:
        return result
    if stats.cluster is not None:
        _cluster_samples(cluster, stats.cluster)

    running.add_metric([], 1 if stats.status == "running" else 0)
    acked.add_metric([stats.ack], stats.ack_latency.count)
    ack_latency.add_metric([stats.ack], *_buckets(stats.ack_latency))
    flush_batches.add_metric([], stats.flush_latency.count)
    flush_latency.add_metric([], *_buckets(stats.flush_latency))
    alerts.add_metric([], stats.alerts)
    mailbox.add_metric([], stats.store_mailbox_depth)
    for s in stats.shards:
        label = [str(s.shard)]
        flush_failures.add_metric(label, s.flush_failures)
        refused.add_metric(label, s.refused)
        quarantined.add_metric(label, s.quarantined)
        entries.add_metric(label, s.entries)
        dirty.add_metric(label, s.dirty)
        unpersisted.add_metric(label, s.unpersisted)
        inflight.add_metric(label, s.inflight_batches)
        oldest.add_metric(label, s.oldest_dirty_age or 0.0)
        evictions.add_metric(label, s.evictions)
        journal_bytes.add_metric(label, s.journal_bytes)
        journal_segments.add_metric(label, s.journal_segments)
        marks = {"written": s.written_seq, "synced": s.synced_seq, "persisted": s.persisted_seq}
        sequence.add_metric([label[0], "acked"], s.acked_seq)
        for mark in WATERMARKS:
            sequence.add_metric([label[0], mark], marks[mark])
            lag.add_metric([label[0], mark], max(0, s.acked_seq - marks[mark]))
        restarts.add_metric([s.name], s.restarts)
        actor_running.add_metric([s.name], 1 if s.status == "running" else 0)
        waits.add_metric(label, s.backpressure_waits)
        overloaded.add_metric(label, s.overloaded)
        recovered.add_metric(label, s.recovered_records)
        recovery_seconds.add_metric(label, s.recovery_seconds)
    for st in stats.stores:
        store_tx.add_metric([st.name], st.batches)
        store_rows.add_metric([st.name], st.records)
        store_errors.add_metric([st.name], st.errors)
        restarts.add_metric([st.name], st.restarts)
        actor_running.add_metric([st.name], 1 if st.status == "running" else 0)
    return result


def cluster_family_names() -> frozenset[str]:
    """The families that have samples only on a cluster member (``Config.cluster``): a
    single process describes them and sends none, so Prometheus stores no series of them."""
    return frozenset(family.name for family in _cluster_families().values())


def _gauge(name: str, doc: str, labels: Iterable[str] = (), unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(f"writebehind_{name}", doc, labels=list(labels), unit=unit)


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"writebehind_{name}", doc, labels=list(labels))


def _cluster_families() -> dict[str, Any]:
    """The cluster member's metric families (samples only in cluster mode)."""
    partition = ["partition"]
    found = {
        "info": _gauge("cluster_member", "1, labelled with the cluster's name and this "
                       "member's name in its leases.", ["cluster", "member"]),
        "live": _gauge("cluster_live_members", "Live cluster members as this member last "
                       "read them, itself included."),
        "partitions": _gauge("cluster_partitions", "The cluster's number of partitions."),
        "hosted": _gauge("cluster_hosted_partitions", "Partitions served by this member now."),
        "starting": _gauge("cluster_starting_partitions", "Partitions assigned to this member "
                           "that wait for their lease or replay."),
        "owned": _gauge("cluster_owned_partitions",
                        "Partitions whose lease this member holds."),
        "epoch": _gauge("partition_epoch", "The epoch (fencing token) this member holds a "
                        "partition's lease with.", partition),
        "expiry": _gauge("partition_lease_expiry_seconds", "Seconds until a held partition "
                         "lease ends unless renewed.", partition, unit="seconds"),
        "acknowledge": _gauge("partition_acknowledge_seconds", "Seconds this member may still "
                              "acknowledge a partition's writes (the lease's expiry less the "
                              "clock-drift margin).", partition, unit="seconds"),
        "acquisitions": _counter("lease_acquisitions", "Partition leases this member acquired "
                                 "or retook, each with a new epoch."),
        "takeovers": _counter("lease_takeovers", "Acquisitions of a lease another member let "
                              "lapse without releasing it (it died or hung)."),
        "handovers": _counter("partition_handovers", "Partitions this member handed over to "
                              "another (a join, a graceful leave)."),
        "renewals": _counter("lease_renewals", "Partition lease renewals that succeeded."),
        "losses": _counter("lease_losses", "Renewals refused: another member took the "
                           "partition."),
        "served": _counter("routed_calls_served", "Calls other members routed here, answered."),
        "refused": _counter("routed_calls_refused", "Routed calls answered 'not serving here' "
                            "(the partition moved; the caller asks again)."),
        "expired": _counter("routed_calls_expired", "Routed calls dropped unanswered at their "
                            "caller's deadline (buffered at a paused owner, or still waiting "
                            "for room in the shard)."),
        "repeats": _counter("routed_calls_repeated", "Routed writes asked again after this "
                            "member applied them, answered with the first answer (another "
                            "member's refusal reached the caller first)."),
    }
    return found


def _cluster_samples(family: Mapping[str, Any], cluster: ClusterStatistics) -> None:
    family["info"].add_metric([cluster.cluster, cluster.member], 1)
    family["live"].add_metric([], len(cluster.live))
    family["partitions"].add_metric([], cluster.partitions)
    family["hosted"].add_metric([], len(cluster.hosted))
    family["starting"].add_metric([], len(cluster.starting))
    family["owned"].add_metric([], len(cluster.leases))
    for lease in cluster.leases:
        label = [str(lease.partition)]
        family["epoch"].add_metric(label, lease.epoch)
        family["expiry"].add_metric(label, max(0.0, lease.expires_in))
        family["acknowledge"].add_metric(label, max(0.0, lease.acknowledge_for))
    family["acquisitions"].add_metric([], cluster.acquisitions)
    family["takeovers"].add_metric([], cluster.takeovers)
    family["handovers"].add_metric([], cluster.handovers)
    family["renewals"].add_metric([], cluster.renewals)
    family["losses"].add_metric([], cluster.losses)
    family["served"].add_metric([], cluster.routed_served)
    family["refused"].add_metric([], cluster.routed_refused)
    family["expired"].add_metric([], cluster.routed_expired)
    family["repeats"].add_metric([], cluster.routed_repeats)


def _buckets(latency: LatencyStatistics) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` pairs ending at ``+Inf``, and the sum."""
    buckets = []
    total = 0
    for bound, count in zip((*latency.bounds, math.inf), latency.counts, strict=True):
        total += count
        buckets.append(("+Inf" if bound == math.inf else repr(bound), float(total)))
    return buckets, latency.sum


def cache_registry(collector: CacheCollector) -> CollectorRegistry:
    """A registry holding only ``collector``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


# -- HTTP -------------------------------------------------------------------------------------


def scrape_refusal(target: str, headers: Mapping[str, str], token: str | None) -> str | None:
    """Why a ``GET /metrics`` is refused (``"401 ..."``), or None. With a token set the
    request must carry it as ``Authorization: Bearer ...`` or ``?token=...``."""
    if not token:
        return None
    offered = parse_qs(urlsplit(target).query).get("token", [""])[-1]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        offered = auth[len("bearer "):].strip()
    if hmac.compare_digest(offered.encode(), token.encode()):
        return None
    return "this endpoint needs a token: Authorization: Bearer ... or ?token=..."


async def respond_metrics(
    stream: trio.abc.Stream,
    registry: CollectorRegistry,
    target: str,
    headers: Mapping[str, str],
    token: str | None,
) -> None:
    """Answer one ``GET /metrics``: the exposition format the scraper accepts, or 401."""
    refusal = scrape_refusal(target, headers, token)
    if refusal is not None:
        await respond(stream, "401 Unauthorized", refusal.encode() + b"\n")
        return
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    await respond(stream, "200 OK", encoder(registry), content_type=content_type)


class MetricsServer:
    """A running metrics endpoint; ``nursery.start(serve_metrics, ...)`` returns one.

    ``port`` is the real port (useful when bound to 0), ``url`` the scrape address;
    ``attach`` points it at another cache."""

    def __init__(
        self,
        cache: Cache | None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_METRICS_PORT,
        *,
        token: str | None = None,
        registry: CollectorRegistry | None = None,
        request_timeout: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        if not is_loopback(host) and not token:
            raise ConfigError(
                f"the metrics endpoint refuses to bind to {host or 'every interface'!r} "
                "without a token: anything but loopback (127.0.0.1, ::1, localhost) is "
                "reachable from other machines. Set a token (Config.metrics_token / "
                "serve_metrics(token=...)) or bind to 127.0.0.1."
            )
        self.host = "127.0.0.1" if host == "localhost" else host
        self._requested_port = port
        self._token = token
        self.collector = CacheCollector(cache)
        #: What a scrape exposes: by default a registry holding only this cache's collector.
        self.registry = registry if registry is not None else cache_registry(self.collector)
        self.request_timeout = request_timeout
        # Bounded before any request is read, and well under the open-file limit: scrapers
        # (or anyone) holding connections can never take the descriptors the journal needs.
        self.max_connections = connection_cap(max_connections)
        self._bound = ConnectionBound(self.max_connections)
        self._listeners: list[trio.SocketListener] = []

    @property
    def port(self) -> int:
        if not self._listeners:
            return self._requested_port
        port: int = self._listeners[0].socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{dial_netloc(self.host, self.port)}{METRICS_PATH}"

    @property
    def connections(self) -> int:
        """Open connections (at most ``max_connections``)."""
        return self._bound.open

    def attach(self, cache: Cache | None) -> None:
        """Expose ``cache`` from now on (None: no cache samples)."""
        self.collector.cache = cache

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report ``started(self)``, serve until cancelled. Failures after start are
        logged, never raised into the caller's nursery."""
        self._listeners = await trio.open_tcp_listeners(self._requested_port, host=self.host)
        started = False
        try:
            async with trio.open_nursery() as nursery:
                for listener in self._listeners:
                    nursery.start_soon(self._bound.serve, listener, self.handle_stream, nursery)
                started = True
                task_status.started(self)
                await trio.sleep_forever()
        except Exception:
            if not started:
                raise
            log.exception("the metrics endpoint failed and stopped; the cache is unaffected")
        finally:
            for listener in self._listeners:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(listener)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one HTTP request over any trio stream, then close it."""
        try:
            with trio.move_on_after(self.request_timeout):
                head = await read_head(stream)
                if head is None:
                    await respond(stream, "431 Request Header Fields Too Large", b"too big\n")
                    return
                method, target, headers = parse_head(head)
                if method != "GET":
                    await respond(stream, "405 Method Not Allowed", b"only GET is served\n")
                elif urlsplit(target).path != METRICS_PATH:
                    await respond(stream, "404 Not Found", b"the metrics are at /metrics\n")
                else:
                    await respond_metrics(stream, self.registry, target, headers, self._token)
        except Exception as exc:
            log.debug("metrics connection ended: %s", describe(exc))
        finally:
            await trio.aclose_forcefully(stream)


async def serve_metrics(
    cache: Cache | None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_METRICS_PORT,
    *,
    token: str | None = None,
    registry: CollectorRegistry | None = None,
    request_timeout: float = 10.0,
    max_connections: int = 16,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` for ``cache`` in the Prometheus formats: ``server = await
    nursery.start(serve_metrics, cache, "127.0.0.1", 0)``; ``server.url`` is the scrape
    address. Off loopback a ``token`` is required (sent as ``Authorization: Bearer``).
    ``registry`` replaces what is exposed (register a :class:`CacheCollector` in it).
    At most ``max_connections`` connections are held at once (never more than an eighth of
    the open-file limit), each for at most ``request_timeout`` seconds. Runs until cancelled."""
    server = MetricsServer(
        cache, host, port, token=token, registry=registry, request_timeout=request_timeout,
        max_connections=max_connections,
    )
    await server.run(task_status=task_status)
