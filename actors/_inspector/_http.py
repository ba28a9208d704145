"""Just enough HTTP for the inspector's one port: accept connections within a bound, read a
request head, answer plain requests (the page), and hand a WebSocket upgrade on with the bytes
already read put back. The metrics endpoint's port uses the same pieces."""

from __future__ import annotations

import errno
import functools
import importlib.resources
import logging
import resource
from collections.abc import Awaitable, Callable

import trio

from .._core._errors import describe

log = logging.getLogger("writebehind.inspector")

#: A server never holds more than this share of the process's open-file limit
#: (``RLIMIT_NOFILE``) in connections: the rest is for the journal, the store and the
#: application, so no number of connections can make the journal fail with EMFILE.
FD_SHARE = 1 / 8
#: ``accept`` errors that mean "no room right now" (try again shortly), not a broken listener.
ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def connection_cap(requested: int, open_files_limit: int | None = None) -> int:
    """How many connections a server may hold at once: ``requested``, but never more than
    :data:`FD_SHARE` of ``open_files_limit`` (default: this process's soft ``RLIMIT_NOFILE``),
    and at least 1."""
    if open_files_limit is None:
        open_files_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files_limit == resource.RLIM_INFINITY or open_files_limit <= 0:
        return max(1, requested)
    return max(1, min(requested, int(open_files_limit * FD_SHARE)))


class ConnectionBound:
    """Accept connections only while fewer than ``limit`` are open (from accept to close).

    Beyond the bound a server stops calling ``accept``: new connections wait in the kernel's
    listen backlog and cost this process no descriptor, so idle or slow clients can delay
    each other but never starve the rest of the process of file descriptors.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._slots = trio.Semaphore(limit)

    async def serve(
        self,
        listener: trio.SocketListener,
        handler: Callable[[trio.SocketStream], Awaitable[object]],
        nursery: trio.Nursery,
    ) -> None:
        """Accept on ``listener`` until cancelled, running ``handler(stream)`` in ``nursery``
        for each connection; the handler must close the stream."""
        while True:
            await self._slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                self._slots.release()
                if exc.errno not in ACCEPT_RETRY_ERRNOS:
                    raise
                log.warning("cannot accept a connection (%s); retrying", describe(exc))
                await trio.sleep(0.1)
                continue
            except BaseException:
                self._slots.release()
                raise
            self.open += 1
            nursery.start_soon(self._run, handler, stream)

    async def _run(
        self, handler: Callable[[trio.SocketStream], Awaitable[object]], stream: trio.SocketStream
    ) -> None:
        try:
            await handler(stream)
        finally:
            self.open -= 1
            self._slots.release()

MAX_REQUEST_HEAD = 8192
PAGE_FILE = "page.html"
PAGE_HEADERS = (
    "Content-Type: text/html; charset=utf-8\r\n"
    "Cache-Control: no-store\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\n"
)


class Replay(trio.abc.Stream):
    """A stream that first yields bytes already read from it (the request head we peeked at)."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            size = len(self._head) if max_bytes is None else max_bytes
            chunk, self._head = self._head[:size], self._head[size:]
            return chunk
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


async def read_head(stream: trio.abc.Stream) -> bytes | None:
    """Everything received up to and including the blank line after the headers (plus any
    bytes that came with it); None if the head is over the size bound or the peer left."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_REQUEST_HEAD:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise ConnectionError("the client closed before sending a request")
        data += chunk
    return data


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """``(method, target, headers)`` with header names lower-cased."""
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, target, *_ = [*lines[0].split(" "), "", ""]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def respond(
    stream: trio.abc.Stream, status: str, body: bytes, *, html: bool = False,
    content_type: str = "text/plain; charset=utf-8",
) -> None:
    """One complete response, then the connection is done (``Connection: close``)."""
    headers = PAGE_HEADERS if html else f"Content-Type: {content_type}\r\n"
    response = (
        f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    await stream.send_all(response.encode("latin-1") + body)


@functools.cache
def page() -> bytes:
    """The page: one self-contained file shipped as package data."""
    return importlib.resources.files(__package__).joinpath(PAGE_FILE).read_bytes()
