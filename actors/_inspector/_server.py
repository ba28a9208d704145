"""The websocket inspector: live actor state for people (a page, a terminal view) and tools.

A thin trio shell around ``_inspector_protocol``. One TCP port serves both the page (plain
HTTP ``GET /``) and the WebSocket (an upgrade on ``/`` or ``/ws``). Tasks, all in the
inspector's own nursery:

- the sampler reads ``cache.statistics()`` every ``update_interval`` while anyone is connected
  and hands the newest state to every client's outbox (coalescing);
- a cache listener hands each event to every outbox (synchronously, never blocking);
- per client, a sender drains its outbox and a receiver answers the client's few requests.

Nothing here can block or fail the cache: outboxes are bounded, a client that does not take a
message within ``send_timeout`` (or drops more than a queue's worth of events) is disconnected,
and every task catches and logs its own errors.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from .._core._addresses import dial_netloc
from .._core._errors import describe
from .._core._stats import CacheEvent, CacheStatistics
from ._http import (
    ConnectionBound,
    Replay,
    connection_cap,
    page,
    parse_head,
    read_head,
    respond,
)
from ._metrics import METRICS_PATH, CacheCollector, cache_registry, respond_metrics
from ._protocol import (
    RECENT_EVENTS,
    ClientOutbox,
    Message,
    Refusal,
    allowed_origins,
    check_bind,
    check_handshake,
    encode,
    event_message,
    reply_to,
    state_message,
)
from ._rates import RateWindow

if TYPE_CHECKING:
    from .._runtime._cache import Cache

log = logging.getLogger("writebehind.inspector")

#: ``chaos_control(request) -> detail``: runs a client's ``{"type": "chaos", ...}`` request.
ChaosControl = Callable[[Mapping[str, Any]], Awaitable[str]]

#: With nothing changing, still send a state this often so charts keep moving.
HEARTBEAT = 1.0


@attrs.frozen(kw_only=True)
class InspectorStatistics:
    """The inspector itself: who is connected, who was refused or disconnected for lagging."""

    clients: int
    accepted: int
    connections: int = 0  # open TCP connections of any kind (page, metrics, handshakes, clients)
    refused: int
    disconnected_slow: int
    dropped_events: int


class _Client:
    def __init__(self, outbox: ClientOutbox) -> None:
        self.outbox = outbox
        self.scope = trio.CancelScope()
        self.wake_event = trio.Event()
        self.kicked: str | None = None

    def wake(self) -> None:
        self.wake_event.set()

    def kick(self, reason: str) -> None:
        if self.kicked is None:
            self.kicked = reason
        self.scope.cancel()


class InspectorServer:
    """A running inspector; ``nursery.start(serve_inspector, ...)`` returns one.

    ``port`` is the real port (useful when bound to 0); ``url`` the WebSocket address;
    ``page_url`` the page. ``attach`` points it at another cache (a chaos run restarting its
    cache keeps one inspector); ``publish`` adds an event of the caller's own to the feed.
    """

    def __init__(
        self,
        cache: Cache | None,
        host: str = "127.0.0.1",
        port: int = 8765,
        *,
        token: str | None = None,
        origins: Iterable[str] = (),
        chaos_control: ChaosControl | None = None,
        update_interval: float = 0.1,
        max_clients: int = 16,
        max_connections: int | None = None,
        max_events: int = 256,
        max_message_size: int = 4096,
        send_timeout: float = 5.0,
        header_timeout: float = 5.0,
        handshake_timeout: float = 10.0,
    ) -> None:
        check_bind(host, token)
        if update_interval <= 0 or max_clients <= 0 or max_events <= 0:
            raise ValueError("update_interval, max_clients and max_events must be positive")
        if max_connections is not None and max_connections <= 0:
            raise ValueError(f"max_connections must be positive, got {max_connections!r}")
        if not header_timeout > 0 or not handshake_timeout > 0:
            raise ValueError("header_timeout and handshake_timeout must be positive")
        # "localhost" may bind 127.0.0.1 and ::1 on two different ports when asked for port 0.
        self.host = "127.0.0.1" if host == "localhost" else host
        self._requested_port = port
        self._token = token
        self._extra_origins = tuple(origins)
        self._chaos_control = chaos_control
        self.update_interval = update_interval
        self.max_clients = max_clients
        # Every connection holds a slot from accept to close, so idle sockets are bounded
        # before any handshake (they wait in the kernel's backlog, costing us no descriptor).
        self.max_connections = connection_cap(
            max_clients + 16 if max_connections is None else max_connections
        )
        self._bound = ConnectionBound(self.max_connections)
        self._admitted = 0  # clients past the max_clients check, counted before any await
        self.max_events = max_events
        self.max_message_size = max_message_size
        self.send_timeout = send_timeout
        self.header_timeout = header_timeout
        self.handshake_timeout = handshake_timeout
        self._cache = cache
        self._collector = CacheCollector(cache)
        self._registry = cache_registry(self._collector)  # GET /metrics
        self._listening: Cache | None = None
        self._listeners: list[trio.SocketListener] = []
        self._clients: set[_Client] = set()
        self._recent: list[Message] = []
        self._seq = 0
        self._last_cache_event: CacheEvent | None = None  # the newest one taken from a cache
        self._last_state: tuple[Any, Any, Any] | None = None
        self._last_offer = -math.inf
        self._rates = RateWindow()
        self._counts = {"accepted": 0, "refused": 0, "slow": 0}
        self._dropped_gone = 0

    # -- public ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._listeners:
            return self._requested_port
        port: int = self._listeners[0].socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://{dial_netloc(self.host, self.port)}/ws"

    @property
    def page_url(self) -> str:
        return f"http://{dial_netloc(self.host, self.port)}/"

    def attach(self, cache: Cache | None) -> None:
        """Show ``cache`` from now on (None: show "detached" until a cache is attached)."""
        self._stop_listening()
        self._cache = cache
        self._collector.cache = cache
        self._last_state = None
        self._rates.clear()
        self._start_listening()

    def publish(self, kind: str, actor: str, detail: str) -> None:
        """Add an event to every client's feed (e.g. a chaos run's own "fault" notes)."""
        self._on_event(CacheEvent(kind, actor, detail, trio.current_time()))

    def statistics(self) -> InspectorStatistics:
        return InspectorStatistics(
            clients=len(self._clients), accepted=self._counts["accepted"],
            connections=self._bound.open,
            refused=self._counts["refused"], disconnected_slow=self._counts["slow"],
            dropped_events=self._dropped_gone
            + sum(c.outbox.dropped_total for c in self._clients),
        )

    async def run(
        self, *, listen: bool = True, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind (unless ``listen=False``: then connections come through ``handle_stream``),
        report ``started(self)``, serve until cancelled. Failures after start are logged."""
        if listen:
            self._listeners = await trio.open_tcp_listeners(self._requested_port, host=self.host)
        started = False
        try:
            async with trio.open_nursery() as nursery:
                for listener in self._listeners:
                    nursery.start_soon(self._bound.serve, listener, self.handle_stream, nursery)
                nursery.start_soon(self._sample_loop)
                self._start_listening()
                started = True
                task_status.started(self)
                await trio.sleep_forever()
        except Exception:
            if not started:
                raise
            log.exception("the inspector failed and stopped; the cache is unaffected")
        finally:
            self._stop_listening()
            for listener in self._listeners:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(listener)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection (HTTP page or WebSocket) over any trio stream."""
        try:
            await self._handle(stream)
        except Exception as exc:
            log.debug("inspector connection ended: %s", describe(exc))
        finally:
            await trio.aclose_forcefully(stream)

    # -- connections ----------------------------------------------------------------------------

    async def _handle(self, stream: trio.abc.Stream) -> None:
        upgrade: bytes | None = None
        head: bytes | None = None
        with trio.move_on_after(self.header_timeout) as waiting:
            head = await read_head(stream)
        if waiting.cancelled_caught:
            return  # no request head within header_timeout: an idle socket, closed
        with trio.move_on_after(self.handshake_timeout):
            if head is None:
                await respond(stream, "431 Request Header Fields Too Large", b"request too big\n")
                return
            method, target, headers = parse_head(head)
            if headers.get("upgrade", "").lower() != "websocket":
                await self._serve_http(stream, method, target, headers)
                return
            upgrade = head
        if upgrade is None:
            return  # served (or the answer did not go out within handshake_timeout)
        async with trio.open_nursery() as nursery:
            admitted = False
            try:
                with trio.move_on_after(self.handshake_timeout) as scope:
                    request = await wrap_server_stream(
                        nursery, Replay(stream, upgrade), message_queue_size=4,
                        max_message_size=self.max_message_size,
                    )
                    refusal = check_handshake(
                        request.path, request.headers, token=self._token,
                        origins=allowed_origins(self.host, self.port, self._extra_origins),
                    )
                    # Counted here, in the step that checks, not once the client is served:
                    # simultaneous handshakes would otherwise all pass the check.
                    if refusal is None and self._admitted >= self.max_clients:
                        refusal = Refusal(503, f"the inspector already serves "
                                          f"{self.max_clients} clients (max_clients)")
                    if refusal is not None:
                        self._counts["refused"] += 1
                        await request.reject(
                            refusal.status, body=refusal.reason.encode() + b"\n",
                            extra_headers=[(b"content-type", b"text/plain; charset=utf-8")],
                        )
                        nursery.cancel_scope.cancel()
                        return
                    self._admitted += 1
                    admitted = True
                    ws = await request.accept()
                if not scope.cancelled_caught:
                    await self._serve_client(ws)
            finally:
                if admitted:
                    self._admitted -= 1
            nursery.cancel_scope.cancel()

    async def _serve_http(
        self, stream: trio.abc.Stream, method: str, target: str, headers: dict[str, str]
    ) -> None:
        path = target.split("?", 1)[0]
        if method != "GET":
            await respond(stream, "405 Method Not Allowed", b"the inspector only serves GET\n")
        elif path == METRICS_PATH:
            await respond_metrics(stream, self._registry, target, headers, self._token)
        elif path in ("/", "/index.html"):
            await respond(stream, "200 OK", page(), html=True)
        else:
            await respond(stream, "404 Not Found", b"the page is at / and the WebSocket at /ws\n")

    async def _serve_client(self, ws: WebSocketConnection) -> None:
        client = _Client(ClientOutbox(interval=self.update_interval, max_events=self.max_events))
        snapshot = self._state_message(
            "snapshot", trio.current_time(), recent=self._recent,
            chaos_control=self._chaos_control is not None,
        )
        # Registered in the same step the snapshot was taken: every later event is queued.
        self._clients.add(client)
        self._counts["accepted"] += 1
        try:
            with client.scope:
                if await self._send(ws, client, snapshot):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._send_loop, ws, client, nursery.cancel_scope)
                        nursery.start_soon(self._receive_loop, ws, client, nursery.cancel_scope)
        finally:
            self._clients.discard(client)
            self._dropped_gone += client.outbox.dropped_total
        if client.kicked is not None:
            self._counts["slow"] += 1
            log.info("inspector client %s disconnected: %s", ws.remote, client.kicked)
            with trio.move_on_after(0.5):
                await ws.aclose(1008, client.kicked[:120])
        else:
            with trio.move_on_after(0.5):
                await ws.aclose()

    async def _send(self, ws: WebSocketConnection, client: _Client, message: Message) -> bool:
        with trio.move_on_after(self.send_timeout) as scope:
            await ws.send_message(encode(message))
        if scope.cancelled_caught:
            client.kick(f"took no message for {self.send_timeout}s (send_timeout)")
            return False
        return True

    async def _send_loop(
        self, ws: WebSocketConnection, client: _Client, done: trio.CancelScope
    ) -> None:
        try:
            while True:
                item = client.outbox.next_message(trio.current_time())
                if isinstance(item, dict):
                    if not await self._send(ws, client, item):
                        return
                    continue
                deadline = math.inf if item is None else item
                with trio.move_on_at(deadline):
                    await client.wake_event.wait()
                client.wake_event = trio.Event()
        except ConnectionClosed:
            pass
        finally:
            done.cancel()

    async def _receive_loop(
        self, ws: WebSocketConnection, client: _Client, done: trio.CancelScope
    ) -> None:
        try:
            while True:
                text = await ws.get_message()
                reply = reply_to(text, chaos_enabled=self._chaos_control is not None)
                request = reply if reply.get("type") == "chaos" else None
                if request is not None:
                    reply = await self._run_chaos(request)
                client.outbox.offer_event(dict(reply))
                if client.outbox.too_far_behind():
                    client.kick("fell too far behind (more events dropped than max_events)")
                client.wake()
                if request is not None and reply["ok"]:
                    # Everyone's feed shows what a demo did, after the requester's answer.
                    self.publish("fault", "inspector", f"chaos control: {reply['detail']}")
        except ConnectionClosed:
            pass
        finally:
            done.cancel()

    async def _run_chaos(self, request: Mapping[str, Any]) -> Message:
        assert self._chaos_control is not None
        try:
            with trio.fail_after(10):
                detail = await self._chaos_control(request)
        except Exception as exc:
            return {"type": "chaos_result", "ok": False, "detail": describe(exc)}
        return {"type": "chaos_result", "ok": True, "detail": detail}

    # -- state and events -----------------------------------------------------------------------

    def _stats(self) -> CacheStatistics | None:
        return None if self._cache is None else self._cache.statistics()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _sample_loop(self) -> None:
        while True:
            await trio.sleep(self.update_interval)
            if not self._clients:
                self._rates.clear()
                continue
            try:
                self._sample(trio.current_time())
            except Exception:
                log.exception("the inspector could not sample the cache; trying again")

    def _state_message(
        self, kind: str, now: float, seq: int | None = None, **options: Any
    ) -> Message:
        """A state message with rates; ``seq`` is the next one unless given."""
        stats = self._stats()
        rates = None if stats is None else self._rates.observe(stats, now)
        return state_message(
            kind, stats, seq=self._next_seq() if seq is None else seq, now=now,
            wall_time=time.time(), rates=rates, **options,
        )

    def _sample(self, now: float) -> None:
        message = self._state_message("update", now, seq=0)
        # What changed, leaving out what moves with the clock alone (uptime, rates, the
        # leases' remaining times).
        cluster = message["cluster"]
        if cluster is not None:
            cluster = {**cluster, "leases": [(lease["partition"], lease["epoch"])
                                             for lease in cluster["leases"]]}
        key = ({**message["cache"], "uptime": None}, message["actors"], cluster)
        if key == self._last_state and now - self._last_offer < HEARTBEAT:
            return
        self._last_state, self._last_offer = key, now
        message["seq"] = self._next_seq()
        for client in self._clients:
            client.outbox.offer_state(message)
            client.wake()

    def _on_event(self, event: CacheEvent) -> None:
        # Called synchronously inside the runtime: cheap, bounded, and never raises.
        try:
            message = event_message(
                event, seq=self._next_seq(), wall_offset=time.time() - trio.current_time()
            )
            self._recent.append(message)
            del self._recent[:-RECENT_EVENTS]
            for client in self._clients:
                client.outbox.offer_event(message)
                if client.outbox.too_far_behind():
                    client.kick("fell too far behind (more events dropped than max_events)")
                client.wake()
        except Exception:
            log.exception("the inspector could not record an event; the cache carries on")

    def _on_cache_event(self, event: CacheEvent) -> None:
        self._last_cache_event = event
        self._on_event(event)
        if event.alert:
            # One "alert" per alert the cache raised, right after the event that raised it.
            self._on_event(attrs.evolve(event, kind="alert", alert=False))

    def _start_listening(self) -> None:
        if self._cache is not None and self._listening is None:
            # What the cache did before we listened (its start, its replay, or while it was
            # detached from us) comes first, oldest first, from the cache's own ring.
            backlog = self._cache.recent_events()
            for index, event in enumerate(backlog):
                if event is self._last_cache_event:
                    backlog = backlog[index + 1:]
                    break
            for event in backlog:
                self._on_cache_event(event)
            self._cache.add_listener(self._on_cache_event)
            self._listening = self._cache

    def _stop_listening(self) -> None:
        if self._listening is not None:
            try:
                self._listening.remove_listener(self._on_cache_event)
            except ValueError:
                pass
            self._listening = None


async def serve_inspector(
    cache: Cache | None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve the inspector for ``cache``: ``server = await nursery.start(serve_inspector, cache,
    "127.0.0.1", 0)``; options are :class:`InspectorServer`'s keywords (``token``, ``origins``,
    ``chaos_control``, ``update_interval``, ...). Runs until cancelled."""
    server = InspectorServer(cache, host, port, **options)
    await server.run(task_status=task_status)
