"""The inspector's pure core: what goes on the wire, who may connect, and each client's outbox.

No I/O and no clock here: the trio shell in ``_inspector`` feeds in statistics, events and
``now``, and sends whatever :meth:`ClientOutbox.next_message` hands back. The wire format is
specified in ``specs/inspector-protocol.md``.

Why an outbox per client rather than a channel: a channel would make a slow client either block
the producer (the cache) or lose the newest state. The outbox keeps *one* pending state message
(a newer one replaces it: coalescing) and a bounded queue of events (overflow drops the oldest
and reports how many). So memory per client is bounded and the cache never waits.
"""

from __future__ import annotations

import collections
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from .._core._addresses import is_loopback
from .._core._errors import ConfigError
from .._core._stats import CacheEvent, CacheStatistics

PROTOCOL_VERSION = 1
#: Event details are exception descriptions; cut them so one event cannot make a huge message.
MAX_DETAIL_CHARS = 2000
#: What a snapshot carries of the recent past, so a new client sees context at once.
RECENT_EVENTS = 50
#: The paths a WebSocket upgrade is accepted on; the page is served on ``/``.
WEBSOCKET_PATHS = ("/", "/ws")

Message = dict[str, Any]


def encode(message: Mapping[str, Any]) -> str:
    """One message as compact JSON text (one WebSocket text frame)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


# -- addresses and access ---------------------------------------------------------------------


def check_bind(host: str | None, token: str | None) -> None:
    """Refuse to expose the inspector beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"the inspector refuses to bind to {host or 'every interface'!r} without a token: "
            "anything but loopback (127.0.0.1, ::1, localhost) is reachable from other "
            "machines. Set a token (Config.inspector_token / serve_inspector(token=...)) or "
            "bind to 127.0.0.1."
        )


