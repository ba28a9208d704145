"""``writebehind inspect URL``: a running cache's actors as a live terminal table (or the page)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import webbrowser
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

TOKEN_ENV = "WRITEBEHIND_INSPECTOR_TOKEN"
SHOWN_EVENTS = 8
#: Lines the table takes besides its rows: borders above and below, the column titles, and
#: the line under them.
TABLE_FRAME = 4
#: Fewest event lines kept on a short screen (fewer shard rows are shown first).
MIN_EVENTS = 3
#: How long ``--once`` waits for a state with rates before printing without them.
ONCE_RATES_WAIT = 2.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="watch a running cache's actors live (terminal table, or --open the page)",
        description=(
            "Connect to a cache's inspector (Config.inspector = 'HOST:PORT') and show every "
            "actor live: status, mailbox, dirty count and age, the acked/synced/persisted "
            "watermarks, journal size, restarts and the latest events. Read-only."
        ),
    )
    parser.add_argument("url", help="the inspector, e.g. ws://127.0.0.1:8765 (or HOST:PORT)")
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV),
        help=f"the inspector's token, if it has one (default: ${TOKEN_ENV})",
    )
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--open", action="store_true", help="open the page in a web browser")
    parser.set_defaults(func=_run)


def endpoints(url: str, token: str | None) -> tuple[str, str]:
    """``(websocket_url, page_url)`` for what a person typed: ws://, http:// or HOST:PORT."""
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    query = f"?token={quote(token, safe='')}" if token else ""
    ws = f"{'wss' if secure else 'ws'}://{parts.netloc}/ws{query}"
    page = f"{'https' if secure else 'http'}://{parts.netloc}/" + (
        f"#token={quote(token, safe='')}" if token else ""
    )
    return ws, page


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _rate(value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _seconds(value: Any) -> str:
    """A latency: ``0.41ms``, ``71ms``, ``1.20s``."""
    if not isinstance(value, int | float):
        return "–"
    if value >= 1:
        return f"{value:.2f}s"
    return f"{value * 1000:.0f}ms" if value >= 0.01 else f"{value * 1000:.2f}ms"


def _uptime(value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _clock(unix: float | None) -> str:
    return "" if unix is None else time.strftime("%H:%M:%S", time.localtime(unix))


def _wall(state: Mapping[str, Any], trio_time: Any) -> float | None:
    """A trio-clock time of the server's as Unix time (None for an older server)."""
    now, wall = state.get("time"), state.get("wall_time")
    if not (isinstance(trio_time, int | float) and isinstance(now, int | float)
            and isinstance(wall, int | float)):
        return None
    return float(wall - (now - trio_time))


def header(state: Mapping[str, Any], width: int | None = None) -> list[Text]:
    """The header: the cache and its store, then its rates, latencies and what needs a look.
    Two lines, or more on a narrow terminal (``width``): every figure stays on screen rather
    than the alerts and quarantine counts falling off the end."""
    cache = state.get("cache", {})
    store = cache.get("store")
    first = [Text.assemble(("writebehind ", "bold"), f"cache {cache.get('status', '?')}"),
             Text(f"ack {cache.get('ack', '?')}"), Text(f"up {_uptime(cache.get('uptime'))}")]
    if store:
        first.append(Text(f"store {store} ({cache.get('store_table', '?')})"))
    rates = state.get("rates") or {}
    ack, flush = rates.get("ack_latency") or {}, rates.get("flush_latency") or {}
    second = [
        Text.assemble(("puts/s ", "dim"), (_rate(rates.get("puts_per_second")), "bold")),
        Text.assemble(("rows/s ", "dim"), (_rate(rates.get("rows_per_second")), "bold")),
        Text.assemble(("batches/s ", "dim"), (_rate(rates.get("batches_per_second")), "bold")),
        Text.assemble(("ack p50/p99 ", "dim"),
                      f"{_seconds(ack.get('p50'))}/{_seconds(ack.get('p99'))}"),
        Text.assemble(("flush p50/p99 ", "dim"),
                      f"{_seconds(flush.get('p50'))}/{_seconds(flush.get('p99'))}"),
        Text(f"unpersisted {_cell(cache.get('unpersisted'))}"),
        Text(f"quarantined {_cell(cache.get('quarantined'))}"),
        Text(f"alerts {_cell(cache.get('alerts'))}"),
    ]
    cluster = cluster_parts(state)
    return _pack(first, width) + _pack(second, width) + (_pack(cluster, width) if cluster
                                                         else [])


def cluster_parts(state: Mapping[str, Any]) -> list[Text]:
    """A cluster member's figures (none for a single process, or an older server): who it
    is, its partitions, the epochs and the time its leases leave it, and the lease counters."""
    cluster = state.get("cluster")
    if not cluster:
        return []
    leases = cluster.get("leases") or []
    epochs = sorted(int(lease["epoch"]) for lease in leases)
    window = min((float(lease["acknowledge_for"]) for lease in leases), default=None)
    parts = [
        Text.assemble(("cluster ", "bold"), f"{cluster.get('cluster', '?')}"),
        Text(f"member {cluster.get('member', '?')}"),
        Text(f"live {len(cluster.get('live') or [])}"),
        Text(f"partitions hosted {len(cluster.get('hosted') or [])}"
             f"/{_cell(cluster.get('partitions'))}"),
    ]
    if cluster.get("starting"):
        parts.append(Text(f"starting {len(cluster['starting'])}", style="yellow"))
    if epochs:
        parts.append(Text("epoch " + (f"{epochs[0]}" if epochs[0] == epochs[-1]
                                      else f"{epochs[0]}-{epochs[-1]}")))
    if window is not None:
        # The least time any held lease leaves it to acknowledge: near 0, renewals fail.
        parts.append(Text.assemble(("acks for ", "dim"), (f"{max(0.0, window):.1f}s",
                                   "bold" if window > 1.0 else "bold red")))
    for name, label in (("takeovers", "take-overs"), ("handovers", "hand-overs"),
                        ("losses", "losses"), ("routed_served", "routed in")):
        parts.append(Text(f"{label} {_cell(cluster.get(name))}"))
    return parts


def _pack(parts: list[Text], width: int | None) -> list[Text]:
    """``parts`` two spaces apart, on as few lines of ``width`` as they fit (one part too
    long for a line of its own, a long store URL, ends in an ellipsis)."""
    lines = [Text(no_wrap=True, overflow="ellipsis")]
    for part in parts:
        line = lines[-1]
        if line.plain and width is not None and len(line) + 2 + len(part) > width:
            line = Text(no_wrap=True, overflow="ellipsis")
            lines.append(line)
        if line.plain:
            line.append("  ")
        line.append_text(part)
    return lines


def _lag(actor: Mapping[str, Any]) -> int:
    return max(0, int(actor.get("acked_seq", 0)) - int(actor.get("persisted_seq", 0)))


def shown_actors(
    actors: list[Mapping[str, Any]], rows: int | None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(shown, hidden)``: every actor if they fit in ``rows``, else the supervisor, the
    store actors and the shards most worth a look (not running, then the largest persisted
    lag), in their usual order, with one row left to say what is hidden."""
    if rows is None or len(actors) <= rows:
        return actors, []
    shards = [a for a in actors if a.get("kind") == "shard"]
    others = [a for a in actors if a.get("kind") != "shard"]
    room = max(0, rows - 1 - len(others))
    ranked = sorted(shards, key=lambda a: (a.get("status") == "running", -_lag(a)))
    keep = {id(a) for a in ranked[:room]}
    shown = [a for a in actors if a.get("kind") != "shard" or id(a) in keep]
    return shown, [a for a in shards if id(a) not in keep]


#: The table's columns: title, and the order they are given up in on a narrow screen (0:
#: never; higher goes first). The last error takes what width is left.
COLUMNS = (
    ("actor", 0), ("status", 0), ("mbox", 4), ("dirty", 1), ("age s", 3), ("acked", 1),
    ("synced", 3), ("persisted", 2), ("lag", 0), ("journal", 4), ("rst", 2), ("last error", 0),
)
#: Narrowest the last error column is squeezed to before other columns are given up.
ERROR_WIDTH = 24


def _row(state: Mapping[str, Any], actor: Mapping[str, Any]) -> list[Text]:
    shard = actor["kind"] == "shard"
    status = actor.get("status", "?")
    error = actor.get("last_error") or ""
    if error and (at := _wall(state, actor.get("last_error_time"))) is not None:
        error = f"{_clock(at)} {error}"
    cells = [
        ("" if actor["kind"] == "supervisor" else "  ") + actor["name"], status,
        _cell(actor.get("mailbox_depth")), _cell(actor.get("dirty")),
        _cell(actor.get("oldest_dirty_age")), _cell(actor.get("acked_seq")),
        _cell(actor.get("synced_seq")), _cell(actor.get("persisted_seq")),
        str(_lag(actor)) if shard else "",
        f"{actor['journal_bytes']} B/{actor['journal_segments']}" if shard else "",
        _cell(actor.get("restarts")), error,
    ]
    row = [Text(cell) for cell in cells]
    row[1].stylize("green" if status == "running" else "yellow")
    row[-1].stylize("red")
    return row


def _table(rows: list[list[Text]], width: int | None) -> Table:
    """The actor table; with a ``width``, the columns given up first are left out until every
    row fits on one line of that width."""
    needed = [max([len(title), *(len(row[i]) for row in rows)]) + 3
              for i, (title, _) in enumerate(COLUMNS)]
    keep = list(range(len(COLUMNS)))
    if width is not None:
        by_priority = sorted(keep, key=lambda i: (-COLUMNS[i][1], -i))
        for i in by_priority:
            used = sum(needed[j] for j in keep[:-1]) + 1
            if COLUMNS[i][1] == 0 or used + min(needed[-1], ERROR_WIDTH) <= width:
                break
            keep.remove(i)
    table = Table(expand=False)
    for i in keep:
        title = COLUMNS[i][0]
        left = title in ("actor", "status", "last error")
        last = i == len(COLUMNS) - 1
        room = None if width is None else max(
            4, width - sum(needed[j] for j in keep[:-1]) - 4)
        table.add_column(
            title, justify="left" if left else "right", no_wrap=True, overflow="ellipsis",
            min_width=None if last else needed[i] - 3, max_width=room if last else None,
        )
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    return table


def render(
    state: Mapping[str, Any], events: Iterable[Mapping[str, Any]], *,
    height: int | None = None, width: int | None = None,
) -> Group:
    """One screen: the header lines, the actor table, the latest events (newest last). With a
    ``height`` and ``width`` (the terminal's), everything fits: the header first, then the
    table (the shards most worth a look when not all fit, the columns that matter most when
    not all do), then as many events as fit."""
    events = list(events)
    actors = list(state.get("actors", []))
    top = header(state, width)
    event_lines = len(events)
    rows: int | None = None
    if height is not None:
        room = height - len(top) - TABLE_FRAME  # for table rows and events
        event_lines = min(event_lines, max(MIN_EVENTS, room - len(actors)))
        rows = max(1, room - event_lines)
    shown, hidden = shown_actors(actors, rows)
    if height is not None:
        event_lines = min(len(events), max(0, height - len(top) - TABLE_FRAME - len(shown)
                                           - (1 if hidden else 0)))
    table_rows = [_row(state, actor) for actor in shown]
    if hidden:
        running = sum(a.get("status") == "running" for a in hidden)
        more = [Text(f"  +{len(hidden)} shards"), Text(f"{running} ok")] + [
            Text("") for _ in COLUMNS[2:]]
        more[COLUMNS.index(("lag", 0))] = Text(f"≤{max(_lag(a) for a in hidden)}")
        for cell in more:
            cell.stylize("dim")
        table_rows.append(more)
    feed = Text(no_wrap=True, overflow="ellipsis")
    for event in events[len(events) - event_lines:] if event_lines else []:
        at = event.get("wall_time")
        if not isinstance(at, int | float):
            at = _wall(state, event.get("time"))
        feed.append(f"{_clock(at):8} ", style="dim")
        feed.append(f"{event.get('kind', '?'):>12} ", style="bold")
        feed.append(f"{event.get('actor', '')}: {event.get('detail', '')}\n")
    feed.rstrip()
    return Group(*top, _table(table_rows, width), feed)


def _take(message: dict[str, Any], state: dict[str, Any],
          events: deque[Mapping[str, Any]]) -> dict[str, Any]:
    """The newest state after ``message`` (an event goes to ``events``)."""
    if message["type"] in ("snapshot", "update"):
        return message
    if message["type"] == "event":
        events.append(message)
    elif message["type"] == "dropped":
        events.append({"kind": "dropped", "actor": "inspector",
                       "detail": f"{message['events']} events not shown",
                       "wall_time": time.time()})
    return state


async def watch(url: str, *, once: bool, console: Console) -> None:
    """Connect, show the snapshot, and (unless ``once``) keep the table live until stopped."""
    async with open_websocket_url(url, max_message_size=16 << 20) as ws:
        state: dict[str, Any] = json.loads(await ws.get_message())
        events: deque[Mapping[str, Any]] = deque(state.get("events", []), maxlen=SHOWN_EVENTS)
        if once:
            # Rates take two samples: a snapshot right after a quiet spell has none yet, and
            # the next update (a tenth of a second later) has them. An older server never does.
            with trio.move_on_after(ONCE_RATES_WAIT):
                while not state.get("rates"):
                    state = _take(json.loads(await ws.get_message()), state, events)
            console.print(render(state, events))
            return
        screen = render(state, events, height=console.size.height, width=console.size.width)
        with Live(screen, console=console, refresh_per_second=4) as live:
            while True:
                state = _take(json.loads(await ws.get_message()), state, events)
                live.update(render(
                    state, events, height=console.size.height, width=console.size.width
                ))


def _run(args: argparse.Namespace) -> int:
    ws_url, page_url = endpoints(args.url, args.token)
    if args.open:
        print(f"opening {page_url.split('#')[0]}")
        webbrowser.open(page_url)
        return 0
    try:
        # Piped output (a log, a test) gets room for every column instead of 80 characters.
        console = Console() if sys.stdout.isatty() else Console(width=200)
        trio.run(lambda: watch(ws_url, once=args.once, console=console))
    except KeyboardInterrupt:
        return 0
    except ConnectionRejected as exc:
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        if exc.status_code == 401:
            # The server's message is for browsers and scripts (?token=); say what the CLI takes.
            body = (
                "the inspector refused this token: check --token (or $" + TOKEN_ENV + ")"
                if args.token else
                "this inspector needs a token: pass --token TOKEN (or set $" + TOKEN_ENV + ")"
            )
        print(f"writebehind inspect: refused ({exc.status_code}): {body}", file=sys.stderr)
        return 1
    except ConnectionClosed as exc:
        print(f"writebehind inspect: the inspector closed the connection: {exc.reason}",
              file=sys.stderr)
        return 1
    except (OSError, HandshakeError) as exc:
        print(f"writebehind inspect: cannot reach {args.url}: {reason(exc)}", file=sys.stderr)
        return 1
    return 0


def reason(exc: BaseException) -> str:
    """Why a connection failed, from the whole cause chain: trio-websocket's HandshakeError
    carries no message of its own, and trio's "all attempts failed" hides each attempt's."""
    texts: list[str] = []
    refused = False
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions[:1])
        else:
            refused = refused or isinstance(current, ConnectionRefusedError)
            text = (current.strerror if isinstance(current, OSError) and current.strerror
                    else str(current).strip())
            if text and text not in texts:
                texts.append(text)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    message = "; ".join(texts) or type(exc).__name__
    if refused:
        message += " (nothing listens there: is the cache running with Config.inspector set?)"
    return message
