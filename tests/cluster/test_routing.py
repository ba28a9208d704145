"""Routing's two ends without NATS: the caller's retries and errors (``RemotePartition``),
and what the owner answers (``PartitionServer``), over scripted connections.

(With NATS, on three nodes and several instances: ``test_members.py``.)"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import pytest
import trio
import trio.testing

from writebehind._cluster._routing import PartitionServer, RemotePartition
from writebehind._core._errors import Overloaded, PartitionMoved, PartitionUnavailable, ShardCrashed
from writebehind._core._messages import Receipt
from writebehind._core._wire import Op, Reply, ReplyStatus, Request


class Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data


class ScriptedConn:
    """Answers each request with the next entry of ``script``: an exception to raise or a
    reply to return; records what was sent."""

    def __init__(self, script: list[BaseException | Reply]) -> None:
        self.script = script
        self.sent: list[tuple[Request, float]] = []
        self.client = self
        self.bridge = self
        self.published: list[tuple[str, Reply]] = []

    async def request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        raise AssertionError("called through run()")

    async def run(self, fn: Callable[..., Any], subject: str, payload: bytes, *,
                  timeout: float) -> Msg:
        self.sent.append((Request.decode(payload), timeout))
        await trio.sleep(0)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return Msg(step.encode())

    # the owner's side: replies go out through bridge.spawn(client.publish, ...)
    def spawn(self, fn: Callable[..., Any], reply_to: str, data: bytes) -> None:
        self.published.append((reply_to, Reply.decode(data)))

    async def publish(self, subject: str, data: bytes) -> None:
        pass


def _remote(conn: ScriptedConn, deadline: float = 10.0) -> RemotePartition:
    calls = itertools.count(1)
    return RemotePartition(conn, "c", 3, deadline=deadline,  # type: ignore[arg-type]
                           rng=random.Random(7), call_name=lambda: b"me/%d" % next(calls))


def _run(fn: Callable[[], Any]) -> Any:
    async def main() -> Any:
        with trio.fail_after(600):  # the mock clock's seconds
            return await fn()
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


OK = ReplyStatus.OK


def test_no_responder_and_not_serving_are_asked_again_until_an_owner_answers() -> None:
    conn = ScriptedConn([nats.errors.NoRespondersError(), Reply.not_serving("moving"),
                         Reply(OK, receipts=((77, 5),))])
    remote = _remote(conn)
    receipt = _run(lambda: remote.write("k", b"v", b"k"))
    assert receipt == Receipt("k", 77, 3, 5)
    assert remote.retries == 2 and len(conn.sent) == 3
    request, _ = conn.sent[0]
    assert (request.op, request.partition, request.keys, request.values) == (
        Op.WRITE, 3, ("k",), (b"v",))
    assert request.expires > time.time() - 60  # the caller's wall-clock deadline
    # Every attempt names the same call (the owner applies it once); the next write is new.
    assert [r.call for r, _ in conn.sent] == [b"me/1"] * 3
    conn.script.append(Reply(OK, receipts=((78, 6),)))
    _run(lambda: remote.write_many([("k", b"w", b"k")]))
    assert conn.sent[-1][0].call == b"me/2"
    conn.script.append(Reply(OK, values=(b"w",)))
    _run(lambda: remote.get("k"))
    assert conn.sent[-1][0].call == b""  # a read changes nothing: asked again freely


def test_nobody_serving_until_the_deadline_is_a_clear_error_and_nothing_written() -> None:
    conn = ScriptedConn([nats.errors.NoRespondersError() for _ in range(1000)])
    with pytest.raises(PartitionUnavailable,
                       match=r"partition 3: no member served it within 2\.0s \(last: no "
                             r"member hosts it\); nothing was written"):
        _run(lambda: _remote(conn, deadline=2.0).write("k", b"v", b"k"))
    assert 5 < len(conn.sent) < 100  # backed off, not spun


def test_a_write_refused_until_the_deadline_by_a_member_is_uncertain_not_unwritten() -> None:
    # Two members may subscribe while a partition moves; the one that says "not serving"
    # does not speak for the one that may have applied it (the cluster suite's skew fault).
    script: list[BaseException | Reply] = [Reply.not_serving("lease lapsed")]
    conn = ScriptedConn(script + [nats.errors.NoRespondersError() for _ in range(1000)])
    with pytest.raises(ShardCrashed, match="may or may not have happened"):
        _run(lambda: _remote(conn, deadline=2.0).write("k", b"v", b"k"))
    conn = ScriptedConn(script + [nats.errors.NoRespondersError() for _ in range(1000)])
    with pytest.raises(PartitionUnavailable):  # a read changes nothing: nothing to doubt
        _run(lambda: _remote(conn, deadline=2.0).get("k"))


def test_an_unanswered_write_is_uncertain_and_an_unanswered_read_is_asked_again() -> None:
    conn = ScriptedConn([nats.errors.TimeoutError()])
    with pytest.raises(ShardCrashed, match="may or may not have happened"):
        _run(lambda: _remote(conn).write("k", None, b"k"))
    assert len(conn.sent) == 1 and conn.sent[0][0].values == (None,)
    conn = ScriptedConn([nats.errors.TimeoutError(), Reply(OK, values=(b"v",))])
    assert _run(lambda: _remote(conn).get("k")) == b"v"
    assert conn.sent[0][1] == pytest.approx(10.0 / 4)  # a read waits a quarter deadline


def test_the_owners_errors_are_raised_as_themselves() -> None:
    conn = ScriptedConn([Reply.failed(Overloaded("shard-3 holds 9 unpersisted entries"))])
    with pytest.raises(Overloaded, match="shard-3 holds 9 unpersisted entries"):
        _run(lambda: _remote(conn).write("k", b"v", b"k"))
    conn = ScriptedConn([Reply(OK, receipts=((1, 1), "refused: too big"))])
    out = _run(lambda: _remote(conn).write_many([("a", b"1", b"a"), ("b", b"2", b"b")]))
    assert out[0] == Receipt("a", 1, 3, 1) and str(out[1]) == "refused: too big"
    conn = ScriptedConn([Reply(OK, values=(b"1",))])  # one value for two keys
    with pytest.raises(Exception, match="holds 0 receipts and 1 values, expected 0 and 2"):
        _run(lambda: _remote(conn).get_many(["a", "b"]))


# -- the owner's side ----------------------------------------------------------------------


class Shard:
    def __init__(self, error: BaseException | None = None, serving: bool = True) -> None:
        self.error = error
        self.serving = serving
        self.writes: list[tuple[str, bytes | None]] = []

    def incarnation_serving(self) -> int | None:
        return 1 if self.serving else None

    async def write(self, key: str, value: bytes | None, raw: bytes) -> Receipt:
        if self.error is not None:
            raise self.error
        self.writes.append((key, value))
        return Receipt(key, 42, 3, 9)

    async def get(self, key: str) -> bytes | None:
        return b"stored"


class Cache:
    def __init__(self, shard: Shard | None) -> None:
        self.shard = shard

    def hosted(self, partition: int) -> Shard | None:
        return self.shard if partition == 3 else None


class Held:
    epoch = 4


class Epochs:
    def __init__(self, may: bool) -> None:
        self.may = may

    def held(self) -> dict[int, Held]:
        return {3: Held()}

    def may_acknowledge(self, partition: int, epoch: int) -> bool:
        return self.may and epoch == 4


def _answer(request: Request | bytes, *, shard: Shard | None = None, may: bool = True,
            partition: int = 3) -> tuple[PartitionServer, ScriptedConn]:
    conn = ScriptedConn([])
    server = PartitionServer(conn, "c", "me", epochs=Epochs(may), drift=1.0)  # type: ignore[arg-type]
    server._cache = Cache(shard if shard is not None else Shard())  # type: ignore[assignment]
    data = request if isinstance(request, bytes) else request.encode()

    async def main() -> None:
        await server._slots.acquire()
        await server._handle(partition, "inbox.1", data)

    _run(main)
    return server, conn


def _reply(conn: ScriptedConn) -> Reply:
    [(reply_to, reply)] = conn.published
    assert reply_to == "inbox.1"
    return reply


def test_the_owner_answers_through_its_shard_while_its_lease_holds() -> None:
    shard = Shard()
    server, conn = _answer(Request(Op.WRITE, 3, ("k",), (b"v",), expires=time.time() + 5),
                           shard=shard)
    assert _reply(conn) == Reply(OK, receipts=((42, 9),)) and shard.writes == [("k", b"v")]
    assert server.served == 1


@pytest.mark.parametrize(("case", "kwargs", "says"), [
    ("lease lapsed", {"may": False}, "me's lease on partition 3 lapsed"),
    ("not hosted", {"partition": 5}, "me does not host partition 5"),
    ("restarting", {"shard": Shard(serving=False)}, "partition 3 is restarting on me"),
    ("handed over", {"shard": Shard(PartitionMoved("shard-3 was handed over"))},
     "shard-3 was handed over"),
])
def test_an_owner_that_cannot_serve_now_says_so_at_once(
    case: str, kwargs: dict[str, Any], says: str,
) -> None:
    partition = kwargs.get("partition", 3)
    shard = kwargs.get("shard") or Shard()
    server, conn = _answer(Request(Op.WRITE, partition, ("k",), (b"v",)), **kwargs)
    assert _reply(conn) == Reply.not_serving(says), case
    assert shard.writes == [] and server.refused == 1


class SlowShard(Shard):
    """Applies each write after ``delay`` (the journal's publish-ack), with a new version."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def write(self, key: str, value: bytes | None, raw: bytes) -> Receipt:
        self.writes.append((key, value))
        await trio.sleep(self.delay)
        return Receipt(key, 100 + len(self.writes), 3, len(self.writes))


def test_a_write_asked_again_is_applied_once_and_answered_as_the_first_time() -> None:
    # The cluster suite's skew fault found a write applied again on every attempt: a former
    # owner's "not serving" reached the caller first each time, the caller asked again,
    # and the owner applied the value once more, after newer writes had overwritten it.
    shard = SlowShard(delay=1.0)
    conn = ScriptedConn([])
    server = PartitionServer(conn, "c", "me", epochs=Epochs(True), drift=1.0,  # type: ignore[arg-type]
                             remember=30.0)
    server._cache = Cache(shard)  # type: ignore[assignment]
    first = Request(Op.WRITE, 3, ("k",), (b"v",), call=b"a/1")

    async def handle(request: Request, reply_to: str) -> None:
        await server._slots.acquire()
        await server._handle(3, reply_to, request.encode())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle, first, "inbox.1")
            await trio.sleep(0.5)  # asked again while the first is being applied
            nursery.start_soon(handle, first, "inbox.2")
        await handle(first, "inbox.3")  # and after it was answered
        await handle(Request(Op.WRITE, 3, ("k",), (b"w",), call=b"a/2"), "inbox.4")
        await trio.sleep(31)  # past ``remember``: forgotten (its caller gave up long ago)
        await handle(Request(Op.WRITE, 3, ("j",), (b"x",), call=b"b/1"), "inbox.5")
        await handle(first, "inbox.6")

    _run(main)
    answers = dict(conn.published)
    assert shard.writes == [("k", b"v"), ("k", b"w"), ("j", b"x"), ("k", b"v")]
    assert answers["inbox.1"] == answers["inbox.2"] == answers["inbox.3"] == Reply(
        OK, receipts=((101, 1),))
    assert answers["inbox.4"] == Reply(OK, receipts=((102, 2),))
    assert server.repeats == 2 and server.served == 6


