"""Hosting: a member hosts exactly the partitions rendezvous assigns it over the live members.

Every renew interval the member reads who is live (``_membership.py``) and plans
(``_core/_membership.py``): each partition newly its own gets a task that hosts it
(:meth:`Cache.host`: take the lease, which waits while another member holds it; fence,
replay, serve) and then answers its routed calls while its shard serves (a crashed shard,
or one waiting to take its lease again, answers none until it serves again); each partition
no longer its own is handed over: unsubscribe (callers now meet no responder and retry),
:meth:`Cache.unhost` (flush to the store, checkpoint, stop), release the lease so the next
owner takes it at once. A member that joins thus takes only its share, and one that leaves
gives only its own.

A graceful leave (the cache stopping) deletes the member's key first, so the others start
taking its partitions over while it hands them over. A member that dies stops renewing its
key and its leases: the others see it lapse from the membership and take its partitions once
the leases expired (``LeaseEpochs.take_epoch`` waits for that). A cancelled member (a crash)
hands nothing over.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import nats.errors
import trio

from .._core._membership import plan
from .._runtime._cache import Cache
from ._epochs import LeaseEpochs
from ._membership import Membership
from ._routing import PartitionServer

log = logging.getLogger("writebehind")

#: How long to wait before subscribing again after a failed subscription.
RESUBSCRIBE = 0.2


@attrs.frozen
class MemberView:
    """A snapshot of one member, for statistics and the inspector."""

    member: str
    live: tuple[str, ...]  # the live members as last read, this one included
    hosted: tuple[int, ...]  # partitions served here now
    starting: tuple[int, ...]  # partitions assigned here, waiting for their lease or replay
    epochs: tuple[tuple[int, int], ...]  # (partition, epoch) of each lease held
    takeovers: int  # partitions taken from a member whose lease had expired
    handovers: int  # partitions handed over to another member
    acquisitions: int  # leases acquired or retaken
    renewals: int
    lost: int  # leases found taken over at renewal
    routed_served: int  # routed calls answered here
    routed_refused: int  # routed calls answered "not serving"
    routed_expired: int  # routed calls dropped: found past their caller's deadline
    routed_repeats: int  # routed writes asked again after they were applied here


@attrs.define
class _Hosted:
    """One partition's task: starting (``scope`` cancels it), then serving until ``stop``."""

    partition: int
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    stop: trio.Event = attrs.Factory(trio.Event)
    serving: bool = False


