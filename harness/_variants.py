"""Deliberately broken runtimes: each breaks one rule the durability contract rests on.

They exist to prove the harness has teeth: a test runs each under the same plans the smoke
suite uses and asserts that at least one run FAILs. Each patch is undone when its context
manager exits; never use one outside a test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs
import trio

from writebehind import Rejection, StoreRecord
from writebehind._core._shard_core import ShardCore
from writebehind._journal import Journal

from ._memory_store import _Connection


@attrs.frozen
class BrokenVariant:
    """A named way to break the runtime; ``patch()`` is a context manager applying it."""

    name: str
    rule: str  # the rule it breaks, as a sentence
    patch: Callable[[], AbstractContextManager[Any]] = attrs.field(repr=False)


@contextlib.contextmanager
def _patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    original = owner.__dict__[name]
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


async def _no_wait(self: Journal, seq: int) -> None:
    await trio.lowlevel.checkpoint()


@contextlib.contextmanager
def _ack_before_journal_sync() -> Iterator[None]:
    with _patched(Journal, "wait_synced", _no_wait), _patched(Journal, "wait_written", _no_wait):
        yield


def _replay_nothing(self: ShardCore, records: Any, now: float) -> int:
    return 0


def _mark_everything(self: ShardCore) -> int:
    return self.last_seq


def _write_unconditionally(
    self: _Connection, records: Sequence[StoreRecord]
) -> tuple[Rejection, ...]:
    db = self.checked()
    for record in records:
        db.rows[record.key] = record
    db.transactions += 1
    return ()


def _nack_as_ack(self: ShardCore, batch_id: int, now: float) -> float:
    self.on_ack(batch_id)
    return 0.0


#: Every broken variant by name (``writebehind chaos run --variant NAME``).
BROKEN_VARIANTS: dict[str, BrokenVariant] = {
    v.name: v
    for v in (
        BrokenVariant(
            "ack_before_journal_sync",
            "a write is acknowledged only once its journal record is written (ack='journal') "
            "or synced (ack='fsync')",
            _ack_before_journal_sync,
        ),
        BrokenVariant(
            "skip_replay",
            "a restarted shard replays every journal record above the checkpoint",
            lambda: _patched(ShardCore, "replay", _replay_nothing),
        ),
        BrokenVariant(
            "checkpoint_too_early",
            "the journal is checkpointed only up to records the store has acknowledged",
            lambda: _patched(ShardCore, "persisted_mark", _mark_everything),
        ),
        BrokenVariant(
            "older_version_overwrites_newer",
            "a store write only moves a key's version forward",
            lambda: _patched(_Connection, "write_batch", _write_unconditionally),
        ),
        BrokenVariant(
            "nack_treated_as_ack",
            "a batch the store did not commit is retried, never counted as persisted",
            lambda: _patched(ShardCore, "on_nack", _nack_as_ack),
        ),
    )
}
