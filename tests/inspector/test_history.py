"""What the inspector sends for charts with history: rates, percentiles, wall-clock stamps,
the store it writes to and the cache's uptime (in-memory streams, autojump clock)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import CacheEvent, CacheStatistics, ShardCrashed
from writebehind._inspector._protocol import event_message, state_message

from .conftest import connect, memory_cache, receive, receive_until, running_inspector

SECRET_STORE = "postgresql://app:hunter2@db.internal:5432/app"


def test_state_messages_carry_wall_time_and_rates_and_events_their_wall_time() -> None:
    stats = CacheStatistics(
        ack="fsync", status="running", shards=(), stores=(), store_mailbox_depth=0,
        quarantined=0, alerts=0, last_alert=None, store="sqlite:///s.db", store_table="t",
        uptime=12.5,
    )
    rates = {"window": 10.0, "puts_per_second": 3.0}
    message = state_message("update", stats, seq=1, now=50.0, wall_time=1e9, rates=rates)
    assert (message["time"], message["wall_time"], message["rates"]) == (50.0, 1e9, rates)
    assert message["cache"]["store"] == "sqlite:///s.db"
    assert (message["cache"]["store_table"], message["cache"]["uptime"]) == ("t", 12.5)
    # An old-style call still makes a valid message: the new fields are null.
    bare = state_message("update", stats, seq=2, now=51.0)
    assert bare["wall_time"] is None and bare["rates"] is None
    event = event_message(CacheEvent("crash", "shard-0", "x", 40.0), seq=3, wall_offset=1e9)
    assert event["wall_time"] == 1e9 + 40.0
    assert event_message(CacheEvent("crash", "shard-0", "x", 40.0), seq=4)["wall_time"] is None


async def test_updates_carry_rates_percentiles_the_masked_store_and_uptime(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(60):
        async with memory_cache(tmp_path, store=SECRET_STORE, store_table="sessions") as cache:
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                snapshot = await receive(ws)
                assert snapshot["cache"]["store"] == "postgresql://app:***@db.internal:5432/app"
                assert snapshot["cache"]["store_table"] == "sessions"
                assert "hunter2" not in str(snapshot)
                assert abs(snapshot["wall_time"] - time.time()) < 3600
                for i in range(40):
                    await cache.put(f"k{i}", b"v")
                await cache.flush()
                update: dict[str, Any] = await receive_until(ws, "update")
                while not (update["rates"] and update["rates"]["rows_per_second"] > 0):
                    update = await receive_until(ws, "update")
                rates = update["rates"]
                assert rates["puts_per_second"] > 0 and rates["batches_per_second"] > 0
                assert 0 < rates["window"] <= 10.0
                assert rates["ack_latency"]["p50"] is not None
                assert rates["ack_latency"]["p50"] <= rates["ack_latency"]["p99"]
                assert rates["flush_latency"]["p99"] is not None
                assert update["cache"]["uptime"] > snapshot["cache"]["uptime"] >= 0
                # With nothing written for longer than the window, the rates fall to zero.
                await trio.sleep(15)
                quiet_since = trio.current_time()
                while update["time"] < quiet_since:  # skip updates queued while asleep
                    update = await receive_until(ws, "update")
                assert update["rates"]["puts_per_second"] == 0
                assert update["rates"]["ack_latency"]["p50"] is None
                nursery.cancel_scope.cancel()


async def test_last_errors_and_events_are_stamped(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    armed = [True]

    def crash_once(point: str, actor: str) -> None:
        if point == "put.after_journal_append" and armed[0]:
            armed[0] = False
            raise RuntimeError("injected by the test")

    with trio.fail_after(30):
        async with memory_cache(tmp_path, shards=1, fault_point=crash_once) as cache:
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                snapshot = await receive(ws)
                assert snapshot["actors"][1]["last_error_time"] is None
                with pytest.raises(ShardCrashed):
                    await cache.put("k", b"v")
                crash = await receive_until(ws, "event")
                assert crash["kind"] == "crash"
                assert abs(crash["wall_time"] - time.time()) < 3600
                update = await receive_until(ws, "update")
                shard = update["actors"][1]
                while shard["status"] != "running":
                    update = await receive_until(ws, "update")
                    shard = update["actors"][1]
                assert "injected by the test" in shard["last_error"]
                assert shard["last_error_time"] == crash["time"]
                nursery.cancel_scope.cancel()
