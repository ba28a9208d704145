"""The supervisor: one child stops for good while its siblings keep running."""

from typing import Any

import pytest
import trio

from writebehind import TooManyRestarts
from writebehind._runtime._supervisor import Supervisor


class Child:
    def __init__(self, name: str, *, crash_on_stop: bool = False) -> None:
        self.name = name
        self.restarts = 0
        self.runs = 0
        self.ended = 0
        self.crash_on_stop = crash_on_stop

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.ended += 1
            if self.crash_on_stop:
                raise RuntimeError(f"{self.name} fell over on the way out")


def supervisor(events: list[tuple[str, str, str]] | None = None) -> Supervisor:
    return Supervisor(
        max_restarts=3, restart_period=10.0,
        on_event=None if events is None else lambda *e: events.append(e),
    )


async def test_stop_ends_one_child_without_a_restart(autojump_clock: trio.abc.Clock) -> None:
    sup = supervisor()
    a, b = Child("a"), Child("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.supervise, a)
        await nursery.start(sup.supervise, b)
        await sup.stop(a)
        assert (a.runs, a.ended, a.restarts) == (1, 1, 0)  # its task ended, no restart
        await trio.sleep(5)
        assert (a.runs, b.runs, b.ended) == (1, 1, 0)  # the sibling still runs
        await sup.stop(a)  # stopping a stopped child changes nothing
        assert a.runs == 1 and sup.restarts == 0
        nursery.cancel_scope.cancel()
    assert b.ended == 1


async def test_a_child_that_crashes_while_stopping_is_not_restarted(
    autojump_clock: trio.abc.Clock,
) -> None:
    events: list[tuple[str, str, str]] = []
    sup = supervisor(events)
    a, b = Child("a", crash_on_stop=True), Child("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.supervise, a)
        await nursery.start(sup.supervise, b)
        await sup.stop(a)
        assert (a.runs, a.restarts, sup.restarts) == (1, 0, 0)
        assert [(kind, who) for kind, who, _ in events] == [("crash", "a")]
        assert b.ended == 0
        nursery.cancel_scope.cancel()


async def test_crashes_still_restart_and_escalate_alongside_stop(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Crasher(Child):
        async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            self.runs += 1
            task_status.started()
            await trio.sleep(1)
            raise RuntimeError("boom")

    sup = supervisor()
    crasher, other = Crasher("crasher"), Child("other")
    with pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.supervise, other)
            await nursery.start(sup.supervise, crasher)
            await sup.stop(other)
    assert info.group_contains(TooManyRestarts)
    assert crasher.runs == 4 and crasher.restarts == 3  # max_restarts=3, then escalation
    assert other.runs == 1 and other.ended == 1


async def test_one_child_is_supervised_once(autojump_clock: trio.abc.Clock) -> None:
    sup = supervisor()
    a = Child("a")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.supervise, a)
        with pytest.raises(RuntimeError, match="already supervised"):
            await sup.supervise(a)
        await sup.stop(a)
    assert a.runs == 1


class GivesUp:
    """A child that, once started, fails ``times`` times with ``error`` (in a group, as a
    shard's nursery raises it), then runs."""

    def __init__(self, error: Exception, times: int) -> None:
        self.name = "gives-up"
        self.restarts = 0
        self.error = error
        self.times = times

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.times:
            self.times -= 1
            await trio.sleep(0.1)
            raise ExceptionGroup("nursery", [self.error, self.error])
        await trio.sleep_forever()


async def test_giving_up_work_that_is_no_longer_ones_own_is_no_crash_loop(
    autojump_clock: trio.abc.Clock,
) -> None:
    from writebehind._core._errors import Relinquished

    events: list[tuple[str, str, str]] = []
    sup = supervisor(events)  # max_restarts=3
    child = GivesUp(Relinquished("partition 3's lease lapsed"), times=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.supervise, child)
        await trio.sleep(5)
        assert child.times == 0 and child.restarts == 10  # restarted, never escalated
        nursery.cancel_scope.cancel()
    # A real crash still counts.
    crashing = GivesUp(RuntimeError("boom"), times=10)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.supervise, crashing)
            await trio.sleep(5)
    assert caught.group_contains(TooManyRestarts)
    assert crashing.restarts == 3
