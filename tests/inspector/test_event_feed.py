"""The event feed tells the whole story: every alert is an event, and a client that connects
late (or an inspector started after the cache) still sees what happened before.

In-memory streams on trio's autojump clock (the page's test: real clock, headless Chromium),
every test under a ``fail_after`` cap.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio

from writebehind import serve_inspector
from writebehind._core._stats import KEPT_EVENTS

from ._devtools import open_page
from .conftest import connect, memory_cache, receive, receive_until, running_inspector
from .test_browser import poll


async def test_the_cache_keeps_its_recent_events_with_no_one_listening(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            cache.record_event("fault", "shard-0", "first")
            cache._alert("flush_failed", "shard-1", "shard-1: the store is down")
            kept = cache.recent_events()
            assert [(e.kind, e.detail, e.alert) for e in kept[-2:]] == [
                ("fault", "first", False),
                ("flush_failed", "shard-1: the store is down", True),
            ]
            for i in range(KEPT_EVENTS + 10):
                cache.record_event("fault", "shard-0", f"#{i}")
            kept = cache.recent_events()
            assert len(kept) == KEPT_EVENTS
            assert kept[-1].detail == f"#{KEPT_EVENTS + 9}"


async def test_alerts_raised_before_any_client_connected_are_in_the_snapshot(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                await trio.sleep(1)  # the sampler runs with no one connected
                for i in range(6):
                    cache._alert("flush_failed", "shard-1", f"shard-1: flush failed #{i}")
                await trio.sleep(1)
                snapshot = await receive(await connect(server, nursery))
                alerts = [e["detail"] for e in snapshot["events"] if e["kind"] == "alert"]
                assert alerts == [f"shard-1: flush failed #{i}" for i in range(6)]
                assert snapshot["cache"]["alerts"] == 6
                nursery.cancel_scope.cancel()


async def test_a_burst_of_alerts_is_one_alert_event_each_for_a_connected_client(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                await receive_until(ws, "snapshot")
                for i in range(6):  # well within one update_interval
                    cache._alert("flush_failed", "shard-0", f"shard-0: flush failed #{i}")
                kinds = [(await receive_until(ws, "event"))["kind"] for _ in range(12)]
                assert kinds == ["flush_failed", "alert"] * 6
                nursery.cancel_scope.cancel()


async def test_an_inspector_started_after_the_cache_shows_what_happened_before(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            # What a start does before the inspector runs: a replay, a cut torn tail (alerted).
            cache._alert("replay", "shard-0", "replayed 3 journal records")
            cache._alert("torn_tail", "shard-0", "shard-0: cut a torn tail at offset 812")
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                snapshot = await receive(await connect(server, nursery))
                assert [(e["kind"], e["detail"]) for e in snapshot["events"]] == [
                    ("replay", "replayed 3 journal records"),
                    ("torn_tail", "shard-0: cut a torn tail at offset 812"),
                    ("alert", "shard-0: cut a torn tail at offset 812"),
                ]
                nursery.cancel_scope.cancel()


async def test_reattaching_a_cache_adds_only_the_events_the_inspector_missed(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                cache.record_event("fault", "shard-0", "seen")
                server.attach(None)
                cache.record_event("fault", "shard-0", "missed while detached")
                server.attach(cache)
                snapshot = await receive(await connect(server, nursery))
                assert [e["detail"] for e in snapshot["events"]] == [
                    "seen", "missed while detached"]
                nursery.cancel_scope.cancel()


async def test_the_page_shows_events_from_before_it_connected_at_their_clock_time(
    tmp_path: Path,
) -> None:
    # Real clock and a real browser: events in the snapshot happened before the page
    # connected; they once printed as "+-3.2s" (a negative offset behind a plus sign).
    with trio.fail_after(60):
        async with memory_cache(tmp_path) as cache, trio.open_nursery() as nursery:
            cache.record_event("fault", "shard-0", "before the page")
            cache._alert("flush_failed", "shard-1", "shard-1: flush failed before the page")
            await trio.sleep(0.3)
            server = await nursery.start(serve_inspector, cache, "127.0.0.1", 0)
            async with open_page(server.page_url, tmp_path / "profile") as page:
                lines = await poll(page, """(() => { const items = [...document.querySelectorAll(
                    '#events li')].map(li => li.innerText); return items.length >= 3 && items;
                    })()""")
                assert page.exceptions == []
            nursery.cancel_scope.cancel()
    assert len(lines) == 3
    for line in lines:
        assert "+-" not in line
        assert re.match(r"\d\d:\d\d:\d\d\s", line), line
