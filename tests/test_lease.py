"""One live instance per store table (issue 12, item 7).

Two instances on one table used to fight silently: the later start's epoch won every key,
so the earlier instance's newer writes were discarded by the store while it kept serving them.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import (
    Config,
    ConfigError,
    LeaseHeld,
    LeaseLost,
    Seams,
    SQLiteStore,
    open_cache,
    serve_cache,
)
from writebehind._core._lease import LeaseClaim, LeaseHolder, decide
from writebehind._runtime._lease import LeaseKeeper

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI


class WallClock:
    """The seam the lease is timed by: seconds since the Unix epoch, moved by the test."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _claim(token: str, *, host: str = "h", pid: int = 1, since: float = 0.0,
           take_over: str | None = None) -> LeaseClaim:
    return LeaseClaim(token=token, host=host, pid=pid, since=since, ttl=30.0,
                      take_over=take_over)


def _store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    return store


def _config(tmp_path: Path, name: str = "journal", **kw: Any) -> Config:
    return Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / name,
                  flush_interval=0.05, **kw)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the rule --------------------------------------------------------------------------------


def test_decide_takes_a_free_expired_own_or_named_lease_and_nothing_else() -> None:
    mine, other = _claim("me"), LeaseHolder("you", "h2", 2, 0.0, expires=100.0)
    assert decide(None, mine, 50.0) is None
    assert decide(other, mine, 50.0) == other
    assert decide(other, mine, 100.0) is None  # expired: its holder died
    assert decide(LeaseHolder("me", "h", 1, 0.0, 10.0), mine, 50.0) is None
    assert decide(other, _claim("me", take_over="you"), 50.0) is None
    # A renewal never takes someone else's lease, expired or not: it was taken over.
    assert decide(other, mine, 500.0, renewal=True) == other
    assert decide(None, mine, 500.0, renewal=True) is None


def test_a_lease_row_that_is_not_one_reads_as_free() -> None:
    assert LeaseHolder.from_json("{}") is None and LeaseHolder.from_json("7") is None
    holder = LeaseHolder("t", "h", 3, 1.5, 2.5)
    assert LeaseHolder.from_json(holder.to_json()) == holder


# -- the SQLite store ------------------------------------------------------------------------


def test_sqlite_lease_is_taken_refused_renewed_taken_over_and_released(tmp_path: Path) -> None:
    a, b = _store(tmp_path), _store(tmp_path)
    first, second = _claim("a", host="ha"), _claim("b", host="hb")
    assert a.acquire_lease(first, 1000.0) is None
    held = b.acquire_lease(second, 1010.0)
    assert held is not None and (held.host, held.token, held.expires) == ("ha", "a", 1030.0)
    assert a.renew_lease(first, 1020.0) is None  # now expires at 1050
    assert b.acquire_lease(second, 1049.0) is not None
    assert b.acquire_lease(second, 1050.0) is None  # a stopped renewing: taken over
    assert a.renew_lease(first, 1051.0) is not None  # a learns it lost the lease
    a.release_lease(first)  # not a's any more: left alone
    assert a.acquire_lease(first, 1052.0) is not None
    b.release_lease(second)
    assert a.acquire_lease(first, 1052.0) is None
    a.close()
    b.close()


# -- the cache -------------------------------------------------------------------------------