class Hosting:
    """Runs a member's share of the partitions in a cache. Hand :meth:`attach` to the cache
    as an attachment and :meth:`leave` as its ``on_stop``."""

    def __init__(self, membership: Membership, epochs: LeaseEpochs, server: PartitionServer,
                 *, partitions: int) -> None:
        self.membership = membership
        self.epochs = epochs
        self.server = server
        self.partitions = partitions
        self.member = membership.member
        self._cache: Cache | None = None
        self._nursery: trio.Nursery | None = None
        self._states: dict[int, _Hosted] = {}
        self._loop = trio.CancelScope()
        self._heartbeat = trio.CancelScope()
        self._idle = trio.Event()  # set while no partition task runs (for leave)
        self._idle.set()
        self.handovers = 0

    async def attach(self, cache: Cache, nursery: trio.Nursery) -> None:
        """Start serving routed calls, join the membership, and host this member's first
        share; returns once that share serves."""
        self._cache, self._nursery = cache, nursery
        await nursery.start(self.server.run, cache)
        await nursery.start(self._run_heartbeat)
        first = trio.Event()
        await nursery.start(self._run, first)
        await first.wait()

    async def _run_heartbeat(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with self._heartbeat:
            await self.membership.run(task_status=task_status)

    async def _run(self, first: trio.Event, *,
                   task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with self._loop:
            while True:
                try:
                    live = await self.membership.read()
                except nats.errors.Error as exc:
                    log.warning("reading the membership failed (%s); retrying", exc)
                else:
                    self._replan(live)
                replan_at = trio.current_time() + self.membership.renew_every
                # The first share: the cache opens once every partition planned here serves.
                # Planned again meanwhile: a member that joined since may have taken one of
                # them, and waiting for it alone kept a member from opening until a fault
                # moved that partition (the cluster suite saw starts delayed by 30-50 s).
                while not first.is_set() and trio.current_time() < replan_at:
                    if all(state.serving for state in self._states.values()
                           if not state.stop.is_set()):
                        first.set()
                    else:
                        await trio.sleep(0.01)
                await trio.sleep_until(replan_at)

    def _replan(self, live: frozenset[str]) -> None:
        assert self._nursery is not None
        change = plan(self.partitions, live, self.member, set(self._states))
        for partition in sorted(change.unhost):
            self._give_up(self._states[partition])
        for partition in sorted(change.host):
            state = self._states[partition] = _Hosted(partition)
            self._idle = trio.Event()
            self._nursery.start_soon(self._partition, state)
        if change.host or change.unhost:
            log.info("%s: live %s; hosting %d partitions (+%d, -%d)", self.member,
                     sorted(live), len(self._states) - len(change.unhost), len(change.host),
                     len(change.unhost))

    def _give_up(self, state: _Hosted) -> None:
        state.stop.set()
        if not state.serving:
            state.scope.cancel()  # still waiting for its lease or replaying: stop that

    async def _partition(self, state: _Hosted) -> None:
        assert self._cache is not None
        partition = state.partition
        try:
            with state.scope:
                await self._cache.host(partition)
                try:
                    await self.server.serve(partition)
                except nats.errors.Error as exc:
                    # Give it up for now (its lease too); the next plan hosts it again.
                    log.warning("%s: subscribing to partition %d's calls failed (%s); "
                                "handing it back", self.member, partition, exc)
                else:
                    state.serving = True
            if not state.serving:
                # Given up before it served: the lease may have been taken meanwhile.
                await self._cache.unhost(partition)
                await self.epochs.release(partition)
                return
            await self._follow(state)
            # The hand-over: callers first stop reaching this member (they retry), then
            # the shard flushes, checkpoints and stops, then the lease goes.
            began = trio.current_time()
            await self.server.stop_serving(partition)
            unsubscribed = trio.current_time()
            await self._cache.unhost(partition)
            unhosted = trio.current_time()
            await self.epochs.release(partition)
            self.handovers += 1
            log.info("%s handed partition %d over in %.3fs (unsubscribe %.3fs, flush and "
                     "stop %.3fs, release %.3fs)", self.member, partition,
                     trio.current_time() - began, unsubscribed - began, unhosted - unsubscribed,
                     trio.current_time() - unhosted)
        finally:
            del self._states[partition]
            if not self._states:
                self._idle.set()

    async def _follow(self, state: _Hosted) -> None:
        """Until the hand-over (``state.stop``): answer the partition's routed calls only
        while its shard serves. A shard that crashed, or lost its lease and waits to take
        it again, stops answering: its refusals would race the new owner's answers, and a
        caller hearing one first asks again (``_routing.py``); callers meet no responder
        instead, or the new owner alone."""
        assert self._cache is not None
        partition = state.partition
        shard = self._cache.hosted(partition)
        if shard is None:
            await state.stop.wait()
            return
        while await _unless(state.stop, partial(shard.wait_serving, False)):
            await self.server.stop_serving(partition)
            if not await _unless(state.stop, shard.wait_serving):
                return
            while True:
                try:
                    await self.server.serve(partition)
                    break
                except nats.errors.Error as exc:
                    log.warning("%s: subscribing to partition %d's calls again failed (%s); "
                                "retrying", self.member, partition, exc)
                    if not await _unless(state.stop, partial(trio.sleep, RESUBSCRIBE)):
                        return

    async def leave(self) -> None:
        """The graceful leave: stop renewing and delete this member's key (the others take
        its partitions over), then hand every partition over; returns once done."""
        began = trio.current_time()
        self._heartbeat.cancel()
        self._loop.cancel()
        await self.membership.leave()
        for state in list(self._states.values()):
            self._give_up(state)
        await self._idle.wait()
        log.info("%s left the cluster in %.3fs", self.member, trio.current_time() - began)

    def view(self) -> MemberView:
        serving = sorted(p for p, s in self._states.items() if s.serving)
        return MemberView(
            member=self.member,
            live=tuple(sorted(self.membership.live)),
            hosted=tuple(serving),
            starting=tuple(sorted(p for p, s in self._states.items() if not s.serving)),
            epochs=tuple(sorted((p, h.epoch) for p, h in self.epochs.held().items())),
            takeovers=self.epochs.leases.takeovers,
            handovers=self.handovers,
            acquisitions=self.epochs.acquired,
            renewals=self.epochs.renewals,
            lost=self.epochs.lost,
            routed_served=self.server.served,
            routed_refused=self.server.refused,
            routed_expired=self.server.expired,
            routed_repeats=self.server.repeats,
        )


async def _unless(stop: trio.Event, waiter: Callable[[], Awaitable[object]]) -> bool:
    """Await ``waiter()``; True once it returned, False if ``stop`` was set first (then the
    waiter is cancelled)."""
    finished = False
    async with trio.open_nursery() as nursery:
        async def watch() -> None:
            await stop.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await waiter()
        finished = True
        nursery.cancel_scope.cancel()
    return finished
