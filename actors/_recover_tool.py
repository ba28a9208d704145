"""``writebehind recover --config FILE``: replay journals into the store and exit."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from ._config import Config
from ._errors import WritebehindError
from ._recover import RecoverReport, recover_journals
from ._store import store_factory


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recover",
        help="replay every journal into the store, then exit",
        description=(
            "Write every unflushed journal record into the store (idempotent: versioned "
            "upserts never move a key backwards), checkpoint the journals, and report counts. "
            "Run it with the cache stopped: the journals are locked while it works."
        ),
    )
    parser.add_argument("--config", required=True, help="the cache's TOML configuration")
    parser.add_argument(
        "--repair", action="store_true",
        help="truncate a corrupted journal at the damage (cut bytes kept in side files)",
    )
    parser.set_defaults(func=_run)


async def recover_with_config(config: Config, *, repair: bool = False) -> RecoverReport:
    """Replay ``config``'s journals into its store."""
    store = store_factory(
        config.store, table=config.store_table, timeout=config.store_timeout
    )()
    await trio.to_thread.run_sync(store.connect)
    try:
        return await recover_journals(
            config.journal_dir, store=store, batch_size=config.batch_size,
            repair=repair or config.repair_journal,
        )
    finally:
        store.close()


def _run(args: argparse.Namespace) -> int:
    try:
        config = Config.from_toml(args.config)
        report = trio.run(lambda: recover_with_config(config, repair=args.repair))
    except WritebehindError as exc:
        print(f"writebehind recover: {exc}", file=sys.stderr)
        return 1
    print(
        f"recovered {report.records} records from {report.shards} shard journals into "
        f"the store ({report.torn_tails} torn tails truncated)"
    )
    return 0
