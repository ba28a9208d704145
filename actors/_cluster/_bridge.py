"""The trio bridge to ``nats-py``: one asyncio event loop in one thread, owned by a trio task.

``nats-py`` is asyncio-only. Of the two ways to drive it from trio, this module takes the
dedicated loop thread: trio hands a coroutine function to the loop with
``asyncio.run_coroutine_threadsafe`` and sleeps until the loop's done-callback reschedules it
through the trio token; no trio worker thread is involved. Measured against ``trio-asyncio``
on a JetStream publish-ack loop (``tests/cluster/bench_bridge.py``; figures and the reasons
in ``specs/cluster.md``, "The trio bridge").

Ownership is structured: :func:`open_asyncio_loop` starts the thread on entry and, on exit,
stops the loop, cancels what still runs on it, closes it and joins the thread, so nothing
outlives the ``async with`` block. :func:`connect` adds a NATS connection on such a loop,
drained and closed on exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import nats
import nats.js
import outcome
import trio
from nats.aio.client import Client as NatsClient

T = TypeVar("T")
log = logging.getLogger("writebehind")

#: How long closing waits for the NATS connection to drain before it closes it anyway.
CLOSE_TIMEOUT = 5.0


class AsyncioLoop:
    """A running asyncio loop in its own thread; :meth:`run` awaits a coroutine on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self._loop = loop
        self._token = token
        self._calls = 0
        self._spawned: set[asyncio.Task[Any]] = set()  # referenced until done (asyncio's rule)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` on the asyncio loop, from trio.

        Cancelling the trio caller cancels the asyncio task at once and raises ``Cancelled``
        in trio without waiting for the task to unwind; the loop's own shutdown collects it.
        """
        self._calls += 1

        async def call() -> T:
            return await fn(*args, **kwargs)

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        task = trio.lowlevel.current_task()
        token = self._token
        aborted = False

        def reschedule(result: outcome.Outcome[T]) -> None:  # in trio's thread
            if not aborted:
                trio.lowlevel.reschedule(task, result)

        def done(f: concurrent.futures.Future[T]) -> None:  # in the loop's thread
            # A task the loop's shutdown cancelled ends in CancelledError: the caller hears
            # of it rather than waiting for ever.
            result = outcome.capture(f.result)
            try:
                token.run_sync_soon(reschedule, result)
            except trio.RunFinishedError:  # the trio run is gone: nobody to tell
                pass

        def abort(_: Any) -> trio.lowlevel.Abort:
            nonlocal aborted
            aborted = True
            future.cancel()  # thread-safe: cancels the asyncio task on its loop
            return trio.lowlevel.Abort.SUCCEEDED

        future.add_done_callback(done)
        value: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return value

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Start ``fn(*args)`` on the asyncio loop and return at once, from trio (a reply
        published without waiting for it). Its failure is logged; a closed loop drops it."""

        def start() -> None:
            task: asyncio.Task[Any] = self._loop.create_task(fn(*args))
            self._spawned.add(task)
            task.add_done_callback(self._spawned_done)

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed: the process is stopping
            pass

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:  # in the loop's thread
        self._spawned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a call spawned on the NATS loop failed: %r", task.exception())

    def statistics(self) -> dict[str, int]:
        return {"calls": self._calls}


@asynccontextmanager
async def open_asyncio_loop(name: str = "writebehind-nats") -> AsyncIterator[AsyncioLoop]:
    """Start one asyncio loop in one thread for the duration of the block; join it on exit."""
    # Not asyncio.new_event_loop(): with trio-asyncio imported anywhere in the process, that
    # is patched to refuse inside trio. The loop runs in its own thread, so a plain one.
    loop = asyncio.SelectorEventLoop()
    token = trio.lowlevel.current_trio_token()
    finished = trio.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                _shut_down(loop)
            finally:
                try:
                    token.run_sync_soon(finished.set)
                except trio.RunFinishedError:
                    pass

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()  # run() may queue work before the loop turns: it runs once it does
    try:
        yield AsyncioLoop(loop, token)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            await finished.wait()
        thread.join()


def _shut_down(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on ``loop`` (a client's reader and pinger), then close it."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


class NatsConnection:
    """A ``nats-py`` client and its JetStream context, driven from trio through one loop.

    Use :meth:`run` with a coroutine function of the client (``conn.run(conn.js.publish,
    subject, data)``); the attributes are the asyncio objects and must not be awaited from trio
    directly.
    """

    def __init__(self, bridge: AsyncioLoop, client: NatsClient) -> None:
        self.bridge = bridge
        self.client = client
        self.js: nats.js.JetStreamContext = client.jetstream()

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return await self.bridge.run(fn, *args, **kwargs)

    @property
    def connected_url(self) -> str | None:
        url = self.client.connected_url
        return None if url is None else url.geturl()


@asynccontextmanager
async def connect(
    servers: Sequence[str] | str,
    *,
    name: str = "writebehind",
    connect_timeout: float = 2.0,
    allow_reconnect: bool = True,
    max_reconnect_attempts: int = 60,
    bridge: AsyncioLoop | None = None,
) -> AsyncIterator[NatsConnection]:
    """Connect to NATS (``nats://host:port``, a list or a comma-separated string); closed on
    exit. On ``bridge``'s loop if given (several connections can share one loop thread),
    otherwise on a loop thread of its own that ends with the block."""
    urls = split_servers(servers) if isinstance(servers, str) else list(servers)
    if bridge is None:
        async with open_asyncio_loop() as own, connect(
            urls, name=name, connect_timeout=connect_timeout, allow_reconnect=allow_reconnect,
            max_reconnect_attempts=max_reconnect_attempts, bridge=own,
        ) as conn:
            yield conn
        return

    async def open_client() -> NatsClient:
        return await nats.connect(
            servers=urls, name=name, connect_timeout=connect_timeout,
            allow_reconnect=allow_reconnect, max_reconnect_attempts=max_reconnect_attempts,
            reconnect_time_wait=0.2,
        )

    client = await bridge.run(open_client)
    try:
        yield NatsConnection(bridge, client)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            await bridge.run(client.close)


def split_servers(text: str) -> list[str]:
    """``"nats://a:4222,nats://b:4222"`` as a list; a bare ``host:port`` gets ``nats://``."""
    urls = [part.strip() for part in text.split(",") if part.strip()]
    if not urls:
        raise ValueError(f"no NATS server in {text!r}")
    return [u if "://" in u else f"nats://{u}" for u in urls]
