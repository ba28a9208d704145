"""``writebehind quarantine list|retry|discard --config FILE``: records the store refused.

A record the store refuses for good (a value over a limit, a constraint, a key its text type
cannot hold) is *quarantined*: kept in its shard's journal, whose checkpoint it pins, and
written to the store's quarantine table (``<table>_quarantine``). This tool reads and edits
that table; the decision takes effect where the record is written next:

- ``discard``: the operator gives the write up. From then on the store answers that record
  as superseded: the shard drops it, reads return what the store holds, and the journal's
  checkpoint passes it (at the cache's next start, or the next ``writebehind recover``).
- ``retry``: the table forgets the refusal, so the record is tried afresh at the next start
  (or ``recover``); refused again, it is quarantined again.

In a running process, ``Cache.discard_quarantined()`` and ``Cache.retry_quarantined()`` do the
same at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from .._core._config import Config
from .._core._errors import WritebehindError
from .._runtime._store_actor import call_store
from .._stores._protocol import DISCARD, QuarantineRow
from .._stores._registry import store_factory


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quarantine",
        help="list, retry or discard records the store refused for good",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("list", "retry", "discard"))
    parser.add_argument("--config", required=True, help="the cache's TOML configuration")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--key", action="append", default=None,
        help="only this key (repeatable); as `list` shows it",
    )
    which.add_argument("--all", action="store_true", help="every pending record")
    parser.set_defaults(func=_run)


async def quarantine_action(
    config: Config, action: str, keys: list[str] | None = None
) -> list[QuarantineRow] | int:
    """``list``: every row of the store's quarantine table; ``retry``/``discard``: how many
    rows (of ``keys``, or all) the action changed."""
    store: Any = store_factory(
        config.store, table=config.store_table, timeout=config.store_timeout
    )()
    limiter = trio.CapacityLimiter(1)
    await call_store(store.blocking, limiter, store.connect)
    try:
        if action == "list":
            rows: list[QuarantineRow] = await call_store(
                store.blocking, limiter, store.quarantine_rows
            )
            return rows
        changed: int = await call_store(
            store.blocking, limiter, store.resolve_quarantine, action, keys
        )
        return changed
    finally:
        store.close()


def _run(args: argparse.Namespace) -> int:
    if args.action != "list" and args.key is None and not args.all:
        print(
            f"writebehind quarantine {args.action}: say which records: --key KEY "
            "(repeatable) or --all",
            file=sys.stderr,
        )
        return 2
    try:
        config = Config.from_toml(args.config)
        result = trio.run(quarantine_action, config, args.action, args.key)
    except WritebehindError as exc:
        print(f"writebehind quarantine: {exc}", file=sys.stderr)
        return 1
    if isinstance(result, list):
        if not result:
            print("the quarantine is empty")
        for row in result:
            state = "pending" if row.resolution is None else row.resolution + "ed"
            print(f"{row.key!r} version {row.version} [{state}] at {row.at}: {row.reason}")
        return 0
    verb = "discarded" if args.action == DISCARD else "put back in line"
    print(
        f"{result} quarantined records {verb}; the cache applies this when it next writes "
        "them: at its next start, or `writebehind recover --config FILE`"
    )
    return 0
