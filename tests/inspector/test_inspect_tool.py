"""``writebehind inspect``: one snapshot as a table with --once; refusals as plain messages."""

from __future__ import annotations

import io
import re
import socket
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from rich.console import Console

from writebehind import CacheStatistics, ShardStatistics, StoreStatistics, serve_inspector
from writebehind._cli import main
from writebehind._cli._inspect import endpoints, render
from writebehind._inspector._protocol import state_message

from .conftest import memory_cache


@pytest.mark.parametrize(
    ("url", "token", "expected"),
    [
        ("ws://127.0.0.1:8765", None, ("ws://127.0.0.1:8765/ws", "http://127.0.0.1:8765/")),
        ("127.0.0.1:9", "a b", ("ws://127.0.0.1:9/ws?token=a%20b", "http://127.0.0.1:9/#token=a%20b")),
        ("http://[::1]:80/", None, ("ws://[::1]:80/ws", "http://[::1]:80/")),
    ],
)
def test_what_a_person_types_becomes_the_websocket_and_page_urls(
    url: str, token: str | None, expected: tuple[str, str]
) -> None:
    assert endpoints(url, token) == expected


async def test_once_prints_every_actor_with_its_watermarks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path, shards=2) as cache, trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_inspector, cache, "127.0.0.1", 0, token="tk"))
            for i in range(7):
                await cache.put(f"key{i}", b"v")
            cache.record_event("fault", "shard-1", "a fault for the feed")
            acked = [s.acked_seq for s in cache.statistics().shards]
            code = await trio.to_thread.run_sync(
                main, ["inspect", f"127.0.0.1:{server.port}", "--token", "tk", "--once"])
            assert code == 0
            out = capsys.readouterr().out
            for name in ("supervisor", "shard-0", "shard-1", "store-0", "persisted"):
                assert name in out
            # --once waits for a state with rates: numbers, not dashes.
            assert re.search(r"puts/s \d", out) and re.search(r"rows/s \d", out)
            assert "a fault for the feed" in out
            shard_rows = [line for line in out.splitlines() if "shard-" in line and "│" in line]
            for row, seq in zip(shard_rows, acked, strict=True):
                assert f" {seq} " in row
            code = await trio.to_thread.run_sync(
                main, ["inspect", f"ws://127.0.0.1:{server.port}", "--once"])
            assert code == 1
            assert "refused (401)" in capsys.readouterr().err
            nursery.cancel_scope.cancel()


def test_an_unreachable_inspector_gets_a_real_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["inspect", f"127.0.0.1:{port}", "--once"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach 127.0.0.1:{port}: " in err
    assert "Connection refused" in err and "is the cache running" in err


async def test_a_missing_or_wrong_token_is_explained_in_cli_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path, shards=1) as cache, trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_inspector, cache, "127.0.0.1", 0, token="tk"))
            address = f"127.0.0.1:{server.port}"
            assert await trio.to_thread.run_sync(main, ["inspect", address, "--once"]) == 1
            err = capsys.readouterr().err
            assert "this inspector needs a token: pass --token TOKEN" in err
            assert "?token=" not in err
            code = await trio.to_thread.run_sync(
                main, ["inspect", address, "--token", "nope", "--once"])
            assert code == 1
            assert "the inspector refused this token: check --token" in capsys.readouterr().err
            nursery.cancel_scope.cancel()


