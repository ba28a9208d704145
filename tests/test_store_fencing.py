"""Store epoch fencing on SQLite (cluster mode): a batch carrying a partition's epoch is
refused, whole, once the store saw a newer epoch of that partition; an unfenced batch is
written exactly as before. PostgreSQL: ``tests/postgres/test_postgres_fencing.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from writebehind import Fence, Rejection, StoreFenced, StoreRecord
from writebehind._stores._sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "s.db", table="t")
    s.connect()
    yield s
    s.close()


def fences(path: Path) -> dict[int, int]:
    """The fence table as a separate connection sees it (committed rows only)."""
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT partition_id, epoch FROM t_fences").fetchall())
    finally:
        db.close()


def records(prefix: str, version: int, count: int = 3) -> list[StoreRecord]:
    return [StoreRecord(f"{prefix}{i}", b"%s-%d" % (prefix.encode(), version), version)
            for i in range(count)]


@pytest.mark.parametrize("max_rows", [1024, 2], ids=["one-statement", "chunked"])
def test_an_older_epoch_is_refused_and_nothing_of_its_batch_is_written(
    store: SQLiteStore, max_rows: int
) -> None:
    store._max_rows = max_rows
    assert store.write_batch_fenced(records("a", 5 << 40), Fence(3, 5)) == ()
    before = store.read_all()
    # The zombie's batch: newer versions of the same keys and new keys, from epoch 4.
    zombie = records("a", (5 << 40) + 99) + records("z", 4 << 40)
    with pytest.raises(StoreFenced) as caught:
        store.write_batch_fenced(zombie, Fence(3, 4))
    assert (caught.value.partition, caught.value.epoch, caught.value.current) == (3, 4, 5)
    assert "partition 3 from epoch 4" in str(caught.value)
    assert "now has epoch 5" in str(caught.value)
    assert store.read_all() == before
    assert fences(store.path) == {3: 5}
    assert not store._conn().in_transaction  # rolled back, the connection usable
    assert store.quarantine_rows() == []  # never quarantined


def test_the_same_or_a_newer_epoch_is_accepted_and_a_newer_one_recorded(
    store: SQLiteStore,
) -> None:
    store.write_batch_fenced(records("a", 5 << 40), Fence(3, 5))
    store.write_batch_fenced(records("b", 5 << 40), Fence(3, 5))  # the same owner again
    assert fences(store.path) == {3: 5}
    store.write_batch_fenced(records("c", 7 << 40), Fence(3, 7))  # a take-over
    assert fences(store.path) == {3: 7}
    assert {k[0] for k in store.read_all()} == {"a", "b", "c"}
    with pytest.raises(StoreFenced):  # an epoch between is older than the newest now
        store.write_batch_fenced(records("d", 6 << 40), Fence(3, 6))
    assert fences(store.path) == {3: 7}


def test_partitions_are_fenced_independently(store: SQLiteStore) -> None:
    store.write_batch_fenced(records("a", 9 << 40), Fence(1, 9))
    store.write_batch_fenced(records("b", 2 << 40), Fence(2, 2))  # partition 2 is its own
    assert fences(store.path) == {1: 9, 2: 2}
    with pytest.raises(StoreFenced):
        store.write_batch_fenced(records("c", 1 << 40), Fence(2, 1))


def test_an_unfenced_batch_is_written_as_before_and_never_checked(
    store: SQLiteStore, tmp_path: Path
) -> None:
    store.write_batch(records("a", 1))
    # Single-process mode never creates the fence table.
    db = sqlite3.connect(tmp_path / "s.db")
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert "t_fences" not in tables
    store.write_batch_fenced(records("b", 8 << 40), Fence(0, 8))
    store.write_batch(records("c", 1))  # no fence: no check, even with a fence table
    assert {k[0] for k in store.read_all()} == {"a", "b", "c"}
    assert fences(store.path) == {0: 8}


def test_a_fenced_batch_with_a_refused_record_checks_its_fence_too(
    store: SQLiteStore,
) -> None:
    store.write_batch_fenced(records("a", 5 << 40), Fence(3, 5))
    store._conn().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200)  # a value over it: DataError
    big = StoreRecord("big", b"v" * 300, 4 << 40)
    with pytest.raises(StoreFenced):  # the one-by-one path (after the refusal) is fenced
        store.write_batch_fenced([StoreRecord("x", b"1", 4 << 40), big], Fence(3, 4))
    assert "x" not in store.read_all() and store.quarantine_rows() == []
    # The owner's own batch with that record: the refusal is quarantined, the rest lands.
    outcome = store.write_batch_fenced([StoreRecord("y", b"1", 6 << 40), big], Fence(3, 6))
    assert [type(o) for o in outcome] == [Rejection]
    assert store.read("y") == StoreRecord("y", b"1", 6 << 40)
    assert fences(store.path) == {3: 6}


def test_a_store_that_lost_its_connection_creates_the_fence_table_on_the_next(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    s = SQLiteStore(path, table="t")
    s.connect()
    s.write_batch_fenced(records("a", 2 << 40), Fence(0, 2))
    s.close()
    path.unlink()  # a new file behind the same URL: the table must be made again
    for extra in ("-wal", "-shm"):
        Path(str(path) + extra).unlink(missing_ok=True)
    s.connect()
    try:
        s.write_batch_fenced(records("b", 1 << 40), Fence(0, 1))
        assert fences(path) == {0: 1}
    finally:
        s.close()