async def test_a_second_live_instance_on_one_table_is_refused_naming_the_holder(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        clock = WallClock()
        seams = Seams(wall_clock=clock)
        async with open_cache(_config(tmp_path), seams=seams) as first:
            await first.put("k", b"first")
            with pytest.raises(LeaseHeld) as info:
                async with open_cache(_config(tmp_path, "journal2"), seams=seams):
                    pytest.fail("a second instance started on the same table")
            message = str(info.value)
            assert "store table 'writebehind_entries' is in use by another writebehind instance" \
                in message
            holder = f"host {socket.gethostname()}, pid {os.getpid()}"
            assert f"{holder}, since 2027-01-15 08:00:00 UTC" in message
            assert "Stop that instance first, or give this one its own Config.store_table" \
                in message
            assert info.value.holder.pid == os.getpid()
            assert await first.get("k") == b"first"  # the refused start harmed nothing
        # Released on close: the next instance starts at once.
        async with open_cache(_config(tmp_path, "journal2"), seams=seams) as second:
            await second.put("k", b"second")


async def test_another_table_in_the_same_store_is_another_lease(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        async with open_cache(_config(tmp_path)):
            async with open_cache(_config(tmp_path, "other", store_table="other_entries")):
                pass


async def test_an_expired_lease_of_a_dead_holder_elsewhere_is_taken_over(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        clock = WallClock()
        store = _store(tmp_path)
        gone = LeaseClaim(token="gone", host="another-host", pid=4242, since=clock.now, ttl=30.0)
        assert store.acquire_lease(gone, clock.now) is None  # then its host died
        store.close()
        seams = Seams(wall_clock=clock)
        with pytest.raises(LeaseHeld, match=r"host another-host, pid 4242.*expires in 30s"):
            async with open_cache(_config(tmp_path), seams=seams):
                pass
        clock.now += 30.0
        async with open_cache(_config(tmp_path), seams=seams) as cache:
            await cache.put("k", b"v")


async def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        # kill -9 leaves the lease behind; the restarted process must not wait out the TTL.
        store = _store(tmp_path)
        dead = LeaseClaim(token="killed", host=socket.gethostname(), pid=_dead_pid(), since=0.0,
                          ttl=3600.0)
        assert store.acquire_lease(dead, 1.0) is None
        store.close()
        async with open_cache(_config(tmp_path)) as cache:
            await cache.put("k", b"v")


async def test_an_instance_whose_lease_was_taken_over_stops_with_lease_lost(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        clock = WallClock()
        with pytest.raises(BaseException) as info:
            async with trio.open_nursery() as nursery:
                cache = await nursery.start(
                    functools.partial(serve_cache, seams=Seams(wall_clock=clock)),
                    _config(tmp_path, lease_ttl=1.0),  # renewed every third of a second
                )
                await cache.put("k", b"v")
                # This instance stalls past its lease (clock jump), and another takes the table.
                clock.now += 10.0
                thief = _store(tmp_path)
                assert thief.acquire_lease(_claim("thief", host="elsewhere"), clock.now) is None
                thief.close()
                with trio.fail_after(5):
                    await trio.sleep_forever()
        lost = info.value
        while isinstance(lost, BaseExceptionGroup) and len(lost.exceptions) == 1:
            lost = lost.exceptions[0]
        assert isinstance(lost, LeaseLost), info.value
        assert "took over store table 'writebehind_entries' (host elsewhere" in str(lost)


async def test_keeper_retries_a_store_that_is_down_and_releases_only_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from writebehind import StoreUnavailable

    calls: list[str] = []
    answers: list[Callable[[], Any]] = []

    async def call(name: str, *args: Any) -> Any:
        calls.append(name)
        return answers.pop(0)() if answers else None

    def down() -> Any:
        raise StoreUnavailable("down")

    keeper = LeaseKeeper(call, "t", clock=WallClock(), ttl=30.0)
    await keeper.acquire()
    answers += [down, down, lambda: None, lambda: LeaseHolder("x", "h", 1, 0.0, 1.0)]
    with pytest.raises(LeaseLost):
        await keeper.keep()
    assert calls == ["acquire_lease"] + ["renew_lease"] * 4
    assert trio.current_time() == pytest.approx(40.0)
    await keeper.release()
    assert calls[-1] == "release_lease"


def test_the_lease_ttl_is_a_setting_with_a_floor(tmp_path: Path) -> None:
    assert _config(tmp_path).lease_ttl == 30.0
    assert _config(tmp_path, lease_ttl=5).lease_ttl == 5
    with pytest.raises(ConfigError, match=r"^Config.lease_ttl must be at least 1.0 seconds .*"
                       r"got 0.5$"):
        _config(tmp_path, lease_ttl=0.5)


async def test_the_keeper_renews_at_a_third_of_the_configured_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    renewals: list[float] = []

    async def call(method: str, *args: Any) -> None:
        if method == "renew_lease":
            renewals.append(trio.current_time())

    keeper = LeaseKeeper(call, "t", clock=lambda: 0.0, ttl=6.0)
    with trio.move_on_after(7):
        await keeper.keep()
    assert renewals == [2.0, 4.0, 6.0]
