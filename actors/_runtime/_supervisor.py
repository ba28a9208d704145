"""The supervisor: ``one_for_one`` restarts under a restart intensity, then escalation.

Strategy ``one_for_one``: a crashed child is restarted alone; its siblings never notice. The
restart hook is the child's own ``run``: a shard replays its journal, a store actor reconnects.
Intensity: more than ``max_restarts`` restarts within ``restart_period`` seconds (trio's clock)
escalates: :class:`TooManyRestarts` propagates, the cache's nursery cancels every actor, and the
service stops with that error. A child that fails before it ever started is a start-up error
and is not restarted. :meth:`Supervisor.stop` ends one child for good (no restart); its
siblings keep running.

``one_for_one`` is the only strategy, so it is not a setting: a ``one_for_all`` (a cluster
member that must restart its shards together) would come with its own code and its name.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from .._core._errors import Relinquished, TooManyRestarts, describe, leaves

log = logging.getLogger("writebehind")


class Child(Protocol):
    name: str
    restarts: int

    async def run(self, *, task_status: Any = ...) -> None: ...


class _StartOnce:
    """A task status that forwards only the first ``started()``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self._inner.started(value)


@attrs.define
class _Supervised:
    """A child's task under :meth:`Supervisor.supervise`: how to stop it, and when it ended."""

    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    ended: trio.Event = attrs.Factory(trio.Event)


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int,
        restart_period: float,
        on_event: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.max_restarts = max_restarts
        self.restart_period = restart_period
        self.restarts = 0
        self._recent: collections.deque[float] = collections.deque()
        self._on_event = on_event
        self._children: dict[Child, _Supervised] = {}

    def _event(self, kind: str, child: str, detail: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, child, detail)

    async def supervise(self, child: Child, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``child`` until it returns or is stopped, restarting it on each crash;
        ``nursery.start`` me."""
        if child in self._children:
            raise RuntimeError(f"{child.name} is already supervised")
        status = _StartOnce(task_status)
        supervised = self._children[child] = _Supervised()
        try:
            with supervised.scope:
                while True:
                    try:
                        await child.run(task_status=status)
                        return
                    except Exception as exc:
                        if not status.done:
                            raise
                        if supervised.scope.cancel_called:
                            # Stopping: a crash on the way out is told, not restarted.
                            log.warning("%s crashed while stopping: %s", child.name,
                                        describe(exc))
                            self._event("crash", child.name, describe(exc))
                            return
                        self._crashed(child, exc)
                    child.restarts += 1
                    self.restarts += 1
                    self._event("restart", child.name, f"restart #{child.restarts}")
        finally:
            del self._children[child]
            supervised.ended.set()

    async def stop(self, child: Child) -> None:
        """Stop ``child`` for good: cancel its run and return once its task has ended,
        without a restart; its siblings keep running. A child not supervised (never
        started, or ended already) is left as it is."""
        supervised = self._children.get(child)
        if supervised is None:
            await trio.lowlevel.checkpoint()
            return
        supervised.scope.cancel()
        await supervised.ended.wait()

    def _crashed(self, child: Child, exc: BaseException) -> None:
        found = leaves(exc, skip=trio.Cancelled)
        if found and all(isinstance(leaf, Relinquished) for leaf in found):
            detail = describe(exc)
            log.warning("%s gave up its work: %s; restarting (not counted as a crash)",
                        child.name, detail)
            self._event("crash", child.name, detail)
            return
        now = trio.current_time()
        recent = self._recent
        recent.append(now)
        while recent and recent[0] < now - self.restart_period:
            recent.popleft()
        detail = describe(exc)
        log.warning("%s crashed: %s", child.name, detail)
        self._event("crash", child.name, detail)
        if len(recent) > self.max_restarts:
            self._event("escalation", child.name, "restart intensity exceeded; stopping")
            raise TooManyRestarts(
                f"{child.name} crashed and the supervisor already restarted actors "
                f"{len(recent) - 1} times in the last {self.restart_period}s "
                f"(max_restarts={self.max_restarts}); the cache stopped. Last crash: {detail}"
            ) from exc

