"""The Grafana dashboard under specs/ reads only metrics the collector exposes, and
specs/metrics.md lists every one of them (a real Prometheus also evaluates every panel's query:
test_prometheus_server.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from writebehind import CacheCollector

SPECS = Path(__file__).parents[2] / "specs"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def dashboard_queries() -> list[str]:
    """Every panel's PromQL, with Grafana's variables given plain values."""
    dashboard: dict[str, Any] = json.loads((SPECS / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return [q.replace("$__rate_interval", "1m").replace("$instance", ".*") for q in queries]


def exposed_names() -> set[str]:
    names = set()
    for family in CacheCollector(None).describe():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_every_dashboard_query_reads_exposed_metrics() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    used = {name for q in queries for name in re.findall(r"writebehind_[a-z_]+", q)}
    assert used - exposed_names() == set()
    assert {"writebehind_ack_latency_seconds_bucket", "writebehind_acked_writes_total",
            "writebehind_watermark_lag_records"} <= used


def test_the_metrics_spec_lists_every_family() -> None:
    spec = (SPECS / "metrics.md").read_text()
    listed = set(re.findall(r"^\| `(writebehind_[a-z_]+)` \|", spec, re.MULTILINE))
    families = {f.name + ("_total" if f.type == "counter" else "")
                for f in CacheCollector(None).describe()}
    assert listed == families
