"""The runtime's hosting seam, without a cluster: ``Cache(elsewhere=...)`` hosts no shard at
start and routes their calls to the stand-ins; ``host(i)`` starts shard ``i`` here and routes
its calls to it; ``unhost(i)`` flushes it to the store, checkpoints, stops it and routes its
calls elsewhere again; hosting it once more replays and serves what the store holds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import trio

from writebehind import Config, Receipt, StoreRejected
from writebehind._core._routing import shard_of
from writebehind._runtime._cache import Cache, open_served
from writebehind._runtime._seams import Seams
from writebehind._stores._sqlite import SQLiteStore


class StandIn:
    """A shard hosted 'elsewhere': records the calls it gets."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.calls: list[tuple[str, str]] = []

    def incarnation_serving(self) -> int | None:
        return 0

    async def write(self, key: str, value: bytes | None, raw_key: bytes) -> Receipt:
        self.calls.append(("write", key))
        return Receipt(key, 0, self.shard, 0)

    async def write_many(
        self, items: Sequence[tuple[str, bytes | None, bytes]]
    ) -> list[Receipt | StoreRejected]:
        self.calls.extend(("write", key) for key, _, _ in items)
        return [Receipt(key, 0, self.shard, 0) for key, _, _ in items]

    async def get(self, key: str) -> bytes | None:
        self.calls.append(("get", key))
        return b"elsewhere"

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        return {key: await self.get(key) for key in keys}

    async def flush(self) -> None:
        self.calls.append(("flush", ""))

    async def wait_persisted(self, receipt: Receipt) -> None:
        self.calls.append(("wait_persisted", receipt.key))


def _stored(tmp_path: Path) -> dict[str, bytes | None]:
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    try:
        return {k: r.value for k, r in store.read_all().items()}
    finally:
        store.close()


async def test_shards_are_hosted_and_handed_over_at_run_time(tmp_path: Path) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=2, flush_interval=3600.0)
    stand_ins: dict[int, StandIn] = {}

    def elsewhere(shard: int) -> StandIn:
        stand_ins[shard] = StandIn(shard)
        return stand_ins[shard]

    keys = {s: [k for k in (f"k{i}" for i in range(50)) if shard_of(k, 2) == s][:5]
            for s in (0, 1)}
    stopped: list[tuple[str, str]] = []
    cache = Cache(config, Seams(), elsewhere=elsewhere,
                  on_stop=lambda: _note(stopped, ("on_stop", cache.status.value)))
    with trio.fail_after(30):
        async with open_served(cache._serve) as running:
            assert running is cache
            # Nothing hosted: every call goes to the stand-ins.
            assert await cache.get(keys[0][0]) == b"elsewhere"
            assert (await cache.put(keys[1][0], b"x")).version == 0
            assert stand_ins[1].calls == [("write", keys[1][0])]
            assert cache.hosted(0) is None and cache.hosted(1) is None

            await cache.host(0)
            await cache.host(1)
            assert cache.hosted(0) is not None
            receipts = await cache.put_many({k: k.encode() for s in (0, 1) for k in keys[s]})
            assert all(r.version > 0 for r in receipts)
            assert len(stand_ins[0].calls) == 1 and len(stand_ins[1].calls) == 1
            assert _stored(tmp_path) == {}  # nothing flushed yet

            # Hand shard 0 over: flushed, checkpointed, stopped; its calls go elsewhere.
            await cache.unhost(0)
            assert cache.hosted(0) is None
            assert _stored(tmp_path) == {k: k.encode() for k in keys[0]}
            assert cache.statistics().shards[0].status == "stopped"
            assert await cache.get(keys[0][1]) == b"elsewhere"
            assert await cache.get(keys[1][1]) == keys[1][1].encode()  # shard 1 still here

            # Hosted again: nothing left to replay, the store serves what it holds.
            await cache.host(0)
            assert await cache.get(keys[0][1]) == keys[0][1].encode()
            assert cache.statistics().shards[0].status == "running"
            await cache.put(keys[0][2], b"newer")
    # The stop ran on_stop first, while still running, then drained the hosted shards.
    assert stopped == [("on_stop", "running")]
    assert _stored(tmp_path)[keys[0][2]] == b"newer"
    assert _stored(tmp_path)[keys[1][3]] == keys[1][3].encode()


async def _note(into: list[tuple[str, str]], what: tuple[str, str]) -> None:
    into.append(what)
    await trio.lowlevel.checkpoint()


async def test_a_single_process_cache_hosts_every_shard_and_ignores_unhost(
    tmp_path: Path,
) -> None:
    config = Config(store=f"sqlite:///{tmp_path}/store.db", journal_dir=tmp_path / "journal",
                    shards=2)
    cache = Cache(config, Seams())
    with trio.fail_after(30):
        async with open_served(cache._serve):
            assert cache.hosted(0) is not None and cache.hosted(1) is not None
            await cache.unhost(0)  # no elsewhere to send it to: stays
            assert cache.hosted(0) is not None
            await cache.put("k", b"v")
            assert await cache.get("k") == b"v"
            assert cache.cluster_view() is None