def test_a_write_refused_here_is_not_remembered() -> None:
    # Refused (not applied): the same call asked again is applied when this member can.
    shard = Shard(serving=False)
    conn = ScriptedConn([])
    server = PartitionServer(conn, "c", "me", epochs=Epochs(True))  # type: ignore[arg-type]
    server._cache = Cache(shard)  # type: ignore[assignment]
    request = Request(Op.WRITE, 3, ("k",), (b"v",), call=b"a/1").encode()

    async def main() -> None:
        await server._slots.acquire()
        await server._handle(3, "inbox.1", request)
        shard.serving = True
        await server._slots.acquire()
        await server._handle(3, "inbox.2", request)

    _run(main)
    assert [r.status for _, r in conn.published] == [ReplyStatus.NOT_SERVING, OK]
    assert shard.writes == [("k", b"v")] and server.repeats == 0


def test_a_request_past_its_callers_deadline_is_dropped_unanswered() -> None:
    shard = Shard()
    server, conn = _answer(Request(Op.WRITE, 3, ("k",), (b"v",), expires=time.time() - 2),
                           shard=shard)
    assert conn.published == [] and shard.writes == [] and server.expired == 1
    # Within the drift margin before it too: the caller's clock may be that far ahead.
    server, conn = _answer(Request(Op.WRITE, 3, ("k",), (b"v",), expires=time.time() + 0.5))
    assert conn.published == [] and server.expired == 1
    server, conn = _answer(Request(Op.WRITE, 3, ("k",), (b"v",), expires=time.time() + 3))
    assert _reply(conn).status is OK


