"""The SQLite store's batched upsert: every batch size, chunked or not, is one transaction of
versioned writes that only move forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from writebehind import Rejection, StoreRecord, Superseded
from writebehind._stores._sqlite import SQLiteStore, _chunks


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
        # The older ones did not apply: the store says so (it holds newer versions).
        assert store.write_batch(newer + older) == tuple(
            Superseded(r.key, r.version) for r in older
        )
        found = store.read_all()
        assert len(found) == count
        for i in range(count):
            expected = newer[i // 2] if i % 2 == 0 else StoreRecord(f"k{i}", b"old", 10)
            assert found[f"k{i}"] == expected
    finally:
        store.close()


def test_a_retried_batch_is_not_superseded_by_its_own_versions(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", table="t")
    store.connect()
    try:
        batch = [StoreRecord("a", b"1", 7), StoreRecord("b", None, 8)]
        assert store.write_batch(batch) == ()
        assert store.write_batch(batch) == ()  # the store holds these very versions
        assert store.write_batch([StoreRecord("a", b"0", 6)]) == (Superseded("a", 6),)
    finally:
        store.close()


def test_durability_settings_are_what_the_connection_runs_with(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", table="t")
    store.connect()
    try:
        assert store.durability_settings() == (2, "wal")  # synchronous=FULL
        store._conn().execute("PRAGMA synchronous=NORMAL")
        assert store.durability_settings() == (1, "wal")
    finally:
        store.close()


def _tiny_limit(store: SQLiteStore, limit: int) -> None:
    db = store._conn()
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)


def test_a_record_sqlite_refuses_for_good_is_quarantined_and_the_rest_lands(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db", table="t")
    store.connect()
    try:
        store.write_batch([StoreRecord("old", b"x", 9)])
        _tiny_limit(store, 200)  # "string or blob too big": sqlite3.DataError
        big = StoreRecord("big", b"v" * 300, 10)
        outcome = store.write_batch([StoreRecord("a", b"1", 10), big, StoreRecord("old", b"y", 8)])
        assert [type(o) for o in outcome] == [Rejection, Superseded]
        assert outcome[0].key == "big" and "too big" in outcome[0].reason  # type: ignore[union-attr]
        assert outcome[1] == Superseded("old", 8)
        assert store.read("a") == StoreRecord("a", b"1", 10)
        rows = store.quarantine_rows()
        assert [(r.key, r.version, r.resolution) for r in rows] == [("big", 10, None)]
        # Refused again (a replay): one row, not two.
        store.write_batch([big])
        assert len(store.quarantine_rows()) == 1
        # An operator discards it: from then on the store answers it as superseded.
        assert store.resolve_quarantine("discard", ["big"]) == 1
        assert store.write_batch([big]) == (Superseded("big", 10),)
        assert [r.resolution for r in store.quarantine_rows()] == ["discard"]
        # Retried: the table forgets it; refused again, it is quarantined again.
        assert store.resolve_quarantine("retry") == 1
        assert store.quarantine_rows() == []
        assert [type(o) for o in store.write_batch([big])] == [Rejection]
    finally:
        store.close()
