"""Shared pieces: a cache on an in-memory disk and store (deterministic under trio's autojump
clock), a store that fails or refuses on demand, and a scrape parsed back into samples."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from writebehind import Cache, Config, Rejection, Seams, Store, StoreRecord, StoreUnavailable
from writebehind._journal import SimulatedFileSystem
from writebehind.harness import MemoryStore

#: ``{(sample name, sorted label pairs): value}``
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@attrs.define
class StoreTrouble:
    """What the test store does: fail the next ``failures`` batches, refuse keys that start
    with ``refuse_prefix`` for good."""

    failures: int = 0
    refuse_prefix: str = "refused:"


class TroubledStore:
    """Wraps a store; ``write_batch`` follows :class:`StoreTrouble`."""

    def __init__(self, inner: Store, trouble: StoreTrouble) -> None:
        self._inner = inner
        self._trouble = trouble
        self.blocking = inner.blocking

    def write_batch(self, records: Sequence[StoreRecord]) -> tuple[Rejection, ...]:
        if self._trouble.failures > 0:
            self._trouble.failures -= 1
            raise StoreUnavailable("the test store failed this batch")
        prefix = self._trouble.refuse_prefix
        refused = tuple(
            Rejection(r.key, r.version, "the test store refuses it")
            for r in records if r.key.startswith(prefix)
        )
        self._inner.write_batch([r for r in records if not r.key.startswith(prefix)])
        return refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@asynccontextmanager
async def memory_cache(
    tmp_path: Path, *, trouble: StoreTrouble | None = None, fault_point: Any = None,
    **config: Any,
) -> AsyncIterator[Cache]:
    """A cache on an in-memory disk and store: nothing blocks, so MockClock runs it."""
    from writebehind import open_cache

    config.setdefault("ack", "journal")
    config.setdefault("shards", 2)
    config.setdefault("flush_interval", 0.2)
    config.setdefault("retry_initial", 0.01)
    config.setdefault("retry_max", 0.05)
    seams = Seams(
        store_factory=MemoryStore().factory, filesystem=SimulatedFileSystem(7),
        fault_point=fault_point,
        wrap_store=None if trouble is None else (lambda s: TroubledStore(s, trouble)),
    )
    async with open_cache(Config(journal_dir=tmp_path / "journal", **config), seams=seams) as c:
        yield c


def parse(text: str) -> Samples:
    """Every sample of an exposition (either format), keyed by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def http_get(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send one raw request to 127.0.0.1:port; the status line, headers and body."""
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


async def scrape_stream(handle_stream: Any, request: bytes) -> bytes:
    """One request through a server's ``handle_stream`` over an in-memory stream."""
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_stream, server_side)
        await client.send_all(request)
        data = b""
        while chunk := await client.receive_some():
            data += chunk
    return data
