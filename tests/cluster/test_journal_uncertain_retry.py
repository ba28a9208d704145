"""A retried publish whose first copy landed is not taken for a fence, whatever order the
server checks the message id and the expected sequence in (no NATS server: a scripted one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import attrs
import nats.errors
import nats.js.errors
import pytest
import trio

from writebehind._cluster._bridge import NatsConnection
from writebehind._cluster._journal import Fenced, PartitionJournal
from writebehind._journal._codec import JournalRecord, RecordKind


@attrs.define
class Stored:
    seq: int
    headers: dict[str, str]


@attrs.define
class ScriptedJetStream:
    """Lands or times out each publish as scripted; refuses a stale expectation before it
    looks at the message id (the order under which the retry used to read as a fence)."""

    # Per publish: "answer" (stored and answered), "land-silently" (stored, no answer) or
    # "fenced-first" (a newer owner's fence lands just before it).
    script: list[str]
    subject: list[Stored] = attrs.Factory(list)
    seq: int = 10

    async def publish(self, subject: str, payload: bytes, *, timeout: float, stream: str,
                      headers: dict[str, str]) -> Any:
        step = self.script.pop(0)
        if step == "fenced-first":
            self.seq += 1
            self.subject.append(Stored(self.seq, {"Nats-Msg-Id": "1:3:fence", "Wb-Epoch": "3"}))
        last = self.subject[-1].seq if self.subject else 0
        if int(headers["Nats-Expected-Last-Subject-Sequence"]) != last:
            raise nats.js.errors.APIError(code=400, err_code=10071,
                                          description="wrong last sequence")
        self.seq += 1
        self.subject.append(Stored(self.seq, dict(headers)))
        if step == "land-silently":
            raise nats.errors.TimeoutError
        return attrs.make_class("Ack", ["seq"])(self.seq)

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        if not self.subject:
            raise nats.js.errors.NotFoundError
        return self.subject[-1]


@attrs.define
class ScriptedConnection:
    js: ScriptedJetStream

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)


def journal(js: ScriptedJetStream, epoch: int = 2) -> PartitionJournal:
    writer = PartitionJournal(cast(NatsConnection, ScriptedConnection(js)), "c", 1, epoch)
    writer.last = js.subject[-1].seq if js.subject else 0
    return writer


def record(seq: int) -> JournalRecord:
    return JournalRecord(seq, RecordKind.PUT, f"k{seq}", b"v", seq)


async def test_a_retry_refused_after_its_first_copy_landed_returns_that_copy() -> None:
    js = ScriptedJetStream(["land-silently", "answer", "answer"])
    writer = journal(js)
    with trio.fail_after(10):
        seq = await writer.append([record(1)])
    assert seq == 11 and writer.last == 11 and len(js.subject) == 1
    assert await writer.append([record(2)]) == 12  # and the next append follows it


async def test_a_retry_refused_after_a_newer_owners_fence_is_fenced() -> None:
    js = ScriptedJetStream(["land-silently", "fenced-first"])
    writer = journal(js)
    with trio.fail_after(10), pytest.raises(Fenced):
        await writer.append([record(1)])
    # Its first copy is in the subject before the fence: the new owner replays it.
    assert [m.headers.get("Wb-Epoch") for m in js.subject] == ["2", "3"]
