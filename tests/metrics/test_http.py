"""``GET /metrics``: on the inspector's port and on its own (``serve_metrics``,
``Config(metrics=...)``), with the inspector's token rules. Localhost, port 0."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from prometheus_client import CollectorRegistry, Counter

from writebehind import CacheCollector, Config, ConfigError, MetricsServer, serve_metrics
from writebehind._inspector._server import InspectorServer

from .conftest import http_get, memory_cache, parse, scrape_stream, value

GET = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def get(path: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


async def test_serve_metrics_on_port_zero_reports_the_real_port(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache, trio.open_nursery() as nursery:
            server = await nursery.start(serve_metrics, cache, "127.0.0.1", 0)
            assert isinstance(server, MetricsServer) and server.port != 0
            assert server.url == f"http://127.0.0.1:{server.port}/metrics"
            await cache.put("k", b"v")
            status, headers, body = await http_get(server.port, GET)
            assert status == "HTTP/1.1 200 OK"
            assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert int(headers["content-length"]) == len(body)
            samples = parse(body.decode())
            assert value(samples, "writebehind_acked_writes_total", ack="journal") == 1
            status, _, _ = await http_get(server.port, get("/"))
            assert status == "HTTP/1.1 404 Not Found"
            status, _, _ = await http_get(server.port, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert status == "HTTP/1.1 405 Method Not Allowed"
            nursery.cancel_scope.cancel()


async def test_config_metrics_starts_an_endpoint_with_the_cache(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path, metrics="127.0.0.1:0") as cache:
            assert cache.metrics is not None and cache.metrics.port != 0
            assert cache.inspector is None
            status, _, body = await http_get(cache.metrics.port, GET)
            assert status == "HTTP/1.1 200 OK"
            assert value(parse(body.decode()), "writebehind_running") == 1


def test_metrics_off_loopback_need_a_token() -> None:
    with pytest.raises(ConfigError, match=r"set Config\.metrics_token"):
        Config(metrics="0.0.0.0:9464")
    Config(metrics="0.0.0.0:9464", metrics_token="t0k")
    with pytest.raises(ConfigError, match=r"refuses to bind to '0\.0\.0\.0' without a token"):
        MetricsServer(None, "0.0.0.0", 0)
    with pytest.raises(ConfigError, match=r"Config\.metrics must be 'HOST:PORT'"):
        Config(metrics="9464")


@pytest.mark.parametrize("serve", ["inspector", "metrics"])
async def test_a_token_is_required_when_set_as_bearer_or_query(
    tmp_path: Path, autojump_clock: trio.abc.Clock, serve: str
) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache:
            server = (InspectorServer if serve == "inspector" else MetricsServer)(
                cache, "127.0.0.1", 0, token="t0k")
            handle = server.handle_stream
            refused = await scrape_stream(handle, GET)
            assert refused.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
            assert b"writebehind_" not in refused
            wrong = await scrape_stream(handle, get("/metrics", "Authorization: Bearer nope"))
            assert wrong.startswith(b"HTTP/1.1 401 ")
            for request in (get("/metrics", "Authorization: Bearer t0k"),
                            get("/metrics?token=t0k")):
                answer = await scrape_stream(handle, request)
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
                body = answer.partition(b"\r\n\r\n")[2].decode()
                assert value(parse(body), "writebehind_running") == 1


async def test_the_inspector_serves_metrics_of_the_cache_it_is_attached_to(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    with trio.fail_after(30):
        server = InspectorServer(None, "127.0.0.1", 0)
        detached = await scrape_stream(server.handle_stream, GET)
        assert detached.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\n\r\n# HELP writebehind_running" in detached
        assert b"\nwritebehind_running " not in detached  # families, no samples
        async with memory_cache(tmp_path) as cache:
            await cache.put("k", b"v")
            server.attach(cache)
            answer = await scrape_stream(server.handle_stream, GET)
            body = answer.partition(b"\r\n\r\n")[2].decode()
            assert value(parse(body), "writebehind_acked_writes_total", ack="journal") == 1


async def test_a_registry_of_the_users_own_is_served_as_given(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with memory_cache(tmp_path) as cache, trio.open_nursery() as nursery:
            registry = CollectorRegistry()
            Counter("app_requests", "Requests the app served.", registry=registry).inc(3)
            registry.register(CacheCollector(cache))
            server = await nursery.start(serve_metrics, cache, "127.0.0.1", 0)
            mine = await nursery.start(
                partial(serve_metrics, cache, "127.0.0.1", 0, registry=registry))
            _, _, body = await http_get(mine.port, GET)
            samples = parse(body.decode())
            assert value(samples, "app_requests_total") == 3
            assert value(samples, "writebehind_running") == 1
            _, _, plain = await http_get(server.port, GET)
            assert b"app_requests" not in plain
            nursery.cancel_scope.cancel()
