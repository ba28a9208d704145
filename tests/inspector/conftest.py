"""Shared pieces: a cache that is deterministic under trio's autojump clock, and clients that
talk to an inspector over in-memory streams (no sockets)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from writebehind import Cache, Config, InspectorServer, Seams, open_cache
from writebehind._journal import SimulatedFileSystem
from writebehind.harness import MemoryStore


@asynccontextmanager
async def memory_cache(
    tmp_path: Path, *, fault_point: Any = None, **config: Any
) -> AsyncIterator[Cache]:
    """A cache on an in-memory disk and store: nothing blocks, so MockClock runs it."""
    config.setdefault("ack", "journal")
    config.setdefault("shards", 2)
    config.setdefault("flush_interval", 0.2)
    seams = Seams(
        store_factory=MemoryStore().factory, filesystem=SimulatedFileSystem(7),
        fault_point=fault_point,
    )
    async with open_cache(Config(journal_dir=tmp_path / "journal", **config), seams=seams) as c:
        yield c


@asynccontextmanager
async def running_inspector(cache: Cache | None, **options: Any) -> AsyncIterator[InspectorServer]:
    """An inspector with no listening socket: connections come through ``handle_stream``."""
    server = InspectorServer(cache, "127.0.0.1", 0, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(server.run, listen=False))
        yield server
        nursery.cancel_scope.cancel()


async def connect(
    server: InspectorServer,
    nursery: trio.Nursery,
    *,
    resource: str = "/ws",
    headers: Sequence[tuple[bytes, bytes]] = (),
    lockstep: bool = False,
    **options: Any,
) -> WebSocketConnection:
    """A client over an in-memory stream. ``lockstep``: a send waits until the peer reads, so
    a client that stops reading stalls the server's sends like a full TCP window."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    nursery.start_soon(server.handle_stream, server_stream)
    return await wrap_client_stream(
        nursery, client_stream, "inspector.test", resource,
        extra_headers=list(headers), **options,
    )


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.get_message())
    return message


async def receive_until(ws: WebSocketConnection, kind: str) -> dict[str, Any]:
    """Skip messages (state updates) until one of type ``kind``."""
    while True:
        message = await receive(ws)
        if message["type"] == kind:
            return message


async def refusal(server: InspectorServer, **options: Any) -> ConnectionRejected:
    """Attempt a handshake that should be refused; return how it was refused."""
    found: list[ConnectionRejected] = []
    try:
        async with trio.open_nursery() as nursery:
            await connect(server, nursery, **options)
            nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        found.extend(e for e in group.exceptions if isinstance(e, ConnectionRejected))
    assert found, "the handshake was accepted"
    return found[0]
