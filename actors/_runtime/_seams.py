"""Seams the chaos harness injects faults through. With none attached they cost one
``is None`` test per point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .._stores._protocol import Store, StoreFactory

#: Every named step of the write and flush path, in the order a write meets them.
FAULT_POINTS: tuple[str, ...] = (
    "put.before_journal_append",
    "put.after_journal_append",
    "put.after_sync_before_ack",
    "flush.building_batch",
    "flush.before_send",
    "store.before_commit",
    "store.after_commit",
    "flush.after_ack_before_checkpoint",
    "journal.replay",
    "journal.segment_delete",
)

#: ``fault_point(name, actor)`` is called at each point; raising crashes that actor there.
FaultPointHook = Callable[[str, str], None]


@attrs.frozen(kw_only=True)
class Seams:
    """Where a harness plugs in. Every field defaults to "the real thing".

    ``fault_point`` is called as ``fault_point(point, actor_name)`` at every name in
    :data:`FAULT_POINTS`; an exception it raises crashes that actor at that point.
    ``wrap_store`` wraps each store a store actor connects with (a faulty store).
    ``filesystem`` is the journal's file layer (a simulated disk).
    ``store_factory`` replaces the store named by ``Config.store`` (a simulated store).
    ``wall_clock`` gives the seconds since the Unix epoch the store lease is timed by, and in
    cluster mode the partition leases and the membership (the cluster suite skews it).
    ``on_serving(shard, epoch)`` hears the moment a shard incarnation starts serving, its
    journal opened (in cluster mode: fenced) and replayed: the cluster suite's bound on when
    an older epoch must stop acknowledging.
    """

    fault_point: FaultPointHook | None = None
    wrap_store: Callable[[Store], Store] | None = None
    filesystem: Any = None
    store_factory: StoreFactory | None = None
    wall_clock: Callable[[], float] | None = None
    on_serving: Callable[[int, int], None] | None = None
