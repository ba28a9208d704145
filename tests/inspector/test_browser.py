"""The page in real headless Chromium: it shows the actor tree with live values that change.

Real clock (a real browser cannot follow trio's mock clock); every wait is a poll with a
``fail_after`` cap, and nothing asserts on how long anything took.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import attrs
import trio

from writebehind import (
    Cache,
    ClusterStatistics,
    Config,
    PartitionLeaseStatistics,
    Seams,
    serve_inspector,
)
from writebehind._journal import SimulatedFileSystem
from writebehind.harness import MemoryStore

from ._devtools import Page, open_page
from .conftest import memory_cache

PNG = b"\x89PNG\r\n\x1a\n"
SHARD_VALUES = """(() => [...document.querySelectorAll('[data-kind="shard"]')].map(n => ({
    name: n.dataset.actor,
    acked: Number(n.querySelector('[data-field="acked_seq"]').textContent),
    dirty: n.querySelector('[data-field="dirty"]').textContent,
})))()"""


SHARD_CHART = "document.querySelector('svg[data-chart=\"shard-0\"]').outerHTML"


def rect_of(selector: str) -> str:
    return f"""(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();
        return {{x: r.x, y: r.y, width: r.width, height: r.height}}; }})()"""


async def poll(page: Page, expression: str, timeout: float = 30) -> Any:
    """Evaluate ``expression`` until it is truthy; return its value. Fails after ``timeout``
    seconds, naming the expression that never held."""
    with trio.move_on_after(timeout):
        while True:
            value = await page.evaluate(expression)
            if value:
                return value
            await trio.sleep(0.05)
    raise AssertionError(f"not true after {timeout} s: {expression}")


async def test_the_page_shows_live_values_that_change(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with memory_cache(tmp_path, shards=2) as cache, trio.open_nursery() as nursery:
            server = await nursery.start(serve_inspector, cache, "127.0.0.1", 0)
            async with open_page(server.page_url, tmp_path / "profile") as page:
                await poll(page, "document.getElementById('conn')?.textContent === 'live'")
                await poll(page, "document.querySelectorAll('[data-kind=\"shard\"]').length === 2")
                names = await page.evaluate(
                    "[...document.querySelectorAll('[data-actor]')].map(n => n.dataset.actor)")
                assert names == ["supervisor", "shard-0", "shard-1", "store-0"]
                before = await page.evaluate(SHARD_VALUES)
                shard_clip = await page.evaluate(rect_of('[data-actor="shard-0"]'))
                title_clip = await page.evaluate(rect_of("header h1"))
                chart_before = await page.evaluate(SHARD_CHART)
                shot_before = await page.screenshot()
                shard_before = await page.screenshot(shard_clip)
                title_before = await page.screenshot(title_clip)

                for i in range(300):
                    await cache.put(f"key-{i}", b"value %d" % i)
                cache.record_event("fault", "shard-0", "injected by the browser test")
                expected = [s.acked_seq for s in cache.statistics().shards]
                assert sum(expected) >= sum(v["acked"] for v in before) + 300
                # The page catches up to exactly what the cache reports.
                await poll(page, f"JSON.stringify({SHARD_VALUES}.map(v => v.acked)) === "
                                 f"{json.dumps(expected, separators=(',', ':'))!r}")
                feed = await poll(page, "document.querySelector('#events li[data-kind=\"fault\"]')"
                                        "?.textContent")
                assert "injected by the browser test" in feed
                await trio.sleep(0.5)  # two more updates, so each chart has a line to draw
                chart_after = await page.evaluate(SHARD_CHART)
                shot_after = await page.screenshot()
                shard_after = await page.screenshot(shard_clip)
                title_after = await page.screenshot(title_clip)
                assert page.exceptions == []

            (tmp_path / "before.png").write_bytes(shot_before)
            (tmp_path / "after.png").write_bytes(shot_after)
            for shot in (shot_before, shot_after, shard_before, shard_after):
                assert shot.startswith(PNG) and len(shot) > 1000
            # The pixels of shard-0's box changed (its numbers and chart moved) while the
            # static title did not: what changed on screen is the live values.
            assert shard_before != shard_after
            assert title_before == title_after
            assert chart_before != chart_after
            nursery.cancel_scope.cancel()


#: Per chart: its series, whether each has a line, and its time axis (tick times and labels).
CHARTS = """(() => Object.fromEntries([...document.querySelectorAll('svg[data-chart]')].map(c => [
    c.dataset.chart, {
        window: Number(c.dataset.window),
        lines: Object.fromEntries([...c.querySelectorAll('path[data-series]')].map(
            p => [p.dataset.series, (p.getAttribute('d').match(/[ML]/g) || []).length])),
        ticks: [...c.querySelectorAll('[data-axis="x"] text')].map(
            t => ({t: Number(t.dataset.t), label: t.textContent, x: Number(t.getAttribute('x'))})),
        width: c.viewBox.baseVal.width,
    }])))()"""
RATES = """(() => Object.fromEntries(['r-puts', 'r-rows', 'r-batches', 'r-ack', 'r-flush',
    'c-store', 'c-store_table', 'c-uptime'].map(
        id => [id, document.getElementById(id).textContent])))()"""


async def test_the_page_charts_rates_and_lag_on_a_five_minute_time_axis(tmp_path: Path) -> None:
    store = "postgresql://app:hunter2@db.internal/app"
    with trio.fail_after(90):
        async with memory_cache(tmp_path, shards=2, store=store, store_table="sessions") as cache, \
                trio.open_nursery() as nursery:
            server = await nursery.start(serve_inspector, cache, "127.0.0.1", 0)
            async with open_page(server.page_url, tmp_path / "profile") as page:
                await poll(page, "document.getElementById('conn')?.textContent === 'live'")
                for i in range(500):
                    await cache.put(f"key-{i}", b"value %d" % i)
                await cache.flush()
                cache.record_event("fault", "shard-1", "a fault with a time")
                # Rates reach the header: numbers above zero, and latencies in time units.
                shown = await poll(page, f"""(() => {{ const r = {RATES};
                    return Number.parseFloat(r['r-puts']) > 0
                        && Number.parseFloat(r['r-rows']) > 0 && r; }})()""")
                assert shown_number(shown["r-batches"]) > 0
                assert shown["r-ack"].endswith(" s") or shown["r-ack"].endswith(" ms")
                assert shown["c-store"] == "postgresql://app:***@db.internal/app"
                assert shown["c-store_table"] == "sessions"
                assert shown["c-uptime"].endswith("s")
                body = await page.evaluate("document.body.innerText")
                assert "hunter2" not in body
                # Each chart draws lines once it has two points (a second apart at least).
                charts = await poll(page, f"""(() => {{ const c = {CHARTS};
                    return c.throughput && c.throughput.lines.puts_per_second >= 2
                        && c.latency.lines.ack_p99 >= 2 && c['shard-0']
                        && c['shard-0'].lines.lag >= 2 && c; }})()""")
                assert set(charts) == {"throughput", "latency", "shard-0", "shard-1"}
                assert set(charts["throughput"]["lines"]) == {
                    "puts_per_second", "rows_per_second", "batches_per_second"}
                # The shard chart has the lag and the dirty count, no sequence numbers.
                assert set(charts["shard-0"]["lines"]) == {"lag", "dirty"}
                now = await page.evaluate("Date.now() / 1000")
                for name, chart in charts.items():
                    assert chart["window"] == 300, name
                    ticks = chart["ticks"]
                    # A tick per whole minute of the last five, labelled HH:MM, left to right.
                    assert len(ticks) == 5, (name, ticks)
                    times = [tick["t"] for tick in ticks]
                    assert all(t % 60 == 0 for t in times)
                    assert [b - a for a, b in itertools.pairwise(times)] == [60] * 4
                    assert now - 360 < times[0] and times[-1] <= now + 60
                    assert all(re.fullmatch(r"\d\d:\d\d", tick["label"]) for tick in ticks)
                    assert len({tick["label"] for tick in ticks}) == 5
                    xs = [tick["x"] for tick in ticks]
                    assert xs == sorted(xs) and 0 < xs[0] and xs[-1] < chart["width"]
                # Events carry their wall-clock time.
                stamp = await poll(page, "document.querySelector("
                                         "'#events li[data-kind=\"fault\"] time')?.textContent")
                assert re.fullmatch(r"\d\d:\d\d:\d\d ", stamp)
                assert page.exceptions == []
                (tmp_path / "history.png").write_bytes(await page.screenshot())
            nursery.cancel_scope.cancel()


def shown_number(text: str) -> float:
    """A number as the page shows it ("1.5k" is 1500)."""
    scale = {"k": 1e3, "M": 1e6}.get(text[-1:], 1)
    return float(text.rstrip("kM")) * scale


LEASES = """(() => [...document.querySelectorAll('#leases tbody tr')].map(
    r => [...r.children].map(td => td.textContent)))()"""


async def test_a_cluster_member_shows_its_partitions_leases_and_counters(
    tmp_path: Path,
) -> None:
    """The cluster panel follows the member's snapshot (a stand-in for a live member: the
    three-node tests check the snapshot itself); a single process never shows it."""
    view = [ClusterStatistics(
        cluster="orders", member="host-a:12:ab", live=("host-a:12:ab", "host-b:7:cd"),
        partitions=4, hosted=(0,), starting=(2,), acquisitions=2, takeovers=1, renewals=7,
        losses=0,
        leases=(PartitionLeaseStatistics(partition=0, epoch=5, expires_in=8.5,
                                         acknowledge_for=6.5),),
    )]
    config = Config(journal_dir=tmp_path / "journal", ack="journal", shards=2)
    seams = Seams(store_factory=MemoryStore().factory, filesystem=SimulatedFileSystem(7))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            cache = Cache(config, seams, cluster_view=lambda: view[0])
            await nursery.start(cache._serve)
            server = await nursery.start(serve_inspector, cache, "127.0.0.1", 0)
            async with open_page(server.page_url, tmp_path / "profile") as page:
                await poll(page, "document.getElementById('conn')?.textContent === 'live'")
                await poll(page, "!document.getElementById('cluster').hidden")
                assert await page.evaluate(LEASES) == [["0", "5", "8.5 s", "6.5 s"]]
                shown = await page.evaluate(
                    "['k-cluster', 'k-member', 'k-live', 'k-partitions', 'k-starting', "
                    "'k-takeovers'].map(id => document.getElementById(id).textContent)")
                assert shown == ["orders", "host-a:12:ab", "2", "1 / 4", "2", "1"]
                # A take-over of partition 2 arrives with the next state.
                view[0] = attrs.evolve(view[0], takeovers=2, hosted=(0, 2), starting=(), leases=(
                    *view[0].leases, PartitionLeaseStatistics(
                        partition=2, epoch=3, expires_in=9.0, acknowledge_for=0.5)))
                await poll(page, f"JSON.stringify({LEASES}) === "
                                 "'[[\"0\",\"5\",\"8.5 s\",\"6.5 s\"],"
                                 "[\"2\",\"3\",\"9.0 s\",\"0.5 s\"]]'")
                # Less than a second left to acknowledge is shown as trouble.
                assert await page.evaluate(
                    "document.querySelector('#leases tr[data-partition=\"2\"] td:last-child')"
                    ".className") == "short"
                assert await page.evaluate(
                    "['k-partitions', 'k-starting', 'k-takeovers']"
                    ".map(id => document.getElementById(id).textContent)"
                ) == ["2 / 4", "none", "2"]
                assert page.exceptions == []
            nursery.cancel_scope.cancel()


async def test_a_single_process_page_has_no_cluster_panel(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with memory_cache(tmp_path, shards=2) as cache, trio.open_nursery() as nursery:
            server = await nursery.start(serve_inspector, cache, "127.0.0.1", 0)
            async with open_page(server.page_url, tmp_path / "profile") as page:
                await poll(page, "document.querySelectorAll('[data-kind=\"shard\"]').length === 2")
                assert await page.evaluate("document.getElementById('cluster').hidden") is True
                assert page.exceptions == []
            nursery.cancel_scope.cancel()
