"""One routing rule: the put path's inlined copy agrees with ``shard_of`` for every key."""

from __future__ import annotations

from pathlib import Path

import trio
from hypothesis import given
from hypothesis import strategies as st

from writebehind import Config, open_cache, shard_of
from writebehind._core._routing import shard_of_utf8

CAP = 30  # seconds: a hung test fails instead of blocking CI


@given(st.text(min_size=1, max_size=40), st.integers(1, 64))
def test_shard_of_is_crc32_of_the_utf8_bytes(key: str, shards: int) -> None:
    assert shard_of(key, shards) == shard_of_utf8(key.encode("utf-8"), shards)


async def test_the_cache_routes_each_key_to_shard_of(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        config = Config(store=f"sqlite:///{tmp_path}/s.db", journal_dir=tmp_path / "j",
                        shards=7)
        async with open_cache(config) as cache:
            for key in [f"k{i}" for i in range(200)] + ["é", "日本", "a" * 300]:
                shard, raw = cache._route(key)
                assert (shard.shard, raw) == (shard_of(key, 7), key.encode("utf-8"))
