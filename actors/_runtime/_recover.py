"""Replay journals straight into the store: ``writebehind recover`` and shard-count changes."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from .._core._errors import StoreRejected
from .._core._messages import Rejection, StoreRecord
from .._journal import Journal, run_io
from .._journal._fs import FileSystem, OsFileSystem
from .._journal._recovery import describe_cuts
from .._journal._scan import MANIFEST_NAME
from .._stores._protocol import Store, rejections
from ._store_actor import call_store

log = logging.getLogger("writebehind")


@attrs.frozen
class RecoverReport:
    """What :func:`recover_journals` did."""

    shards: int
    records: int
    torn_tails: int
    retired: tuple[str, ...]
    #: Records the store refused for good: quarantined (in the store's quarantine table),
    #: and kept in their journals, whose checkpoints stop below them, until an operator
    #: retries or discards them (``writebehind quarantine``).
    quarantined: tuple[Rejection, ...] = ()


async def recover_journals(
    journal_dir: Path,
    *,
    store: Store,
    filesystem: Any = None,
    limiter: trio.CapacityLimiter | None = None,
    batch_size: int = 512,
    retire_above: int | None = None,
    repair: bool = False,
    on_cut: Callable[[str, str], None] | None = None,
) -> RecoverReport:
    """Write every unpersisted journal record into ``store`` (connected), then checkpoint.

    Versioned upserts make this idempotent: a record the store already holds, or holds
    something newer than, changes nothing. A record the store refuses for good is reported
    in the result and pins its journal's checkpoint (the records after it are written, and
    written again next time). Journal directories of shards above ``retire_above`` are
    removed once everything they held is in the store; one that holds a refused record
    raises :class:`StoreRejected` instead (it would be stranded). Every torn tail cut and
    repair goes to ``on_cut(kind, message)``, or to the log.
    """
    limiter = limiter or trio.CapacityLimiter(1)
    fs: FileSystem = filesystem if filesystem is not None else OsFileSystem()
    shards = records = torn = 0
    retired: list[str] = []
    quarantined: list[Rejection] = []
    # Listed through the journal's own file layer: a simulated disk holds its journals too.
    root = str(journal_dir)
    names = await run_io(fs, fs.listdir, root) if await run_io(fs, fs.exists, root) else []
    for name in sorted(n for n in names if n.startswith("shard-")):
        directory = Path(posixpath.join(root, name))
        try:
            shard = int(name.removeprefix("shard-"))
        except ValueError:
            continue
        journal = await Journal.open(directory, shard_id=shard, fs=filesystem, repair=repair)
        try:
            recovery = journal.recovery
            torn += recovery.torn_tail is not None
            for kind, message in describe_cuts(recovery):
                if on_cut is not None:
                    on_cut(kind, message)  # the cache raises it as an alert
                else:
                    log.warning("%s", message)
            pending = [StoreRecord(r.key, r.value, r.version) for r in recovery.records]
            refused: list[Rejection] = []
            for start in range(0, len(pending), batch_size):
                chunk = pending[start:start + batch_size]
                outcome = await call_store(store.blocking, limiter, store.write_batch, chunk)
                refused.extend(rejections(outcome))
            mark = _mark_below_refusals(recovery.records, refused, recovery.next_seq - 1)
            quarantined.extend(refused)
            if refused and retire_above is not None and shard > retire_above:
                raise StoreRejected(
                    f"cannot retire {directory}: the store refused {len(refused)} of its "
                    f"records for good (first: {refused[0].key!r}: {refused[0].reason}); "
                    "list them with `writebehind quarantine list --config FILE` and retry or "
                    "discard them, or keep the previous Config.shards until then"
                )
            if pending and mark > recovery.persisted_seq:
                async with trio.open_nursery() as nursery:
                    await nursery.start(journal.run)
                    await journal.wait_synced(journal.checkpoint_nowait(mark))
                    nursery.cancel_scope.cancel()
            shards += 1
            records += len(pending)
        finally:
            journal.close()
        if retire_above is not None and shard > retire_above:
            await run_io(fs, _remove_journal, fs, str(directory))
            retired.append(directory.name)
    if retired:
        # The removals are durable before the new layout file is written.
        await run_io(fs, fs.fsync_dir, root)
    return RecoverReport(shards, records, torn, tuple(retired), tuple(quarantined))


def _mark_below_refusals(records: Any, refused: list[Rejection], last: int) -> int:
    """The checkpoint: ``last``, or below the first refused record that is its key's newest
    in the journal (an older refused record is superseded by the newer one that landed)."""
    if not refused:
        return last
    refused_at = {(r.key, r.version) for r in refused}
    newest: dict[str, Any] = {}
    for record in records:
        newest[record.key] = record
    pinned = [r.seq for r in newest.values() if (r.key, r.version) in refused_at]
    return min(pinned) - 1 if pinned else last


def _remove_journal(fs: FileSystem, directory: str) -> None:
    # The manifest goes first, durably: a power loss amid the unlinks must not leave it
    # naming a segment that is already gone (that would read as a lost tail segment).
    manifest = posixpath.join(directory, MANIFEST_NAME)
    if fs.exists(manifest):
        fs.unlink(manifest)
        fs.fsync_dir(directory)
    for name in fs.listdir(directory):
        fs.unlink(posixpath.join(directory, name))
    fs.remove_dir(directory)

