"""Routing: a call on a key whose partition another member hosts reaches that member.

Each partition has a request subject, ``wbrpc.<cluster>.<partition>`` (outside the journal
stream's ``wb.<cluster>.p.*``, which JetStream captures). The member hosting a partition
subscribes to its subject while it serves it (:class:`PartitionServer`) and answers each
request through its own shard, under the same contract as a local call. Any other member's
cache holds a :class:`RemotePartition` in that shard's place: its calls become requests
(``_core/_wire.py``). No member keeps a table of owners: whoever subscribes answers.

A request that meets no responder (nobody hosts the partition right now: a hand-over or a
take-over is under way) or a "not serving" answer is asked again, with a bounded, seeded
backoff, until the routing deadline (about the lease TTL plus a margin: the longest a
partition stays without an owner while some member is alive); then
:class:`PartitionUnavailable`, and nothing was written. A write whose request got no answer
in time may or may not have happened: :class:`~writebehind.ShardCrashed`, as when a local
shard crashes under a write. So may a write answered "not serving" by some member: a
request reaches every subscriber of the subject, and while a partition moves (a former
owner woken from a pause, or one whose clock runs ahead) two may subscribe, one refusing
while the other applies it. Such a write is asked again like the others, and if the
deadline comes it is :class:`~writebehind.ShardCrashed`, not "nothing was written". A read
is simply asked again.

Asking a write again must not apply it twice (a value written twice could come back after a
newer write overwrote its first copy: the cluster suite caught exactly that, a refusal from a
former owner and the owner's application racing, the caller asking again for 9 s and the
owner applying each time). So every attempt of one write carries the same *call name* (the
caller's member name and a counter), and the :class:`PartitionServer` remembers the calls
it applied, for as long as their callers may ask again: a repeat gets the first answer,
or waits for it while the first is still being applied. A member only subscribes to a
partition's subject while its shard serves it (``_hosting.py``), so the refusals that make a
caller ask again come only from members in the middle of losing or gaining it.

Subscription callbacks run on the asyncio loop's thread: they only hand the request to trio
(through the trio token, into a bounded channel) and return; a full channel is answered
"not serving" (the caller backs off). Replies are published without waiting.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import nats.errors
import trio

from .._core._errors import (
    CacheClosed,
    PartitionMoved,
    PartitionUnavailable,
    ShardCrashed,
    StoreRejected,
    WritebehindError,
)
from .._core._messages import Receipt
from .._core._wire import Op, Reply, ReplyStatus, Request, WireError
from .._runtime._cache import Cache
from ._bridge import NatsConnection
from ._epochs import LeaseEpochs

log = logging.getLogger("writebehind")

#: The backoff between attempts while nobody serves a partition: doubling from the first
#: to the last, each drawn between half and all of it (seeded).
FIRST_BACKOFF = 0.005
MAX_BACKOFF = 0.25
#: Routed requests waiting for a task, and handled at once, per member.
QUEUE = 1024
CONCURRENCY = 256
#: Applied calls a member remembers at most (beyond it, the oldest are forgotten first).
REMEMBERED_CALLS = 200_000


def rpc_subject(cluster: str, partition: int) -> str:
    return f"wbrpc.{cluster}.{partition}"


class RemotePartition:
    """A partition another member hosts, in a cache's shard table: every call is a request
    to whoever hosts it (see the module's docstring for retries and errors)."""

    def __init__(self, conn: NatsConnection, cluster: str, partition: int, *,
                 deadline: float, rng: random.Random,
                 call_name: Callable[[], bytes]) -> None:
        """``call_name`` names each write, uniquely in the cluster (see the module's
        docstring)."""
        self._conn = conn
        self._subject = rpc_subject(cluster, partition)
        self._partition = partition
        self._deadline = deadline
        self._rng = rng
        self._call_name = call_name
        self.retries = 0

    @property
    def shard(self) -> int:
        return self._partition

    def incarnation_serving(self) -> int | None:
        return 0  # the owner's incarnations are its own business; the call's reply says all

    async def write(self, key: str, value: bytes | None, raw_key: bytes) -> Receipt:
        reply = await self._call(Request(Op.WRITE, self._partition, (key,), (value,),
                                         call=self._call_name()), idempotent=False)
        return self._receipts(reply, [key])[0]  # type: ignore[return-value]

    async def write_many(
        self, items: Sequence[tuple[str, bytes | None, bytes]]
    ) -> list[Receipt | StoreRejected]:
        keys = [key for key, _, _ in items]
        request = Request(Op.WRITE_MANY, self._partition, tuple(keys),
                          tuple(value for _, value, _ in items), call=self._call_name())
        return self._receipts(await self._call(request, idempotent=False), keys)

    async def get(self, key: str) -> bytes | None:
        reply = await self._call(Request(Op.GET, self._partition, (key,)), idempotent=True)
        self._expect(reply, values=1)
        return reply.values[0]

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        reply = await self._call(Request(Op.GET_MANY, self._partition, tuple(keys)),
                                 idempotent=True)
        self._expect(reply, values=len(keys))
        return dict(zip(keys, reply.values, strict=True))

    async def flush(self) -> None:
        await self._call(Request(Op.FLUSH, self._partition), idempotent=True)

    async def wait_persisted(self, receipt: Receipt) -> None:
        await self._call(Request(Op.WAIT_PERSISTED, self._partition, (receipt.key,),
                                 version=receipt.version, seq=receipt.seq), idempotent=True)

    def _receipts(self, reply: Reply, keys: list[str]) -> list[Receipt | StoreRejected]:
        self._expect(reply, receipts=len(keys))
        out: list[Receipt | StoreRejected] = []
        for key, receipt in zip(keys, reply.receipts, strict=True):
            if isinstance(receipt, str):
                out.append(StoreRejected(receipt))
            else:
                out.append(Receipt(key, receipt[0], self._partition, receipt[1]))
        return out

    def _expect(self, reply: Reply, *, receipts: int = 0, values: int = 0) -> None:
        if len(reply.receipts) != receipts or len(reply.values) != values:
            raise WireError(f"partition {self._partition}: the owner's reply holds "
                            f"{len(reply.receipts)} receipts and {len(reply.values)} values, "
                            f"expected {receipts} and {values}")

    async def _call(self, request: Request, *, idempotent: bool) -> Reply:
        now = trio.current_time
        give_up = now() + self._deadline
        backoff = FIRST_BACKOFF
        why = "no member answered"
        answered = False  # some member received the request: another may have applied it
        while True:
            remaining = give_up - now()
            if remaining <= 0:
                if answered and not idempotent:
                    raise ShardCrashed(
                        f"partition {self._partition}: no member served it within "
                        f"{self._deadline:.1f}s (last: {why}), but the request reached a "
                        "member, and while a partition moves another may have applied it: "
                        "the write may or may not have happened; retry it"
                    )
                raise PartitionUnavailable(
                    f"partition {self._partition}: no member served it within "
                    f"{self._deadline:.1f}s (last: {why}); nothing was written. Is the "
                    "cluster up? Retry later"
                )
            # A read asks again after a quarter of the deadline (its owner may be paused or
            # dead: the next attempt reaches the next one); a write waits as long as it may,
            # since asking again could apply it twice.
            timeout = min(remaining, self._deadline / 4) if idempotent else remaining
            payload = attrs.evolve(request, expires=time.time() + timeout).encode()
            settled = now() + timeout  # no member applies it after this (its ``expires``)
            try:
                message = await self._conn.run(self._conn.client.request, self._subject,
                                               payload, timeout=timeout)
            except nats.errors.NoRespondersError:
                why = "no member hosts it"
            except nats.errors.Error as exc:
                if not idempotent:
                    # Sent, perhaps served, answer lost: the outcome is unknown. Told once it
                    # is settled, so a caller that reads or writes the key again is never
                    # overtaken by this write landing late.
                    await trio.sleep_until(settled)
                    raise ShardCrashed(
                        f"partition {self._partition}: its owner did not answer ({exc!r}); "
                        "the write may or may not have happened; retry it"
                    ) from exc
                why = repr(exc)
            else:
                reply = Reply.decode(message.data)
                if reply.status is ReplyStatus.OK:
                    return reply
                if reply.status is ReplyStatus.ERROR:
                    raise reply.exception()
                why = reply.message
                answered = True
            self.retries += 1
            await trio.sleep(min(backoff * (0.5 + self._rng.random() / 2),
                                 max(0.0, give_up - now())))
            backoff = min(backoff * 2, MAX_BACKOFF)


@attrs.define
class _Call:
    """An applied (or being applied) write call: its answer once there is one, and until
    when it is remembered (trio time)."""

    reply: Reply | None = None
    done: trio.Event | None = None  # made when a repeat waits for the first attempt
    until: float = float("inf")


class PartitionServer:
    """Answers routed calls for the partitions this member hosts, through ``cache``'s own
    shards. Start :meth:`run` (the dispatcher) first; then :meth:`serve` and
    :meth:`stop_serving` each partition as it is hosted and handed over."""

    def __init__(self, conn: NatsConnection, cluster: str, member: str, *,
                 epochs: LeaseEpochs | None = None, drift: float = 0.0,
                 remember: float = 60.0) -> None:
        """With ``epochs``, a call is answered only while this member may still
        acknowledge on the partition's lease; ``drift`` is the clock-drift margin a
        request's ``expires`` is judged with; ``remember``: how long an applied write call
        is remembered after its answer (longer than its caller keeps asking)."""
        self._conn = conn
        self._epochs = epochs
        self._drift = drift
        self._cluster = cluster
        self._member = member
        self._cache: Cache | None = None
        self._subscriptions: dict[int, Any] = {}
        self._send, self._receive = trio.open_memory_channel[tuple[int, str, bytes]](QUEUE)
        self._slots = trio.Semaphore(CONCURRENCY)
        self._remember = remember
        self._calls: collections.OrderedDict[tuple[int, bytes], _Call] = \
            collections.OrderedDict()
        self.served = 0
        self.refused = 0  # answered "not serving" (not hosted, moved, busy)
        self.expired = 0  # dropped unanswered: found past the caller's deadline
        self.repeats = 0  # write calls asked again after this member applied them

    async def run(self, cache: Cache, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Handle the routed requests, each in its own task (at most ``CONCURRENCY`` at
        once), until cancelled."""
        self._cache = cache
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for partition, reply_to, data in self._receive:
                await self._slots.acquire()
                nursery.start_soon(self._handle, partition, reply_to, data)

    async def serve(self, partition: int) -> None:
        """Subscribe to ``partition``'s subject (its shard serves here now)."""
        if partition in self._subscriptions:
            return
        token = trio.lowlevel.current_trio_token()
        arrived = self._arrived

        async def on_message(msg: Any) -> None:  # on the asyncio loop: hand over, return
            try:
                token.run_sync_soon(arrived, partition, msg.reply, msg.data)
            except trio.RunFinishedError:
                pass

        self._subscriptions[partition] = await self._conn.run(
            self._conn.client.subscribe, rpc_subject(self._cluster, partition), cb=on_message
        )

    async def stop_serving(self, partition: int) -> None:
        """Unsubscribe from ``partition``'s subject (before its shard is handed over).
        Drained, not dropped: a request the server routed here before the unsubscription
        is still answered (a plain unsubscribe discards it, and its caller would wait out
        its deadline and hear that its write may or may not have happened)."""
        subscription = self._subscriptions.pop(partition, None)
        if subscription is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self._conn.run(subscription.drain)
            except nats.errors.Error as exc:
                log.warning("unsubscribing partition %d failed (%s)", partition, exc)

    def serving(self) -> frozenset[int]:
        return frozenset(self._subscriptions)

    def _arrived(self, partition: int, reply_to: str, data: bytes) -> None:  # trio thread
        try:
            self._send.send_nowait((partition, reply_to, data))
        except trio.WouldBlock:
            self.refused += 1
            self._respond(reply_to, Reply.not_serving(
                f"{self._member} has {QUEUE} routed calls waiting; try again"))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _respond(self, reply_to: str, reply: Reply) -> None:
        if reply_to:
            self._conn.bridge.spawn(self._conn.client.publish, reply_to, reply.encode())

    async def _handle(self, partition: int, reply_to: str, data: bytes) -> None:
        try:
            reply: Reply | None
            try:
                request = Request.decode(data)
            except WireError as exc:
                reply = Reply.failed(exc)
            else:
                # Nothing is applied once its caller may have given up (the request sat in
                # this member's buffer while the process was paused, or waits for room in the
                # shard), with the clocks ``drift`` apart: a write its caller was told may or
                # may not have happened is settled by then, never landing on newer ones.
                left = request.expires - self._drift - time.time() if request.expires \
                    else math.inf
                reply = None
                if left > 0:
                    with trio.move_on_after(left):
                        reply = await self._answer_once(partition, request)
                if reply is None:
                    self.expired += 1
                    return
            if reply.status is ReplyStatus.NOT_SERVING:
                self.refused += 1
            else:
                self.served += 1
            self._respond(reply_to, reply)
        finally:
            self._slots.release()

    async def _answer_once(self, partition: int, request: Request) -> Reply:
        """:meth:`_answer`, except that a write call this member applied (or is applying)
        gets the first answer again: the caller asked again after another member's
        refusal reached it first, and applying it twice could undo a newer write."""
        if not request.call:
            return await self._answer(partition, request)
        name = (partition, request.call)
        repeat = False
        while (first := self._calls.get(name)) is not None:
            if not repeat:
                repeat = True
                self.repeats += 1
            if first.reply is not None:
                return first.reply
            if first.done is None:
                first.done = trio.Event()
            await first.done.wait()  # then answered, or refused and forgotten
        call = self._calls[name] = _Call()
        self._forget()
        reply = Reply.failed(ShardCrashed(
            f"{self._member} stopped while applying this write; it may or may not have "
            "happened; retry it"))
        try:
            reply = await self._answer(partition, request)
        finally:
            if reply.status is ReplyStatus.NOT_SERVING:
                if self._calls.get(name) is call:  # nothing applied: the next is a first
                    del self._calls[name]
            else:
                call.reply = reply
                call.until = trio.current_time() + self._remember
            if call.done is not None:
                call.done.set()
        return reply

    def _forget(self) -> None:
        """Drop the calls remembered long enough (the oldest first; while a call is still
        being answered, the ones after it wait), and the oldest beyond the bound."""
        calls, now = self._calls, trio.current_time()
        while calls:
            oldest = next(iter(calls.values()))
            if oldest.until > now and len(calls) <= REMEMBERED_CALLS:
                break
            calls.popitem(last=False)

    async def _answer(self, partition: int, request: Request) -> Reply:
        if request.partition != partition:
            return Reply.failed(WireError(
                f"a request for partition {request.partition} arrived on partition "
                f"{partition}'s subject"))
        cache = self._cache
        shard = None if cache is None else cache.hosted(partition)
        if shard is None:
            return Reply.not_serving(f"{self._member} does not host partition {partition}")
        held = None if self._epochs is None else self._epochs.held().get(partition)
        if self._epochs is not None and (
            held is None or not self._epochs.may_acknowledge(partition, held.epoch)
        ):
            # Its lease lapsed (or is being retaken): another member may own the partition
            # now, and a read served here could be stale.
            return Reply.not_serving(f"{self._member}'s lease on partition {partition} lapsed")
        if shard.incarnation_serving() is None:
            # Crashed and restarting, or waiting to retake a lease another member took (a
            # paused former owner): answered now, never held to be served late. A request
            # reaches every subscriber, and a late write would land after newer ones.
            return Reply.not_serving(f"partition {partition} is restarting on {self._member}")
        keys, ok = request.keys, ReplyStatus.OK
        try:
            if request.op is Op.WRITE:
                receipt = await shard.write(keys[0], request.values[0], keys[0].encode())
                return Reply(ok, receipts=((receipt.version, receipt.seq),))
            if request.op is Op.WRITE_MANY:
                results = await shard.write_many(
                    [(key, request.values[i], key.encode()) for i, key in enumerate(keys)])
                return Reply(ok, receipts=tuple(
                    (r.version, r.seq) if isinstance(r, Receipt) else str(r) for r in results))
            if request.op is Op.GET:
                return Reply(ok, values=(await shard.get(keys[0]),))
            if request.op is Op.GET_MANY:
                found = await shard.get_many(keys)
                return Reply(ok, values=tuple(found[key] for key in keys))
            if request.op is Op.FLUSH:
                await shard.flush()
            else:
                await shard.wait_persisted(
                    Receipt(keys[0], request.version, partition, request.seq))
            return Reply(ok)
        except (PartitionMoved, CacheClosed) as exc:
            # Handed over, or this member is stopping: nothing happened, the caller asks
            # again and reaches the next owner.
            return Reply.not_serving(str(exc))
        except (WritebehindError, ValueError, TypeError) as exc:
            return Reply.failed(exc)
        except IndexError:
            return Reply.failed(WireError(f"a {request.op.name} request without its keys"))
        except Exception as exc:  # a bug here: the caller must hear of it, not wait
            log.exception("answering a routed %s on partition %d failed", request.op.name,
                          partition)
            return Reply.failed(exc)
