"""The inspector on real sockets (localhost, port 0): page, WebSocket, config start, refusals."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected, open_websocket_url

import writebehind._inspector._protocol as protocol
from writebehind import ConfigError, serve_inspector

from .conftest import memory_cache, running_inspector


async def http_get(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, body


async def test_port_zero_serves_the_page_and_the_websocket_on_one_port(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache, trio.open_nursery() as nursery:
            server = await nursery.start(serve_inspector, cache, "127.0.0.1", 0)
            assert server.port != 0
            assert server.url == f"ws://127.0.0.1:{server.port}/ws"
            status, headers, body = await http_get(
                server.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert status == "HTTP/1.1 200 OK"
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert b"<title>writebehind inspector</title>" in body
            assert int(headers["content-length"]) == len(body)
            status, _, _ = await http_get(server.port, b"GET /etc HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 404 Not Found"
            status, _, _ = await http_get(server.port, b"POST / HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 405 Method Not Allowed"
            await cache.put("k", b"v")
            async with open_websocket_url(server.url) as ws:
                snapshot = json.loads(await ws.get_message())
                assert snapshot["type"] == "snapshot"
                assert sum(a.get("acked_seq", 0) for a in snapshot["actors"]) >= 1
            nursery.cancel_scope.cancel()


async def test_a_request_head_over_the_bound_is_refused() -> None:
    with trio.fail_after(30):
        async with running_inspector(None) as server, trio.open_nursery() as nursery:
            client, server_side = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, server_side)
            await client.send_all(b"GET / HTTP/1.1\r\nX-Pad: " + b"x" * 20_000 + b"\r\n\r\n")
            data = b""
            while chunk := await client.receive_some():
                data += chunk
            assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_config_inspector_starts_it_with_the_cache(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path, inspector="127.0.0.1:0", inspector_token="t0k") as cache:
            server = cache.inspector
            assert server is not None and server.port != 0
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(server.url):
                    pass
            assert refused.value.status_code == 401
            async with open_websocket_url(server.url + "?token=t0k") as ws:
                assert json.loads(await ws.get_message())["cache"]["status"] == "running"
            # A browser page from another origin is refused even with the token.
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(
                    server.url + "?token=t0k", extra_headers=[(b"Origin", b"http://evil.test")]
                ):
                    pass
            assert refused.value.status_code == 403


def test_config_refuses_a_non_loopback_inspector_without_a_token() -> None:
    from writebehind import Config

    with pytest.raises(ConfigError, match=r"^Config.inspector='0\.0\.0\.0:8765' is reachable"):
        Config(inspector="0.0.0.0:8765")
    assert Config(inspector="0.0.0.0:8765", inspector_token="x").inspector == "0.0.0.0:8765"
    with pytest.raises(ConfigError, match=r"^Config\.inspector must be 'HOST:PORT'"):
        Config(inspector="8765")
    assert "s3cret" not in repr(Config(inspector="127.0.0.1:1", inspector_token="s3cret"))


async def test_serve_inspector_refuses_a_non_loopback_bind_without_a_token() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            refusal = r"refuses to bind to '0\.0\.0\.0' without a token"
            with pytest.raises(ConfigError, match=refusal):
                await nursery.start(serve_inspector, None, "0.0.0.0", 0)


async def test_an_inspector_that_cannot_bind_leaves_the_cache_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with trio.fail_after(30), caplog.at_level(logging.ERROR, "writebehind.inspector"):
            async with memory_cache(tmp_path, inspector=f"127.0.0.1:{port}") as cache:
                assert cache.inspector is None
                await cache.put("k", b"v")
                assert await cache.get("k") == b"v"
        assert "the inspector could not start" in caplog.text
    finally:
        taken.close()


async def test_an_inspector_failure_inside_a_listener_never_reaches_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache, trio.open_nursery() as nursery:
            server = await nursery.start(serve_inspector, cache, "127.0.0.1", 0)

            def broken(*args: object, **kw: object) -> dict[str, object]:
                raise RuntimeError("inspector bug")

            monkeypatch.setattr("writebehind._inspector._server.event_message", broken)
            cache.record_event("fault", "shard-0", "the cache must not see the bug")
            await cache.put("k", b"v")
            monkeypatch.setattr(
                "writebehind._inspector._server.event_message", protocol.event_message
            )
            async with open_websocket_url(server.url) as ws:
                assert json.loads(await ws.get_message())["type"] == "snapshot"
            nursery.cancel_scope.cancel()
