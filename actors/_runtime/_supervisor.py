"""The supervisor: ``one_for_one`` restarts under a restart intensity, then escalation.

Strategy ``one_for_one``: a crashed child is restarted alone; its siblings never notice. The
restart hook is the child's own ``run``: a shard replays its journal, a store actor reconnects.
Intensity: more than ``max_restarts`` restarts within ``restart_period`` seconds (trio's clock)
escalates: :class:`TooManyRestarts` propagates, the cache's nursery cancels every actor, and the
service stops with that error. A child that fails before it ever started is a start-up error
and is not restarted.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio

from .._core._errors import TooManyRestarts, describe

log = logging.getLogger("writebehind")

ONE_FOR_ONE = "one_for_one"


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


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int,
        restart_period: float,
        on_event: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.strategy = ONE_FOR_ONE
        self.max_restarts = max_restarts
        self.restart_period = restart_period
        self.restarts = 0
        self._recent: collections.deque[float] = collections.deque()
        self._on_event = on_event

    def _event(self, kind: str, child: str, detail: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, child, detail)

    async def supervise(self, child: Child, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``child`` until it returns, restarting it on each crash; ``nursery.start`` me."""
        status = _StartOnce(task_status)
        while True:
            try:
                await child.run(task_status=status)
                return
            except Exception as exc:
                if not status.done:
                    raise
                self._crashed(child, exc)
            child.restarts += 1
            self.restarts += 1
            self._event("restart", child.name, f"restart #{child.restarts}")

    def _crashed(self, child: Child, exc: BaseException) -> None:
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

