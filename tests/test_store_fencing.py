"""Store epoch fencing on SQLite (cluster mode): a batch carrying a partition's epoch is
refused, whole, once the store saw a newer epoch of that partition; an unfenced batch is
written exactly as before. PostgreSQL: ``tests/postgres/test_postgres_fencing.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from writebehind import Config, ConfigError, Fence, Rejection, Seams, StoreFenced, StoreRecord
from writebehind._core._routing import EPOCH_SHIFT
from writebehind._runtime._cache import Cache
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


# -- the runtime: a zombie incarnation's flush is refused, and it gives up -----------------

CAP = 30


class MovingEpochs:
    """An ``EpochSource`` whose epochs fence the store, as a cluster's leases do: the first
    take of a partition gets ``first``; a later one (a restart) waits until the test says
    the partition is free again (another owner held it meanwhile), then gets ``after``."""

    fences = True

    def __init__(self, first: int, after: int) -> None:
        self.first, self.after = first, after
        self.taken: list[tuple[int, int]] = []
        self.asked_again = trio.Event()
        self.free = trio.Event()
        self.fenced_out: list[tuple[int, int]] = []

    def fenced(self, shard: int, epoch: int) -> None:
        self.fenced_out.append((shard, epoch))

    async def take_epoch(self, shard: int) -> int:
        await trio.lowlevel.checkpoint()
        if self.taken:
            self.asked_again.set()
            await self.free.wait()
        epoch = self.after if self.taken else self.first
        self.taken.append((shard, epoch))
        return epoch


async def test_a_zombie_incarnations_flush_is_refused_it_stops_and_its_writes_land_later(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    config = Config(store=f"sqlite:///{path}", store_table="t", journal_dir=tmp_path / "j",
                    shards=1, ack="fsync", flush_interval=0.01, restart_period=60)
    epochs = MovingEpochs(first=10, after=12)
    other = SQLiteStore(path, table="t")
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            cache = Cache(config, Seams(), epochs=epochs)
            await nursery.start(cache._serve)
            await cache.put("a", b"before")
            await cache.flush()  # landed with epoch 10
            # Another member takes partition 0 over (epoch 11) and flushes; this one is a
            # zombie that does not know yet.
            other.connect()
            other.write_batch_fenced([StoreRecord("b", b"new owner", 11 << 40 | 1)],
                                     Fence(0, 11))
            receipt = await cache.put("z", b"zombie")  # journaled and synced: acknowledged
            assert receipt.version >> EPOCH_SHIFT == 10
            with trio.move_on_after(10):
                await epochs.asked_again.wait()
            # Its flush was refused: the incarnation stopped and its restart asks again.
            assert epochs.asked_again.is_set(), "the zombie's flush was not refused"
            assert other.read("z") is None  # nothing of the refused batch was written
            crashes = [e for e in cache.recent_events() if e.kind == "crash"]
            assert len(crashes) == 1 and "StoreFenced" in crashes[0].detail
            assert "from epoch 10" in crashes[0].detail and "epoch 11" in crashes[0].detail
            # The partition is free again: the restart takes epoch 12, replays its journal
            # and flushes what the zombie acknowledged (the contract: nothing acknowledged
            # is lost; in a cluster the new owner replays the partition's subject instead).
            epochs.free.set()
            await cache.flush()
            await cache.aclose()
    try:
        assert epochs.taken == [(0, 10), (0, 12)]
        assert epochs.fenced_out == [(0, 10)]  # the source was told, once
        found = other.read_all()
        assert found["z"] == StoreRecord("z", b"zombie", receipt.version)
        assert found["a"].value == b"before" and found["b"].value == b"new owner"
        assert fences(path) == {0: 12}
    finally:
        other.close()


async def test_a_cache_whose_epochs_fence_refuses_a_store_that_cannot(tmp_path: Path) -> None:
    class Unfenced:
        """A store without write_batch_fenced (as a store of one's own may be)."""

        blocking = False

        def __init__(self) -> None:
            self.inner = SQLiteStore(tmp_path / "s.db", table="t")
            self.blocking = False

        def __repr__(self) -> str:
            return "Unfenced"

        def __getattr__(self, name: str) -> object:
            if name == "write_batch_fenced":
                raise AttributeError(name)
            return getattr(self.inner, name)

    config = Config(store=f"sqlite:///{tmp_path}/s.db", store_table="t",
                    journal_dir=tmp_path / "j", shards=1, ack="fsync")
    seams = Seams(store_factory=Unfenced)  # type: ignore[arg-type]
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ConfigError, match=r"^Unfenced cannot fence batches"):
                await nursery.start(Cache(config, seams, epochs=MovingEpochs(1, 2))._serve)


def test_the_catalogues_older_epoch_mutant_would_be_caught_here(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chaos catalogue's ``store-fence-accepts-older-epoch`` (which the smoke suite
    cannot reach) applied to the fence statement: the older epoch gets through and the
    partition's epoch goes back, which the checks above refuse."""
    from writebehind._stores import _sql
    from writebehind.chaos._catalogue import by_name

    mutant = by_name("store-fence-accepts-older-epoch")
    mutated: dict[str, object] = {"__name__": "writebehind._stores._sql_mutant",
                                  "__package__": "writebehind._stores"}
    exec(compile(mutant.apply(Path(_sql.__file__).read_text()), "_sql", "exec"), mutated)
    store.write_batch_fenced(records("a", 5 << 40), Fence(3, 5))
    monkeypatch.setattr(_sql, "fence", mutated["fence"])
    store.write_batch_fenced(records("z", 4 << 40), Fence(3, 4))  # no StoreFenced
    assert "z0" in store.read_all() and fences(store.path) == {3: 4}
