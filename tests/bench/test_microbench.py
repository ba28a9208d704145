"""Micro-benchmarks of the pure cores, so a regression shows in ``pytest --benchmark-only``.

Each runs a handful of rounds (pedantic mode): as cheap as an ordinary test, and each checks
what its loop produced so it can fail.
"""

from __future__ import annotations

import random

import pytest

from writebehind._core._shard_core import FlushPolicy, ShardCore
from writebehind._journal import RecordKind, scan_segment
from writebehind._journal._codec import SegmentHeader, encode_frame, salt_seed

pytestmark = pytest.mark.microbench
N = 2_000
VALUE = b"v" * 100
KEYS = [f"key-{i:06d}" for i in range(N)]


def _core() -> ShardCore:
    return ShardCore(0, 1, FlushPolicy(batch_size=512), max_entries=10 * N,
                     rng=random.Random(0))


def test_shard_core_write(benchmark) -> None:  # type: ignore[no-untyped-def]
    def write_all(core: ShardCore) -> ShardCore:
        for i, key in enumerate(KEYS):
            core.write(key, VALUE, i + 1, i + 1, 0.0)
        return core

    core = benchmark.pedantic(write_all, setup=lambda: ((_core(),), {}), rounds=5)
    assert len(core.dirty) == N and core.last_seq == N


def test_shard_core_take_batch_and_on_ack(benchmark) -> None:  # type: ignore[no-untyped-def]
    def setup() -> tuple[tuple[ShardCore], dict[str, object]]:
        core = _core()
        for i, key in enumerate(KEYS):
            core.write(key, VALUE, i + 1, i + 1, 0.0)
        return (core,), {}

    def drain(core: ShardCore) -> ShardCore:
        while (batch := core.take_batch(10.0)) is not None:
            core.on_ack(batch.batch_id)
        return core

    core = benchmark.pedantic(drain, setup=setup, rounds=5)
    assert not core.dirty and len(core.clean) == N and core.persisted_mark() == N


def test_encode_frame(benchmark) -> None:  # type: ignore[no-untyped-def]
    seed = salt_seed(12345)
    raw_keys = [k.encode() for k in KEYS]

    def encode_all() -> bytes:
        return b"".join(
            encode_frame(i + 1, RecordKind.PUT, key, VALUE, i + 1, seed)
            for i, key in enumerate(raw_keys)
        )

    data = benchmark.pedantic(encode_all, rounds=5)
    assert len(data) > N * len(VALUE)


def test_scan_segment(benchmark) -> None:  # type: ignore[no-untyped-def]
    salt = 12345
    header = SegmentHeader(shard_id=0, salt=salt, first_seq=1)
    seed = salt_seed(salt)
    data = header.encode() + b"".join(
        encode_frame(i + 1, RecordKind.PUT, key.encode(), VALUE, i + 1, seed)
        for i, key in enumerate(KEYS)
    )
    scan = benchmark.pedantic(
        lambda: scan_segment(data, path="00000000000000000001.wal", is_last=True), rounds=5
    )
    assert len(scan.records) == N and scan.torn_tail is None
    assert scan.records[-1].key == KEYS[-1]