def allowed_origins(host: str | None, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """Browser origins that may connect: pages served by this inspector, plus ``extra``."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if host and host not in ("0.0.0.0", "::"):
        names.add(f"[{host}]" if ":" in host else host)
    return frozenset({f"http://{name}:{port}" for name in names} | set(extra))


@attrs.frozen
class Refusal:
    """Why a WebSocket handshake is refused: an HTTP status and a plain-sentence body."""

    status: int
    reason: str


def check_handshake(
    target: str,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    token: str | None,
    origins: frozenset[str],
) -> Refusal | None:
    """None if the handshake may proceed. ``target`` is the request path with its query."""
    parts = urlsplit(target)
    if parts.path not in WEBSOCKET_PATHS:
        return Refusal(404, f"no inspector endpoint at {parts.path!r}; connect to /ws")
    found = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    origins_sent = [name for name, _ in headers if name.decode("latin-1").lower() == "origin"]
    if len(origins_sent) > 1:
        # A browser sends one; with several, which one a check reads is a guess to exploit.
        return Refusal(403, "a handshake may carry one Origin header, not several")
    origin = found.get("origin")
    # Tools send no Origin; browsers always do, and only our own page's origin may read state.
    if origin is not None and origin not in origins:
        return Refusal(403, f"origin {origin!r} may not connect to this inspector")
    if token:
        offered = parse_qs(parts.query).get("token", [""])[-1]
        auth = found.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered = auth[len("bearer "):].strip()
        if not hmac.compare_digest(offered.encode(), token.encode()):
            return Refusal(401, "this inspector needs a token: ?token=... or Authorization: Bearer")
    return None


# -- messages ---------------------------------------------------------------------------------


def actors_of(stats: CacheStatistics | None) -> list[Message]:
    """The actor tree, flattened: the supervisor first, then shards, then store actors."""
    if stats is None:
        return []
    children = [s.name for s in stats.shards] + [s.name for s in stats.stores]
    actors: list[Message] = [
        {
            "name": "supervisor", "kind": "supervisor", "parent": None,
            "status": stats.status, "strategy": "one_for_one",
            "restarts": sum(s.restarts for s in stats.shards)
            + sum(s.restarts for s in stats.stores),
            "children": children,
        }
    ]
    for shard in stats.shards:
        entry: Message = {"kind": "shard", "parent": "supervisor"}
        entry.update(attrs.asdict(shard))
        entry["mailbox_depth"] = shard.mailbox_depth
        actors.append(entry)
    for store in stats.stores:
        entry = {"kind": "store", "parent": "supervisor"}
        entry.update(attrs.asdict(store))
        entry["mailbox_depth"] = stats.store_mailbox_depth
        actors.append(entry)
    return actors


def cache_of(stats: CacheStatistics | None) -> Message:
    """Cache-wide numbers; ``status`` is ``"detached"`` when no cache is attached."""
    if stats is None:
        return {"status": "detached"}
    return {
        "ack": stats.ack, "status": stats.status, "unpersisted": stats.unpersisted,
        "quarantined": stats.quarantined, "alerts": stats.alerts,
        "last_alert": stats.last_alert, "store_mailbox_depth": stats.store_mailbox_depth,
        "store": stats.store, "store_table": stats.store_table, "uptime": stats.uptime,
    }


def cluster_of(stats: CacheStatistics | None) -> Message | None:
    """The cluster member's view (``CacheStatistics.cluster``); None for a single process or
    no cache."""
    cluster = None if stats is None else stats.cluster
    if cluster is None:
        return None
    return {
        "cluster": cluster.cluster, "member": cluster.member, "live": list(cluster.live),
        "partitions": cluster.partitions, "hosted": list(cluster.hosted),
        "starting": list(cluster.starting), "owned": list(cluster.owned),
        "leases": [attrs.asdict(lease) for lease in cluster.leases],
        "acquisitions": cluster.acquisitions, "takeovers": cluster.takeovers,
        "handovers": cluster.handovers, "renewals": cluster.renewals,
        "losses": cluster.losses, "routed_served": cluster.routed_served,
        "routed_refused": cluster.routed_refused, "routed_expired": cluster.routed_expired,
        "routed_repeats": cluster.routed_repeats,
    }


def state_message(
    kind: str,
    stats: CacheStatistics | None,
    *,
    seq: int,
    now: float,
    recent: Iterable[Message] = (),
    chaos_control: bool = False,
    wall_time: float | None = None,
    rates: Mapping[str, Any] | None = None,
) -> Message:
    """A ``snapshot`` (first message, with recent events) or an ``update`` (same shape, no
    events): the whole state, so a client never has to merge partial updates. ``wall_time``
    is the Unix time at ``now``; ``rates`` what :class:`~._inspector_rates.RateWindow` says."""
    message: Message = {
        "type": kind, "protocol": PROTOCOL_VERSION, "seq": seq, "time": now,
        "wall_time": wall_time, "cache": cache_of(stats), "actors": actors_of(stats),
        "cluster": cluster_of(stats),
        "rates": None if rates is None else dict(rates),
    }
    if kind == "snapshot":
        message["events"] = list(recent)
        message["chaos_control"] = chaos_control
    return message


def event_message(event: CacheEvent, *, seq: int, wall_offset: float | None = None) -> Message:
    """One runtime event (or an inspector-made one such as ``alert``); ``wall_offset`` is Unix
    time minus the trio clock, to stamp the event with its ``wall_time``."""
    detail = event.detail
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + "…"
    return {
        "type": "event", "seq": seq, "kind": event.kind, "actor": event.actor,
        "detail": detail, "time": event.time,
        "wall_time": None if wall_offset is None else event.time + wall_offset,
    }


def reply_to(text: str | bytes, *, chaos_enabled: bool) -> Message | Mapping[str, Any]:
    """What a client's message asks for. Returns a reply message, or (for a valid chaos request
    with chaos control on) the request itself as a plain mapping with ``type == "chaos"``."""
    try:
        request = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return {"type": "error", "message": "messages must be JSON objects"}
    if not isinstance(request, dict):
        return {"type": "error", "message": "messages must be JSON objects"}
    kind = request.get("type")
    if kind == "ping":
        return {"type": "pong"}
    if kind == "chaos":
        if not chaos_enabled:
            return {
                "type": "error",
                "message": "this inspector is read-only: chaos control is not enabled",
            }
        return request
    return {
        "type": "error",
        "message": f"unknown request type {kind!r}; this inspector is read-only "
        "(accepted: 'ping', and 'chaos' when chaos control is enabled)",
    }


# -- one client's outbox ----------------------------------------------------------------------


class ClientOutbox:
    """What one client is owed, bounded whatever the client's speed.

    Invariants: at most one pending state message (the newest); at most ``max_events``
    pending events (overflow drops the oldest and counts it); state messages leave at least
    ``interval`` apart; events and replies leave as soon as the client takes them, before any
    state, so the feed stays in order.
    """

    def __init__(self, *, interval: float, max_events: int) -> None:
        self.interval = interval
        self.max_events = max_events
        self._state: Message | None = None
        self._events: collections.deque[Message] = collections.deque()
        self._next_state_at = float("-inf")
        self.dropped = 0  # dropped since the last "dropped" notice was taken
        self.dropped_total = 0
        self.sent_states = 0

    @property
    def pending_events(self) -> int:
        return len(self._events)

    def offer_state(self, message: Message) -> None:
        """Replace any unsent state: a slow client only ever gets the newest."""
        self._state = message

    def offer_event(self, message: Message) -> None:
        if len(self._events) >= self.max_events:
            self._events.popleft()
            self.dropped += 1
            self.dropped_total += 1
        self._events.append(message)

    def too_far_behind(self) -> bool:
        """More dropped than a whole queue's worth: the client is not keeping up at all."""
        return self.dropped > self.max_events

    def next_message(self, now: float) -> Message | float | None:
        """The next message to send; else the time a pending state may go; else None."""
        if self.dropped:
            count, self.dropped = self.dropped, 0
            return {"type": "dropped", "events": count}
        if self._events:
            return self._events.popleft()
        if self._state is None:
            return None
        if now < self._next_state_at:
            return self._next_state_at
        message, self._state = self._state, None
        self._next_state_at = now + self.interval
        self.sent_states += 1
        return message
