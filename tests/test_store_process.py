"""SQLite's store worker process, for real: writes, errors that cross the pipe as themselves,
a worker that dies (answered as StoreUnavailable, then replaced), and no process left behind
by a cancel or by a cache killed outright."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import Config, open_cache
from writebehind._core._errors import (
    ConfigError,
    SchemaMismatch,
    StoreFenced,
    StoreUnavailable,
)
from writebehind._core._messages import (
    Fence,
    FlushBatch,
    StoreAck,
    StoreNack,
    StoreRecord,
    Superseded,
)
from writebehind._runtime._seams import Seams
from writebehind._runtime._store_actor import StoreActor
from writebehind._runtime._store_process import StoreProcess
from writebehind._stores._registry import SQLiteFactory, store_factory

CAP = 60  # seconds: a worker process starts in a fraction of one, even on a busy machine


def factory(tmp_path: Path, worker: str = "process", table: str = "entries") -> SQLiteFactory:
    made = store_factory(f"sqlite:///{tmp_path / 'store.db'}?worker={worker}", table=table)
    assert isinstance(made, SQLiteFactory)
    return made


def gone(pid: int) -> bool:
    """Has process ``pid`` exited *and been reaped*? (A zombie still answers signal 0.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    with trio.move_on_after(seconds):
        while not gone(pid):
            await trio.sleep(0.05)
    return gone(pid)


def rows(tmp_path: Path, table: str = "entries") -> dict[str, tuple[bytes | None, int]]:
    db = sqlite3.connect(tmp_path / "store.db")
    try:
        return {k: (v, ver) for k, v, ver in db.execute(f"SELECT key, value, version FROM {table}")}
    finally:
        db.close()


async def test_writes_land_and_a_supersession_comes_back(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            store = StoreProcess(factory(tmp_path), nursery, name="store-0")
            try:
                await store.connect()
                assert store.pid is not None
                first = (StoreRecord("a", b"1", 10), StoreRecord("b", None, 11))
                assert await store.write_batch(first) == ()
                older = (StoreRecord("a", b"0", 5), StoreRecord("c", b"3", 12))
                assert await store.write_batch(older) == (Superseded("a", 5),)
            finally:
                await store.aclose()
        assert rows(tmp_path) == {"a": (b"1", 10), "b": (None, 11), "c": (b"3", 12)}


async def test_a_fenced_batch_crosses_the_pipe_and_an_older_epoch_is_refused_whole(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            store = StoreProcess(factory(tmp_path), nursery, name="store-0")
            try:
                await store.connect()
                landed = store.start_write((StoreRecord("a", b"new", 20),), Fence(3, 2))
                assert await landed.result() == ()
                zombie = store.start_write(
                    (StoreRecord("a", b"old", 10), StoreRecord("z", b"1", 11)), Fence(3, 1)
                )
                with pytest.raises(StoreFenced, match="epoch") as refused:
                    await zombie.result()
                assert (refused.value.partition, refused.value.epoch,
                        refused.value.current) == (3, 1, 2)
            finally:
                await store.aclose()
        assert rows(tmp_path) == {"a": (b"new", 20)}


async def test_a_schema_mismatch_crosses_as_itself(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "store.db")
    db.execute("CREATE TABLE entries_meta (name TEXT PRIMARY KEY, value INTEGER)")
    db.execute("INSERT INTO entries_meta VALUES ('schema_version', 99)")
    db.commit()
    db.close()
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            store = StoreProcess(factory(tmp_path), nursery, name="store-0")
            try:
                with pytest.raises(SchemaMismatch, match="has schema version 99, this writebe"):
                    await store.connect()
            finally:
                await store.aclose()


async def test_a_store_that_cannot_open_is_unavailable_with_sqlites_reason(
    tmp_path: Path,
) -> None:
    (tmp_path / "store.db").mkdir()  # a directory where the file should be
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            store = StoreProcess(factory(tmp_path), nursery, name="store-0")
            try:
                with pytest.raises(StoreUnavailable, match="cannot open SQLite store"):
                    await store.connect()
                pid = store.pid
                # The store failed, not the worker: the same worker serves the retry.
                with pytest.raises(StoreUnavailable, match="cannot open SQLite store"):
                    await store.connect()
                assert store.pid == pid
            finally:
                await store.aclose()


async def test_a_killed_worker_fails_the_call_in_flight_and_is_replaced(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            store = StoreProcess(factory(tmp_path), nursery, name="store-0")
            try:
                await store.connect()
                pid = store.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(StoreUnavailable, match=rf"\(pid {pid}\) exited with code -9"):
                    await store.write_batch((StoreRecord("a", b"1", 1),))
                # Later calls fail the same way until a reconnect starts a new worker.
                with pytest.raises(StoreUnavailable, match="exited"):
                    await store.write_batch((StoreRecord("a", b"1", 1),))
                await store.close()
                await store.connect()
                assert store.pid not in (None, pid)
                assert await store.write_batch((StoreRecord("a", b"1", 1),)) == ()
            finally:
                await store.aclose()
        assert gone(pid)
        assert rows(tmp_path) == {"a": (b"1", 1)}


def batch(i: int) -> FlushBatch:
    return FlushBatch(0, 1, i, (StoreRecord(f"k{i}", b"v", i),))


async def test_the_store_actor_answers_a_dead_worker_with_a_nack_and_reconnects(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        send, receive = trio.open_memory_channel[Any](4)
        replies, answers = trio.open_memory_channel[Any](4)
        actor = StoreActor(0, factory(tmp_path), receive, seams=Seams(),
                           reconnect_delay=0.01, reconnect_max=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            send.send_nowait((batch(1), replies))
            assert await answers.receive() == StoreAck(1, ())
            pid = actor.worker_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            assert await wait_gone(pid)
            send.send_nowait((batch(2), replies))
            nack = await answers.receive()
            assert isinstance(nack, StoreNack) and nack.batch_id == 2
            assert "exited with code -9" in nack.reason
            send.send_nowait((batch(3), replies))  # the shard's retry, say
            assert await answers.receive() == StoreAck(3, ())
            assert actor.worker_pid not in (None, pid)
            assert actor.status.value == "running" and actor.errors == 1
            last = actor.worker_pid
            nursery.cancel_scope.cancel()
        assert last is not None and gone(last)  # cancelled: killed or exited, and reaped
        assert actor.worker_pid is None
        assert set(rows(tmp_path)) == {"k1", "k3"}


async def test_a_wrapped_store_keeps_the_thread_path(tmp_path: Path) -> None:
    wrapped: list[object] = []

    def wrap(store: Any) -> Any:
        wrapped.append(store)
        return store

    with trio.fail_after(CAP):
        send, receive = trio.open_memory_channel[Any](4)
        replies, answers = trio.open_memory_channel[Any](4)
        actor = StoreActor(0, factory(tmp_path), receive, seams=Seams(wrap_store=wrap),
                           reconnect_delay=0.01, reconnect_max=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            send.send_nowait((batch(1), replies))
            assert await answers.receive() == StoreAck(1, ())
            assert actor.worker_pid is None and len(wrapped) == 1
            nursery.cancel_scope.cancel()


def test_sqlite_runs_in_a_worker_thread_unless_the_url_asks_for_a_process(
    tmp_path: Path,
) -> None:
    assert store_factory(f"sqlite:///{tmp_path / 'store.db'}").worker == "thread"  # type: ignore[attr-defined]
    assert factory(tmp_path, "process").worker == "process"


async def test_a_cache_runs_sqlite_in_a_worker_process_when_asked(tmp_path: Path) -> None:
    config = Config(store=f"sqlite:///{tmp_path / 'store.db'}?worker=process",
                    store_table="entries", journal_dir=tmp_path / "journal", ack="fsync")
    with trio.fail_after(CAP):
        async with open_cache(config) as cache:
            (actor,) = cache._store_actors
            pid = actor.worker_pid
            assert pid is not None
            for i in range(50):
                await cache.put(f"k{i}", b"v%d" % i)
            await cache.flush()
        assert await wait_gone(pid)
    assert len(rows(tmp_path)) == 50


@pytest.mark.parametrize(("option", "message"), [
    ("?worker=fork", "asks for worker 'fork'; write '?worker=thread' (the default"),
    ("?workers=thread", "unknown option 'workers=thread'; a SQLite URL takes only"),
    ("?worker", "unknown option 'worker'"),
])
def test_a_bad_worker_option_is_refused_with_what_to_write(option: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(store=f"sqlite:///store.db{option}")


def test_the_worker_option_is_not_part_of_the_path(tmp_path: Path) -> None:
    made = factory(tmp_path, "thread")
    assert made.worker == "thread" and made.path == tmp_path / "store.db"


async def test_a_cache_killed_outright_takes_its_worker_with_it(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, trio
        from writebehind import Config, open_cache
        async def main():
            config = Config(store="sqlite:///{tmp_path / 'store.db'}?worker=process",
                            journal_dir="{tmp_path / 'journal'}")
            async with open_cache(config) as cache:
                print(cache._store_actors[0].worker_pid, flush=True)
                await trio.sleep(60)
        trio.run(main)
    """)
    with trio.fail_after(CAP):
        cache = await trio.lowlevel.open_process(
            [sys.executable, "-c", script], stdout=subprocess.PIPE
        )
        try:
            assert cache.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await cache.stdout.receive_some(100)
                assert chunk, "the cache process ended before it printed its worker's pid"
                line += chunk
            worker = int(line)
            assert not gone(worker)
            cache.kill()
            await cache.wait()
            assert await wait_gone(worker)
        finally:
            if cache.returncode is None:
                cache.kill()
                await cache.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_a_worker_whose_pipe_stays_open_still_dies_with_the_cache_process() -> None:
    # The worker started exactly as a cache starts it, but its stdin's other end is held by
    # this test, so the parent's death closes no pipe: only the parent-death signal stops it
    # (as it must stop a worker that is busy writing when its cache is SIGKILLed).
    middle = textwrap.dedent("""
        import subprocess, sys, time
        from writebehind._runtime._store_process import worker_command
        worker = subprocess.Popen(worker_command(), stdin=int(sys.argv[1]))
        print(worker.pid, flush=True)
        time.sleep(120)
    """)
    read_end, write_end = os.pipe()
    try:
        with trio.fail_after(CAP):
            parent = await trio.lowlevel.open_process(
                [sys.executable, "-c", middle, str(read_end)], stdout=subprocess.PIPE,
                pass_fds=(read_end,),
            )
            try:
                assert parent.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await parent.stdout.receive_some(100)
                    assert chunk, "the parent ended before it printed its worker's pid"
                    line += chunk
                worker = int(line)
                await trio.sleep(1.0)  # the worker arms the signal first thing; let it start
                assert not gone(worker)
                parent.kill()
                await parent.wait()
                assert await wait_gone(worker)
            finally:
                if parent.returncode is None:
                    parent.kill()
                    await parent.wait()
    finally:
        os.close(read_end)
        os.close(write_end)
