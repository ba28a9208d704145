"""The protocol end to end over in-memory streams, on trio's autojump clock where timed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from writebehind import ShardCrashed

from .conftest import (
    connect,
    memory_cache,
    receive,
    receive_until,
    refusal,
    running_inspector,
)


def total(message: dict[str, Any], field: str) -> int:
    return sum(a[field] for a in message["actors"] if a["kind"] == "shard")


async def test_a_client_gets_a_snapshot_then_updates_as_the_cache_changes(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache, running_inspector(cache) as server:
            async with trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                snapshot = await receive(ws)
                assert snapshot["type"] == "snapshot" and snapshot["protocol"] == 1
                assert [a["name"] for a in snapshot["actors"]] == [
                    "supervisor", "shard-0", "shard-1", "store-0"]
                assert snapshot["cache"]["status"] == "running"
                before = total(snapshot, "acked_seq")
                for i in range(25):
                    await cache.put(f"k{i}", b"v")
                while True:
                    update = await receive_until(ws, "update")
                    if total(update, "acked_seq") >= before + 25:
                        break
                assert update["seq"] > snapshot["seq"]
                # ...and later the watermarks show the flush reached the store.
                while total(update, "persisted_seq") < total(update, "acked_seq"):
                    update = await receive_until(ws, "update")
                assert total(update, "dirty") == 0
                nursery.cancel_scope.cancel()


async def test_runtime_events_reach_the_client_as_they_happen(
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
                await receive_until(ws, "snapshot")
                with pytest.raises(ShardCrashed):
                    await cache.put("k", b"v")
                crash = await receive_until(ws, "event")
                assert (crash["kind"], crash["actor"]) == ("crash", "shard-0")
                assert "injected by the test" in crash["detail"]
                kinds = []
                while "restart" not in kinds:
                    kinds.append((await receive_until(ws, "event"))["kind"])
                # A client connecting now sees the crash in its snapshot's recent events.
                late = await connect(server, nursery)
                snapshot = await receive(late)
                assert [e["kind"] for e in snapshot["events"]][:1] == ["crash"]
                nursery.cancel_scope.cancel()


async def test_an_alert_raised_by_the_cache_becomes_an_alert_event(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                await receive_until(ws, "snapshot")
                await receive_until(ws, "update")
                cache._alert("flush_failed", "shard-1", "shard-1: the store is down")
                kinds = []
                while "alert" not in kinds:
                    event = await receive_until(ws, "event")
                    kinds.append(event["kind"])
                assert kinds == ["flush_failed", "alert"]
                assert event["detail"] == "shard-1: the store is down"
                nursery.cancel_scope.cancel()


async def test_the_inspector_is_read_only(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache) as server, trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                await receive_until(ws, "snapshot")
                await ws.send_message(json.dumps({"type": "put", "key": "k", "value": "v"}))
                error = await receive_until(ws, "error")
                assert "read-only" in error["message"]
                await ws.send_message(json.dumps({"type": "chaos", "action": "crash"}))
                error = await receive_until(ws, "error")
                assert error["message"] == (
                    "this inspector is read-only: chaos control is not enabled")
                assert await cache.get("k") is None
                await ws.send_message(json.dumps({"type": "ping"}))
                assert (await receive_until(ws, "pong")) == {"type": "pong"}
                nursery.cancel_scope.cancel()


async def test_chaos_control_when_enabled_runs_the_request_and_reports_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    seen: list[Mapping[str, Any]] = []

    async def control(request: Mapping[str, Any]) -> str:
        seen.append(request)
        if request.get("action") == "boom":
            raise ValueError("no such fault")
        return f"crashed {request['actor']}"

    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            async with running_inspector(cache, chaos_control=control) as server:
                async with trio.open_nursery() as nursery:
                    ws = await connect(server, nursery)
                    assert (await receive(ws))["chaos_control"] is True
                    await ws.send_message('{"type": "chaos", "action": "crash", "actor": "s"}')
                    result = await receive_until(ws, "chaos_result")
                    assert result == {"type": "chaos_result", "ok": True, "detail": "crashed s"}
                    fault = await receive_until(ws, "event")
                    assert (fault["kind"], fault["detail"]) == ("fault", "chaos control: crashed s")
                    await ws.send_message('{"type": "chaos", "action": "boom"}')
                    result = await receive_until(ws, "chaos_result")
                    assert result["ok"] is False and "no such fault" in result["detail"]
                    assert [r["action"] for r in seen] == ["crash", "boom"]
                    nursery.cancel_scope.cancel()


async def test_a_message_over_the_size_bound_closes_the_connection(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        async with running_inspector(None, max_message_size=1024) as server:
            async with trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                snapshot = await receive(ws)
                assert snapshot["cache"] == {"status": "detached"}
                await ws.send_message('{"type": "ping"}')
                await receive_until(ws, "pong")
                await ws.send_message(json.dumps({"type": "ping", "pad": "x" * 2000}))
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1009  # Message Too Big
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("options", "resource", "headers", "status"),
    [
        ({"token": "s3cret"}, "/ws", [], 401),
        ({"token": "s3cret"}, "/ws?token=wrong", [], 401),
        ({}, "/ws", [(b"Origin", b"http://evil.example")], 403),
        ({}, "/admin", [], 404),
        # Judged by the last Origin, this one would pass: the inspector's own (port 0 here).
        ({}, "/ws", [(b"Origin", b"http://evil.example"), (b"Origin", b"http://127.0.0.1:0")],
         403),
    ],
    ids=["no-token", "wrong-token", "foreign-origin", "unknown-path", "two-origins"],
)
async def test_refused_handshakes_get_an_http_error_and_no_state(
    autojump_clock: trio.abc.Clock,
    options: dict[str, Any], resource: str, headers: list[tuple[bytes, bytes]], status: int,
) -> None:
    with trio.fail_after(30):
        async with running_inspector(None, **options) as server:
            refused = await refusal(server, resource=resource, headers=headers)
            assert refused.status_code == status
            assert b"actors" not in (refused.body or b"")
            assert server.statistics().refused == 1 and server.statistics().accepted == 0


async def test_the_right_token_gets_in_by_query_or_header(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(30):
        async with running_inspector(None, token="s3cret") as server:
            async with trio.open_nursery() as nursery:
                ws = await connect(server, nursery, resource="/ws?token=s3cret")
                assert (await receive(ws))["type"] == "snapshot"
                ws = await connect(server, nursery, headers=[(b"Authorization", b"Bearer s3cret")])
                assert (await receive(ws))["type"] == "snapshot"
                nursery.cancel_scope.cancel()


async def test_clients_beyond_max_clients_are_refused(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(30):
        async with running_inspector(None, max_clients=2) as server:
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    await receive(await connect(server, nursery))
                assert (await refusal(server)).status_code == 503
                assert server.statistics().clients == 2
                nursery.cancel_scope.cancel()


async def test_updates_are_coalesced_to_at_most_ten_per_second(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    seconds = 5.0
    with trio.fail_after(60):
        async with memory_cache(tmp_path) as cache, running_inspector(cache) as server:
            async with trio.open_nursery() as nursery:
                ws = await connect(server, nursery)
                await receive(ws)

                async def writer() -> None:
                    i = 0
                    while True:  # about 1000 state changes a second
                        await cache.put(f"k{i % 50}", b"%d" % i)
                        i += 1
                        await trio.sleep(0.001)

                nursery.start_soon(writer)
                times: list[float] = []
                with trio.move_on_after(seconds):
                    while True:
                        message = await receive(ws)
                        if message["type"] == "update":
                            times.append(trio.current_time())
                assert 0.5 * 10 * seconds <= len(times) <= 10 * seconds + 1, len(times)
                gaps = [b - a for a, b in itertools.pairwise(times)]
                assert min(gaps) >= 0.1 - 1e-9
                nursery.cancel_scope.cancel()
