"""Hostile clients on real sockets (127.0.0.1, port 0): idle connections, simultaneous
handshakes, and a process whose open-file limit the inspector must not use up.

Real clock; every test runs under a ``fail_after`` cap and asserts on counts, not durations.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from writebehind import serve_inspector, serve_metrics
from writebehind._inspector._http import FD_SHARE, connection_cap
from writebehind._inspector._server import InspectorServer


async def wait_for_connections(server: InspectorServer, count: int, timeout: float = 10) -> None:
    with trio.fail_after(timeout):  # fails at the wait that stuck, not at the test's cap
        while server.statistics().connections != count:
            await trio.sleep(0.01)


def partial_inspector(**options: Any) -> Callable[..., Awaitable[None]]:
    """``nursery.start(partial_inspector(...))``: an inspector with no cache on a free port."""

    async def start(task_status: trio.TaskStatus[InspectorServer]) -> None:
        await serve_inspector(None, "127.0.0.1", 0, task_status=task_status, **options)

    return start


def test_the_connection_cap_leaves_most_descriptors_to_the_rest_of_the_process() -> None:
    assert connection_cap(32, 20_000) == 32
    assert connection_cap(32, 128) == int(128 * FD_SHARE) == 16
    assert connection_cap(32, 4) == 1  # never zero: the inspector still answers, one at a time


async def test_idle_connections_are_bounded_before_any_handshake() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial_inspector(max_connections=4, header_timeout=30))
            idle = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(20)]
            await wait_for_connections(server, 4)
            await trio.sleep(0.3)  # the other 16 wait in the kernel's backlog, not with us
            assert server.statistics().connections == 4
            for stream in idle:
                await stream.aclose()
            async with open_websocket_url(server.url) as ws:
                assert json.loads(await ws.get_message())["type"] == "snapshot"
            nursery.cancel_scope.cancel()


async def test_the_metrics_endpoint_bounds_its_connections_too() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(
                serve_metrics, None, "127.0.0.1", 0, max_connections=3, request_timeout=30))
            idle = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(12)]
            while server.connections != 3:
                await trio.sleep(0.01)
            await trio.sleep(0.3)
            assert server.connections == 3
            for stream in idle:
                await stream.aclose()
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert (await stream.receive_some()).startswith(b"HTTP/1.1 200 OK")
            nursery.cancel_scope.cancel()


async def test_a_socket_that_sends_no_request_head_is_closed_after_header_timeout() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial_inspector(header_timeout=0.2))
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            with trio.fail_after(5):  # handshake_timeout (10 s) would not do it
                assert await stream.receive_some() == b""
            await wait_for_connections(server, 0)
            nursery.cancel_scope.cancel()


async def test_max_clients_holds_for_simultaneous_handshakes() -> None:
    attempts, max_clients = 30, 5
    accepted: list[int] = []
    refused: list[int] = []
    all_tried = trio.Event()

    async def client(server: InspectorServer) -> None:
        try:
            async with open_websocket_url(server.url) as ws:
                await ws.get_message()
                accepted.append(1)
                if len(accepted) + len(refused) == attempts:
                    all_tried.set()
                await all_tried.wait()
        except ConnectionRejected as exc:
            refused.append(exc.status_code)
            if len(accepted) + len(refused) == attempts:
                all_tried.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial_inspector(max_clients=max_clients,
                                                           max_connections=64))
            async with trio.open_nursery() as clients:
                for _ in range(attempts):
                    clients.start_soon(client, server)
            assert len(accepted) == max_clients
            assert refused == [503] * (attempts - max_clients)
            nursery.cancel_scope.cancel()


CHILD = """
import resource, sys, trio
from writebehind import Config, open_cache

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, hard))

async def main():
    config = Config(
        store="sqlite:///" + sys.argv[1] + "/store.db", journal_dir=sys.argv[1] + "/journal",
        ack="fsync", shards=2, segment_bytes=4096, flush_interval=0.05,
        inspector="127.0.0.1:0",
    )
    with trio.fail_after(60):
        async with open_cache(config) as cache:
            print(cache.inspector.port, flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)  # the parent holds its sockets
            for i in range(400):  # ~100 segment rotations: each opens a file
                await cache.put(f"key-{i}", bytes(200))
            await cache.flush()
            print("ok", cache.inspector.statistics().connections, cache.statistics().alerts,
                  flush=True)

trio.run(main)
"""


def test_idle_connections_cannot_starve_the_journal_of_file_descriptors(tmp_path: Path) -> None:
    limit = 128
    code = textwrap.dedent(CHILD).replace("OPEN_FILES", str(limit))
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    held: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        for _ in range(3 * limit):  # far beyond the child's open-file limit
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(1.0)  # time to accept (and, before the bound, to hoard descriptors)
        out, err = child.communicate("go\n", timeout=120)
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        for sock in held:
            sock.close()
    assert child.returncode == 0, err[-3000:]
    word, connections, alerts = out.split()
    assert word == "ok"
    assert int(connections) <= int(limit * FD_SHARE)
    assert int(alerts) == 0


def test_the_connection_cap_reads_this_process_open_file_limit() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        assert connection_cap(32) == 32
    else:
        assert connection_cap(32) == max(1, min(32, int(soft * FD_SHARE)))
