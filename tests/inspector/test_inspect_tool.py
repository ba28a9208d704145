"""``writebehind inspect``: one snapshot as a table with --once; refusals as plain messages."""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import pytest
import trio

from writebehind import serve_inspector
from writebehind._cli import main
from writebehind._inspect_tool import endpoints

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
