"""The SQLite store's batched upsert: every batch size, chunked or not, is one transaction of
versioned writes that only move forward."""

from __future__ import annotations

from pathlib import Path

import pytest

from writebehind import StoreRecord
from writebehind._store import SQLiteStore, _chunks


@pytest.mark.parametrize("count", [0, 1, 3, 300, 1024, 1025, 3000])
def test_chunks_cover_the_batch_with_few_statement_shapes(count: int) -> None:
    sizes = _chunks(count, 1024)
    assert sum(sizes) == count
    assert all(size == 1024 or size & (size - 1) == 0 for size in sizes)


@pytest.mark.parametrize("max_rows", [1, 4, 1024])
@pytest.mark.parametrize("count", [0, 1, 7, 64, 300])
def test_write_batch_upserts_every_record_and_never_goes_back(
    tmp_path: Path, max_rows: int, count: int
) -> None:
    store = SQLiteStore(tmp_path / "s.db", table="t")
    store.connect()
    store._max_rows = max_rows  # chunked (one transaction of several statements) or not
    try:
        store.write_batch([StoreRecord(f"k{i}", b"old", 10) for i in range(count)])
        newer = [
            StoreRecord(f"k{i}", None if i % 3 == 0 else b"new%d" % i, 20)
            for i in range(0, count, 2)
        ]
        older = [StoreRecord(f"k{i}", b"stale", 5) for i in range(1, count, 2)]
        assert store.write_batch(newer + older) == ()
        found = store.read_all()
        assert len(found) == count
        for i in range(count):
            expected = newer[i // 2] if i % 2 == 0 else StoreRecord(f"k{i}", b"old", 10)
            assert found[f"k{i}"] == expected
    finally:
        store.close()
