"""Actor statuses and which may follow which, as data (h11 style).

Each kind of actor has a :class:`Lifecycle`: a table from a status to the statuses that may
follow it. :meth:`Lifecycle.advance` checks a change against the table *before* anything
changes, so an illegal one (a bug) fails loudly with both states named instead of leaving a
status the inspector would show as if it were true. Statuses are ``str`` enums: the inspector,
the metrics and the statistics carry the same strings as before.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs


class Status(enum.StrEnum):
    STARTING = "starting"  # built, not run yet
    REPLAYING = "replaying"  # a shard incarnation opens and replays its journal
    RUNNING = "running"
    RECONNECTING = "reconnecting"  # a store actor waits for its store
    DRAINING = "draining"  # the cache flushes and seals before it stops
    CRASHED = "crashed"  # the supervisor restarts it (or escalates)
    STOPPED = "stopped"


class IllegalTransition(RuntimeError):
    """A status change its lifecycle's table does not allow (a bug in the runtime)."""


@attrs.frozen
class Lifecycle:
    """Which status may follow which, for one kind of actor."""

    kind: str  # what the error messages call the actor
    initial: Status
    table: Mapping[Status, frozenset[Status]]

    def advance(self, current: Status, new: Status, who: str) -> Status:
        """``new`` if the table lets it follow ``current``, else raise
        :class:`IllegalTransition`; re-entering the current status is no change."""
        if new is not current and new not in self.table.get(current, frozenset()):
            allowed = sorted(s.value for s in self.table.get(current, frozenset()))
            raise IllegalTransition(
                f"{who}: a {self.kind} may not go from {current.value!r} to {new.value!r} "
                f"(from {current.value!r} only {', '.join(map(repr, allowed)) or 'nothing'})"
            )
        return new


S = Status

#: A shard: each incarnation replays, runs, then crashes (and is restarted) or stops. In
#: cluster mode a stopped shard (handed over) starts again when its partition comes back.
SHARD = Lifecycle("shard", S.STARTING, {
    S.STARTING: frozenset({S.REPLAYING}),
    S.REPLAYING: frozenset({S.RUNNING, S.CRASHED, S.STOPPED}),
    S.RUNNING: frozenset({S.CRASHED, S.STOPPED}),
    S.CRASHED: frozenset({S.REPLAYING}),
    S.STOPPED: frozenset({S.REPLAYING}),
})

#: A store actor: connects (retrying while the store is away), runs, reconnects after a
#: transient failure; a restart after a crash connects again.
STORE_ACTOR = Lifecycle("store actor", S.STARTING, {
    S.STARTING: frozenset({S.RUNNING, S.RECONNECTING}),
    S.RECONNECTING: frozenset({S.RUNNING, S.CRASHED, S.STOPPED}),
    S.RUNNING: frozenset({S.RECONNECTING, S.CRASHED, S.STOPPED}),
    S.CRASHED: frozenset({S.RUNNING, S.RECONNECTING}),
    S.STOPPED: frozenset(),
})

#: The cache: starts, serves, drains on a clean stop; a failed start or an escalation stops
#: it from wherever it is.
CACHE = Lifecycle("cache", S.STARTING, {
    S.STARTING: frozenset({S.RUNNING, S.STOPPED}),
    S.RUNNING: frozenset({S.DRAINING, S.STOPPED}),
    S.DRAINING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
})

del S
