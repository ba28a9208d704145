"""``writebehind recover --config FILE``: replay journals into the store and exit."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from .._core._config import Config
from .._core._errors import WritebehindError
from .._runtime._recover import RecoverReport, recover_journals
from .._runtime._seams import Seams
from .._runtime._store_actor import call_store
from .._stores._registry import store_factory


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


async def recover_with_config(
    config: Config, *, repair: bool = False, seams: Seams | None = None
) -> RecoverReport:
    """Replay ``config``'s journals into its store (``seams``: a harness's disk and store)."""
    seams = seams or Seams()
    factory = seams.store_factory or store_factory(
        config.store, table=config.store_table, timeout=config.store_timeout
    )
    store = factory()
    await call_store(store.blocking, trio.CapacityLimiter(1), store.connect)
    try:
        return await recover_journals(
            config.journal_dir, store=store, filesystem=seams.filesystem,
            batch_size=config.batch_size, repair=repair or config.repair_journal,
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
    if report.quarantined:
        first = report.quarantined[0]
        print(
            f"writebehind recover: the store refused {len(report.quarantined)} records for "
            f"good (first: {first.key!r} version {first.version}: {first.reason}); they are "
            "quarantined and their journals keep them: see `writebehind quarantine list "
            f"--config {args.config}`, then retry or discard them",
            file=sys.stderr,
        )
    return 0
