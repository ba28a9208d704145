"""A real Prometheus server scrapes a running cache, and its HTTP API answers for the series.

Debian's ``prometheus`` package (``.ci/run`` installs it when missing). Outside CI the test is
skipped, with the reason, when the binary is not installed; in CI (``CI=true``) it fails instead.
Everything is on loopback; the server and every wait are capped, so nothing can hang.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import CacheCollector, Config, open_cache
from writebehind._inspector._metrics import cluster_family_names

from .test_dashboard import dashboard_queries

PROMETHEUS = shutil.which("prometheus")
TOKEN = "scrape-t0k"


@pytest.fixture
def prometheus_binary() -> str:
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed; CI must install it (apt-get install "
                        "prometheus) and never skip this test")
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    return PROMETHEUS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fetch(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = answer.read()
            json_type = answer.headers.get_content_type() == "application/json"
    except urllib.error.HTTPError as exc:  # the API answers a bad query with 400 and JSON
        body, json_type = exc.read(), True
    return json.loads(body) if json_type else body.decode()


async def api(base: str, path: str, **params: str) -> Any:
    """One Prometheus HTTP API call (in a thread: urllib blocks); its ``data``."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    answer = await trio.to_thread.run_sync(fetch, url)
    assert answer["status"] == "success", answer
    return answer["data"]


async def query(base: str, promql: str) -> dict[str, float]:
    """An instant query: each series' value, keyed by its labels as ``k=v,k=v``."""
    data = await api(base, "/api/v1/query", query=promql)
    return {
        ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"):
        float(r["value"][1])
        for r in data["result"]
    }


def single(result: dict[str, float]) -> float:
    """The one value of an aggregate's answer (NaN while there is none)."""
    return next(iter(result.values())) if len(result) == 1 else math.nan


async def until(base: str, promql: str, check: Any, *, cap: float = 30) -> dict[str, float]:
    """Query until ``check(result)`` holds (scrapes are 0.2 s apart); after ``cap`` seconds
    fail with the last answer."""
    result: dict[str, float] = {}
    with trio.move_on_after(cap):
        while True:
            result = await query(base, promql)
            if check(result):
                return result
            await trio.sleep(0.2)
    raise AssertionError(f"{promql!r} did not reach the expected answer in {cap}s: {result}")


async def test_prometheus_scrapes_a_running_cache_and_answers_queries(
    tmp_path: Path, prometheus_binary: str
) -> None:
    shards, writes = 2, 300
    config = Config(
        store=f"sqlite:///{tmp_path / 'store.db'}", journal_dir=tmp_path / "journal",
        shards=shards, ack="fsync", metrics="127.0.0.1:0", metrics_token=TOKEN,
    )
    with trio.fail_after(120):
        async with open_cache(config) as cache, trio.open_nursery() as nursery:
            assert cache.metrics is not None
            web = free_port()
            base = f"http://127.0.0.1:{web}"
            (tmp_path / "prometheus.yml").write_text(
                "global:\n"
                "  scrape_interval: 200ms\n"
                "  scrape_timeout: 150ms\n"
                "scrape_configs:\n"
                "  - job_name: writebehind\n"
                "    metrics_path: /metrics\n"
                "    authorization:\n"
                f"      credentials: {TOKEN}\n"
                "    static_configs:\n"
                f"      - targets: ['127.0.0.1:{cache.metrics.port}']\n"
            )
            log = (tmp_path / "prometheus.log").open("wb")
            nursery.start_soon(partial(
                trio.run_process,
                [prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
                stdout=log, stderr=log, check=False,
            ))
            try:
                while True:  # ready when its web API answers
                    try:
                        await trio.to_thread.run_sync(fetch, f"{base}/-/ready")
                        break
                    except OSError:
                        await trio.sleep(0.2)
                for i in range(writes):
                    await cache.put(f"user:{i}", b"v" * 100)
                await cache.delete("user:0")
                await cache.flush()

                up = await until(base, 'up{job="writebehind"}', lambda r: r and all(r.values()))
                assert len(up) == 1
                acked = await until(
                    base, "writebehind_acked_writes_total",
                    lambda r: sum(r.values()) == writes + 1)
                assert list(acked) == [
                    f"ack=fsync,instance=127.0.0.1:{cache.metrics.port},job=writebehind"]
                rows = await until(base, "sum(writebehind_store_rows_total)",
                                   lambda r: single(r) >= writes)
                assert single(rows) <= writes + 1
                per_shard = await query(base, "writebehind_dirty_entries")
                assert sorted(k.split("shard=")[1] for k in per_shard) == ["0", "1"]
                lag = await query(
                    base, 'writebehind_watermark_lag_records{watermark="synced"}')
                assert len(lag) == shards and all(v == 0 for v in lag.values())
                count = await query(base, "sum(writebehind_ack_latency_seconds_count)")
                assert single(count) == writes + 1
                p99 = await query(base, "histogram_quantile(0.99, sum by (le) "
                                        "(writebehind_ack_latency_seconds_bucket))")
                assert 0 < single(p99) < math.inf
                flushed = await query(base, "sum(writebehind_flush_latency_seconds_count)")
                assert single(flushed) >= 1
                # Every family the collector describes is a series Prometheus stored, but
                # those with samples only on a cluster member (this cache is one process:
                # tests/metrics/test_metrics.py and tests/cluster check those).
                names = set(await api(base, "/api/v1/label/__name__/values"))
                cluster_only = cluster_family_names()
                assert not cluster_only & {n.removesuffix("_total") for n in names}
                for family in CacheCollector(None).describe():
                    if family.name in cluster_only:
                        continue
                    suffix = {"counter": "_total", "histogram": "_count"}.get(family.type, "")
                    assert family.name + suffix in names, family.name
                # Every panel of the Grafana dashboard is a query Prometheus accepts.
                for promql in dashboard_queries():
                    await api(base, "/api/v1/query", query=promql)
            finally:
                nursery.cancel_scope.cancel()
                log.close()
