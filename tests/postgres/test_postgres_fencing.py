"""Store epoch fencing on PostgreSQL (cluster mode): a batch carrying a partition's epoch is
refused, whole, once the store saw a newer epoch of that partition, including one a
concurrent transaction is committing; an unfenced batch is written exactly as before."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from writebehind import Fence, StoreFenced, StoreRecord
from writebehind._stores import _sql
from writebehind._stores._postgres import PostgresStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(pg_url: str, pg_table: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_url, table=pg_table)
    s.connect()
    yield s
    s.close()


def fences(url: str, table: str) -> dict[int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return dict(conn.execute(f"SELECT partition_id, epoch FROM {table}_fences").fetchall())


def tables(url: str, table: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (table + "%",)
        ).fetchall()
    return {r[0] for r in rows}


def records(prefix: str, version: int, count: int = 3) -> list[StoreRecord]:
    return [StoreRecord(f"{prefix}{i}", b"%s-%d" % (prefix.encode(), version), version)
            for i in range(count)]


def test_an_older_epoch_is_refused_and_nothing_of_its_batch_is_written(
    store: PostgresStore, pg_url: str, pg_table: str
) -> None:
    assert store.write_batch_fenced(records("a", 5 << 40), Fence(3, 5)) == ()
    before = store.read_all()
    zombie = records("a", (5 << 40) + 99) + records("z", 4 << 40)
    with pytest.raises(StoreFenced) as caught:
        store.write_batch_fenced(zombie, Fence(3, 4))
    assert (caught.value.partition, caught.value.epoch, caught.value.current) == (3, 4, 5)
    assert store.read_all() == before
    assert fences(pg_url, pg_table) == {3: 5}
    assert store.quarantine_rows() == []
    # The connection is still usable: the refusal rolled back, nothing more.
    store.write_batch_fenced(records("b", 5 << 40), Fence(3, 5))
    assert len(store.read_all()) == 6


def test_the_same_or_a_newer_epoch_is_accepted_and_a_newer_one_recorded(
    store: PostgresStore, pg_url: str, pg_table: str
) -> None:
    store.write_batch_fenced(records("a", 5 << 40), Fence(3, 5))
    store.write_batch_fenced(records("b", 5 << 40), Fence(3, 5))
    assert fences(pg_url, pg_table) == {3: 5}
    store.write_batch_fenced(records("c", 7 << 40), Fence(3, 7))
    store.write_batch_fenced(records("d", 1 << 40), Fence(4, 1))  # another partition
    assert fences(pg_url, pg_table) == {3: 7, 4: 1}
    with pytest.raises(StoreFenced):
        store.write_batch_fenced(records("e", 6 << 40), Fence(3, 6))
    assert {k[0] for k in store.read_all()} == {"a", "b", "c", "d"}


def test_an_unfenced_batch_is_written_as_before_and_never_checked(
    store: PostgresStore, pg_url: str, pg_table: str
) -> None:
    store.write_batch(records("a", 1))
    assert pg_table + "_fences" not in tables(pg_url, pg_table)  # single-process: no table
    store.write_batch_fenced(records("b", 8 << 40), Fence(0, 8))
    store.write_batch(records("c", 1))
    assert {k[0] for k in store.read_all()} == {"a", "b", "c"}
    assert fences(pg_url, pg_table) == {0: 8}


def test_a_zombie_batch_racing_the_new_owners_commit_waits_for_it_and_is_refused(
    store: PostgresStore, pg_url: str, pg_table: str
) -> None:
    import psycopg

    store.write_batch_fenced(records("a", 5 << 40), Fence(3, 5))
    result: list[object] = []
    with psycopg.connect(pg_url) as owner:
        # The new owner's transaction has recorded epoch 6 and not committed yet.
        owner.execute(_sql.fence(pg_table, "%s"), (3, 6))

        def zombie() -> None:
            try:
                result.append(store.write_batch_fenced(records("z", 5 << 40), Fence(3, 5)))
            except StoreFenced as exc:
                result.append(exc)

        thread = threading.Thread(target=zombie)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the zombie's batch did not wait for the fence row's lock"
        owner.commit()
        thread.join(30)
    assert not thread.is_alive()
    assert len(result) == 1 and isinstance(result[0], StoreFenced), result
    assert not any(k.startswith("z") for k in store.read_all())
    assert fences(pg_url, pg_table) == {3: 6}
