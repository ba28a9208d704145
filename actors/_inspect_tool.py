"""``writebehind inspect URL``: a running cache's actors as a live terminal table (or the page)."""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def render(state: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> Group:
    """One screen: the cache line, the actor table, the latest events (newest last)."""
    cache = state.get("cache", {})
    head = Text.assemble(
        ("writebehind ", "bold"), f"cache {cache.get('status', '?')}",
        f"  ack {cache.get('ack', '?')}  unpersisted {_cell(cache.get('unpersisted'))}",
        f"  quarantined {_cell(cache.get('quarantined'))}  alerts {_cell(cache.get('alerts'))}",
    )
    table = Table(expand=False)
    for column in ("actor", "status", "mailbox", "dirty", "oldest dirty s", "acked", "synced",
                   "persisted", "journal", "restarts", "last error"):
        left = column in ("actor", "status", "last error")
        table.add_column(column, justify="left" if left else "right", no_wrap=not left)
    for actor in state.get("actors", []):
        shard = actor["kind"] == "shard"
        indent = "" if actor["kind"] == "supervisor" else "  "
        status = actor.get("status", "?")
        style = "green" if status == "running" else "yellow"
        table.add_row(
            f"{indent}{actor['name']}", Text(status, style=style),
            _cell(actor.get("mailbox_depth")),
            _cell(actor.get("dirty")), _cell(actor.get("oldest_dirty_age")),
            _cell(actor.get("acked_seq")), _cell(actor.get("synced_seq")),
            _cell(actor.get("persisted_seq")),
            f"{actor['journal_bytes']} B/{actor['journal_segments']}" if shard else "",
            _cell(actor.get("restarts")), Text(actor.get("last_error") or "", style="red"),
        )
    feed = Text()
    for event in events:
        feed.append(f"{event.get('kind', '?'):>12} ", style="bold")
        feed.append(f"{event.get('actor', '')}: {event.get('detail', '')}\n")
    return Group(head, table, feed)


async def watch(url: str, *, once: bool, console: Console) -> None:
    """Connect, show the snapshot, and (unless ``once``) keep the table live until stopped."""
    async with open_websocket_url(url, max_message_size=16 << 20) as ws:
        state: dict[str, Any] = json.loads(await ws.get_message())
        events: deque[Mapping[str, Any]] = deque(state.get("events", []), maxlen=SHOWN_EVENTS)
        if once:
            console.print(render(state, events))
            return
        with Live(render(state, events), console=console, refresh_per_second=4) as live:
            while True:
                message = json.loads(await ws.get_message())
                if message["type"] in ("snapshot", "update"):
                    state = message
                elif message["type"] == "event":
                    events.append(message)
                elif message["type"] == "dropped":
                    events.append({"kind": "dropped", "actor": "inspector",
                                   "detail": f"{message['events']} events not shown"})
                live.update(render(state, events))


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
