"""The page in real headless Chromium: it shows the actor tree with live values that change.

Real clock (a real browser cannot follow trio's mock clock); every wait is a poll with a
``fail_after`` cap, and nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from writebehind import serve_inspector

from ._devtools import Page, open_page
from .conftest import memory_cache

PNG = b"\x89PNG\r\n\x1a\n"
SHARD_VALUES = """(() => [...document.querySelectorAll('[data-kind="shard"]')].map(n => ({
    name: n.dataset.actor,
    acked: Number(n.querySelector('[data-field="acked_seq"]').textContent),
    dirty: n.querySelector('[data-field="dirty"]').textContent,
})))()"""


def rect_of(selector: str) -> str:
    return f"""(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();
        return {{x: r.x, y: r.y, width: r.width, height: r.height}}; }})()"""


async def poll(page: Page, expression: str) -> Any:
    """Evaluate ``expression`` until it is truthy; return its value."""
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        await trio.sleep(0.05)


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
                chart_before = await page.evaluate(
                    "document.querySelector('canvas[data-chart=\"shard-0\"]').toDataURL()")
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
                chart_after = await page.evaluate(
                    "document.querySelector('canvas[data-chart=\"shard-0\"]').toDataURL()")
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