def many_shards_state(count: int) -> dict[str, object]:
    """A state message of ``count`` shards: the last one crashed, the middle one far behind."""
    shards = tuple(
        ShardStatistics(
            name=f"shard-{i}", shard=i, restarts=0,
            status="crashed" if i == count - 1 else "running",
            entries=10, dirty=1, inflight_batches=0, unpersisted=1, oldest_dirty_age=0.1,
            mailbox_depth=0, acked_seq=1000 + i, written_seq=1000 + i, synced_seq=1000 + i,
            persisted_seq=(500 if i == count // 2 else 998 + i), journal_bytes=4096,
            journal_segments=1, batches_acked=3, records_persisted=900, evictions=0,
            quarantined=0, last_error="RuntimeError: boom" if i == count - 1 else None,
            last_error_time=90.0 if i == count - 1 else None,
        )
        for i in range(count)
    )
    store = StoreStatistics(name="store-0", status="running", restarts=0, batches=9,
                            records=900, errors=0, last_error=None)
    stats = CacheStatistics(
        ack="fsync", status="running", shards=shards, stores=(store,), store_mailbox_depth=0,
        quarantined=0, alerts=0, last_alert=None, store="postgresql://app:***@db/app",
        store_table="sessions", uptime=3725.0,
    )
    rates = {"window": 10.0, "puts_per_second": 1520.4, "rows_per_second": 310.2,
             "batches_per_second": 4.1, "ack_latency": {"p50": 0.00041, "p99": 0.0021},
             "flush_latency": {"p50": 0.012, "p99": 0.071}}
    return state_message("update", stats, seq=9, now=100.0, wall_time=time.time(), rates=rates)


@pytest.mark.parametrize(("shards", "width"), [(2, 120), (64, 160), (64, 80), (400, 120)])
def test_the_screen_keeps_its_header_and_rates_within_40_lines(shards: int, width: int) -> None:
    state = many_shards_state(shards)
    events = [{"type": "event", "kind": "fault", "actor": "shard-1", "detail": f"fault #{i}",
               "time": 90.0 + i, "wall_time": time.time()} for i in range(8)]
    console = Console(file=io.StringIO(), width=width, height=40, record=True)
    console.print(render(state, events, height=40, width=width))
    lines = console.export_text().splitlines()
    assert len(lines) <= 40
    assert lines[0].startswith("writebehind cache running  ack fsync  up 1h02m05s")
    top = next(i for i, line in enumerate(lines) if line[:1] in "┏┌╭")  # the table's frame
    head = "\n".join(lines[:top])
    assert "puts/s 1520  rows/s 310  batches/s 4.1  ack p50/p99 0.41ms/" in head
    # Narrow or wide, every figure of the header is on screen, whole.
    for figure in ("store postgresql://app:***@db/app (sessions)", "flush p50/p99 12ms/71ms",
                   "unpersisted ", "quarantined 0", "alerts 0"):
        assert figure in head, (figure, head)
    assert top == {80: 4, 120: 3, 160: 2}[width]  # lines the header needs at that width
    text = "\n".join(lines)
    assert "│ supervisor" in text and "store-0" in text
    # The shards most worth a look are shown whatever the count: the crashed one (with the
    # time of its error) and the one furthest behind the store.
    assert f"shard-{shards - 1} " in text and f"shard-{shards // 2} " in text
    assert re.search(r"\d\d:\d\d:\d\d Runtime", text)
    # Every row is one line, and the columns that matter most keep their whole values.
    rows = [line for line in lines if line.startswith("│   shard-")]
    assert len(rows) == (shards if shards < 30 else 40 - top - 4 - 1 - 3 - 2)
    assert all(re.search(r"│ +1\d\d\d │", row) for row in rows)  # acked, whole
    if shards > 30:
        hidden = shards - len(rows)  # all running: the crashed one is shown
        assert re.search(rf"│   \+{hidden} shards +│ {hidden} ok ", text)
    else:
        assert " shards │" not in text
    assert re.search(r"\d\d:\d\d:\d\d +fault shard-1: fault #7", text)  # the newest event


def test_a_cluster_member_gets_a_header_line_of_its_partitions_and_leases() -> None:
    state = many_shards_state(2)
    console = Console(file=io.StringIO(), width=160, height=40, record=True)
    console.print(render(state, [], height=40, width=160))
    assert "cluster " not in console.export_text()  # a single process: no such line
    state["cluster"] = {
        "cluster": "orders", "member": "host-a:12:ab", "live": ["host-a:12:ab", "b:7:cd"],
        "partitions": 4, "hosted": [0, 2], "starting": [3], "owned": [0, 2],
        "leases": [{"partition": 0, "epoch": 5, "expires_in": 8.5, "acknowledge_for": 6.5},
                   {"partition": 2, "epoch": 1, "expires_in": 2.0, "acknowledge_for": 0.25}],
        "acquisitions": 3, "takeovers": 1, "handovers": 2, "renewals": 40, "losses": 0,
        "routed_served": 9, "routed_refused": 1,
    }
    console = Console(file=io.StringIO(), width=160, height=40, record=True)
    console.print(render(state, [], height=40, width=160))
    text = console.export_text()
    assert ("cluster orders  member host-a:12:ab  live 2  partitions hosted 2/4  starting 1  "
            "epoch 1-5  acks for 0.2s  take-overs 1  hand-overs 2  losses 0  routed in 9"
            ) in text
