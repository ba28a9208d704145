"""The store actor against a blocking store: the next batch's write starts before the last
one is answered, every batch gets exactly one answer, and the connection is never closed
under a running write."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from writebehind._core._messages import FlushBatch, StoreAck, StoreNack, StoreRecord
from writebehind._runtime._seams import Seams
from writebehind._runtime._store_actor import StoreActor

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI


class SlowStore:
    """A blocking store whose writes wait for the test's say-so."""

    blocking = True

    def __init__(self, fail: int | None = None) -> None:
        self.started = {i: threading.Event() for i in range(1, 5)}
        self.release = {i: threading.Event() for i in range(1, 5)}
        self.writing = False
        self.closed_while_writing = False
        self.fail = fail

    def connect(self) -> None:
        pass

    def write_batch(self, records: tuple[StoreRecord, ...]) -> tuple[()]:
        batch = int(records[0].key)
        self.writing = True
        try:
            self.started[batch].set()
            self.release[batch].wait(5)
            if batch == self.fail:
                raise RuntimeError(f"batch {batch} blew up")
            return ()
        finally:
            self.writing = False

    def close(self) -> None:
        self.closed_while_writing |= self.writing


def batch(i: int) -> FlushBatch:
    return FlushBatch(0, 1, i, (StoreRecord(str(i), b"v", i),))


async def wait_thread_event(event: threading.Event) -> bool:
    return await trio.to_thread.run_sync(event.wait, 5.0)


def actor(store: SlowStore, mailbox: Any) -> StoreActor:
    return StoreActor(0, lambda: store, mailbox, seams=Seams(), reconnect_delay=0.01,
                      reconnect_max=0.1)


async def test_next_write_starts_before_the_last_answer_is_taken() -> None:
    with trio.fail_after(CAP):
        store = SlowStore()
        send, receive = trio.open_memory_channel[Any](4)
        replies, answers = trio.open_memory_channel[Any](0)  # an answer waits until taken
        async with trio.open_nursery() as nursery:
            await nursery.start(actor(store, receive).run)
            for i in (1, 2, 3):
                send.send_nowait((batch(i), replies))
            assert await wait_thread_event(store.started[1])
            store.release[1].set()
            # Nobody has taken batch 1's answer yet, and batch 2 is already being written.
            assert await wait_thread_event(store.started[2])
            assert await answers.receive() == StoreAck(1, ())
            store.release[2].set()
            store.release[3].set()
            assert await answers.receive() == StoreAck(2, ())
            assert await answers.receive() == StoreAck(3, ())
            nursery.cancel_scope.cancel()
        assert not store.closed_while_writing


async def test_a_crash_answers_what_it_held_and_leaves_the_rest_queued() -> None:
    with trio.fail_after(CAP):
        store = SlowStore(fail=2)
        send, receive = trio.open_memory_channel[Any](4)
        replies, answers = trio.open_memory_channel[Any](8)
        for i in (1, 2, 3):
            send.send_nowait((batch(i), replies))
        for i in (1, 2):
            store.release[i].set()
        with pytest.raises(RuntimeError, match="batch 2 blew up"):
            await actor(store, receive).run()
        got = [answers.receive_nowait() for _ in range(2)]
        assert got[0] == StoreAck(1, ())
        assert isinstance(got[1], StoreNack) and got[1].batch_id == 2
        with pytest.raises(trio.WouldBlock):
            answers.receive_nowait()
        assert receive.receive_nowait()[0].batch_id == 3  # for the restarted actor
        assert not store.closed_while_writing


async def test_cancelling_waits_for_the_running_write_and_nacks_it() -> None:
    with trio.fail_after(CAP):
        store = SlowStore()
        send, receive = trio.open_memory_channel[Any](4)
        replies, answers = trio.open_memory_channel[Any](8)
        send.send_nowait((batch(1), replies))
        async with trio.open_nursery() as nursery:
            await nursery.start(actor(store, receive).run)
            assert await wait_thread_event(store.started[1])
            nursery.cancel_scope.cancel()
            threading.Timer(0.05, store.release[1].set).start()
        assert not store.closed_while_writing
        answer = answers.receive_nowait()
        assert isinstance(answer, StoreNack) and answer.batch_id == 1