class AdmittingShard(Shard):
    """Applies a write only once ``room`` is set (a full shard admitting it later)."""

    def __init__(self) -> None:
        super().__init__()
        self.room = trio.Event()

    async def write(self, key: str, value: bytes | None, raw: bytes) -> Receipt:
        await self.room.wait()
        return await super().write(key, value, raw)


def test_a_write_waiting_for_its_shard_is_given_up_at_its_callers_deadline() -> None:
    # Checked on arrival only, a write held for room would land after its caller was told
    # it may or may not have happened, and after the newer writes that caller made since.
    shard = AdmittingShard()
    conn = ScriptedConn([])
    server = PartitionServer(conn, "c", "me", epochs=Epochs(True), drift=1.0)  # type: ignore[arg-type]
    server._cache = Cache(shard)  # type: ignore[assignment]
    request = Request(Op.WRITE, 3, ("k",), (b"v",), call=b"a/1", expires=time.time() + 5)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await server._slots.acquire()
            nursery.start_soon(server._handle, 3, "inbox.1", request.encode())
            await trio.sleep(10)
            shard.room.set()

    _run(main)
    assert shard.writes == [] and conn.published == [] and server.expired == 1


def test_an_uncertain_write_is_told_once_no_member_can_apply_it_any_more() -> None:
    # A lost connection ends the call at once, but the request may sit at its owner until
    # its ``expires``: the caller hears "may or may not" only when that has passed.
    conn = ScriptedConn([nats.errors.ConnectionClosedError()])

    async def main() -> float:
        with pytest.raises(ShardCrashed, match="may or may not have happened"):
            await _remote(conn, deadline=6.0).write("k", b"v", b"k")
        return trio.current_time()

    assert _run(main) == pytest.approx(6.0, abs=0.01)
    assert conn.sent[0][1] == pytest.approx(6.0, abs=0.01)


def test_the_owners_errors_and_bad_requests_are_answered_as_errors() -> None:
    _, conn = _answer(Request(Op.WRITE, 3, ("k",), (b"v",)),
                      shard=Shard(Overloaded("too much")))
    assert _reply(conn) == Reply.failed(Overloaded("too much"))
    _, conn = _answer(b"garbage")
    assert _reply(conn).error == "WireError"
    _, conn = _answer(Request(Op.GET, 2, ("k",)))  # sent on partition 3's subject
    reply = _reply(conn)
    assert reply.error == "WireError" and "partition 2 arrived on partition 3" in reply.message
