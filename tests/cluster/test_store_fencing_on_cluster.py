"""Store epoch fencing on a real three-node NATS cluster: a paused owner's flush, sent before
the pause and landing after another member took its partitions over, is refused by the
store, and the store's versions never go backwards.

The pause: the first member's store connection holds its batch (a worker thread waiting at a
gate, as a process stopped between sending a batch and its commit would), and the member's
tasks are cancelled without releasing anything (its renewals stop, its leases expire). The
second member waits the leases out, fences the subjects, replays, flushes and overwrites;
then the gate opens and the first member's batch reaches the store with its old epoch."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import Config, Fence, StoreFenced, StoreRecord
from writebehind._cluster._bridge import connect
from writebehind._cluster._epochs import LeaseEpochs
from writebehind._cluster._member import open_member
from writebehind._core._partition_lease import HeldLease
from writebehind._core._routing import EPOCH_SHIFT
from writebehind._runtime._cache import Cache
from writebehind._runtime._seams import Seams
from writebehind._stores._postgres import PostgresStore
from writebehind._stores._protocol import Store, WriteOutcome
from writebehind._stores._sqlite import SQLiteStore

from .nodes import NatsCluster

CLUSTER = "fencing"
SHARDS = 4
LEASES = {"ttl": 3.0, "renew_every": 0.5, "drift": 0.5}
PG_URL = os.environ.get("WRITEBEHIND_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(Config.store, Config.store_table)``: a SQLite file, or a fresh PostgreSQL table
    (dropped after; skipped outside CI when the server is unreachable)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db", "writebehind_entries"
        return
    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    table = f"wb_fence_{uuid.uuid4().hex[:12]}"
    yield PG_URL, table
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for suffix in ("", "_meta", "_quarantine", "_fences"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


class Gated:
    """A store connection whose fenced writes wait while ``gate`` is shut, recording what
    became of each. It has no table lease: both members write one table (cluster mode
    drops the single-process table lease; until it does, this stands in for that)."""

    blocking = True

    def __init__(self, inner: SQLiteStore | PostgresStore, gate: threading.Event, log: list[Any],
                 waiting: list[int]) -> None:
        self.inner = inner
        self.limits = inner.limits
        self._gate, self._log, self._waiting = gate, log, waiting

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_lease"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def write_batch_fenced(self, records: Sequence[StoreRecord], fence: Fence) -> WriteOutcome:
        self._waiting.append(1)
        self._gate.wait(60)
        try:
            outcome = self.inner.write_batch_fenced(records, fence)
        except StoreFenced as exc:
            self._log.append(exc)
            raise
        self._log.append((fence, len(records)))
        return outcome


def gated(gate: threading.Event, log: list[Any], waiting: list[int]) -> Any:
    def wrap(store: Store) -> Store:
        assert isinstance(store, SQLiteStore | PostgresStore)
        return Gated(store, gate, log, waiting)  # type: ignore[return-value]

    return wrap


async def test_a_paused_owners_late_flush_is_refused_and_versions_never_go_back(
    nats_cluster: NatsCluster, tmp_path: Path, store_url: tuple[str, str],
) -> None:
    url, table = store_url
    config = Config(store=url, store_table=table, journal_dir=tmp_path / "journal",
                    shards=SHARDS, ack="fsync", flush_interval=0.05)
    before = {f"a{i}": b"a %d" % i for i in range(40)}
    during = {f"b{i}": b"b %d" % i for i in range(40)}
    after = {f"b{i}": b"b new %d" % i for i in range(0, 40, 2)}
    gate1, log1, waiting1 = threading.Event(), list[Any](), list[int]()
    gate1.set()
    open_gate, log2, waiting2 = threading.Event(), list[Any](), list[int]()
    open_gate.set()
    stored_mid: dict[str, StoreRecord] = {}
    epochs1: dict[int, int] = {}
    epochs2: dict[int, int] = {}
    reader = (SQLiteStore(tmp_path / "store.db", table=table) if url.startswith("sqlite")
              else PostgresStore(url, table=table))
    landed_before: list[int] = []

    with trio.fail_after(120):
        async with connect(nats_cluster.servers) as conn1, connect(nats_cluster.servers) as conn2:
            async with trio.open_nursery() as outer:
                member1 = trio.CancelScope()
                acked1 = trio.Event()

                async def first_member() -> None:
                    with member1:
                        async with open_member(conn1, CLUSTER, "a", **LEASES) as m1:
                            async with trio.open_nursery() as nursery:
                                cache1 = Cache(config, Seams(wrap_store=gated(gate1, log1,
                                                                              waiting1)),
                                               epochs=m1.epochs)
                                await nursery.start(cache1._serve)
                                for key, value in before.items():
                                    await cache1.put(key, value)
                                await cache1.flush()
                                epochs1.update({p: h.epoch for p, h in m1.epochs.held().items()})
                                landed_before.append(len(log1))
                                gate1.clear()  # the next flush waits on the wire ...
                                for key, value in during.items():
                                    await cache1.put(key, value)  # acknowledged (journaled)
                                acked1.set()
                                await trio.sleep_forever()

                outer.start_soon(first_member)
                await acked1.wait()
                with trio.move_on_after(20):
                    while len(waiting1) <= len(log1):
                        await trio.sleep(0.01)
                assert len(waiting1) > len(log1), "no fenced batch of `during` reached the store"
                member1.cancel()  # ... and the process pauses: no renewals, no release
                reader.connect()
                stored_mid.update(reader.read_all())

                async with open_member(conn2, CLUSTER, "b", **LEASES) as m2:
                    async with trio.open_nursery() as nursery:
                        cache2 = Cache(config, Seams(wrap_store=gated(open_gate, log2,
                                                                      waiting2)),
                                       epochs=m2.epochs)
                        await nursery.start(cache2._serve)  # waits out the leases
                        epochs2.update({p: h.epoch for p, h in m2.epochs.held().items()})
                        for key, value in during.items():  # replayed from the subjects
                            assert await cache2.get(key) == value, key
                        for key, value in after.items():
                            await cache2.put(key, value)
                        await cache2.flush()
                        stored_new = reader.read_all()
                        gate1.set()  # the first member wakes: its held batch goes on
                        with trio.move_on_after(20):
                            while not any(isinstance(e, StoreFenced) for e in log1):
                                await trio.sleep(0.02)
                        stored_late = reader.read_all()
                        await cache2.aclose()
    reader.close()

    assert all(epochs2[p] > epochs1[p] for p in epochs1), (epochs1, epochs2)
    refused = [e for e in log1 if isinstance(e, StoreFenced)]
    assert refused, f"the paused member's late flush was not refused: {log1}"
    for exc in refused:
        assert exc.epoch == epochs1[exc.partition] and exc.current == epochs2[exc.partition]
    # Before the pause every batch landed; nothing the first member sent after it did.
    assert all(isinstance(e, tuple) for e in log1[:landed_before[0]])
    assert all(isinstance(e, StoreFenced) for e in log1[landed_before[0]:]), log1
    assert all(isinstance(e, tuple) for e in log2)  # the new owner's batches all landed
    # Versions never went back, at any point we looked; everything acknowledged is there.
    for earlier, later in ((stored_mid, stored_new), (stored_new, stored_late)):
        for key, record in earlier.items():
            assert later[key].version >= record.version, key
    assert stored_late == stored_new
    final = {k: r.value for k, r in stored_late.items()}
    assert final == {**before, **during, **after}
    assert {r.version >> EPOCH_SHIFT for k, r in stored_late.items() if k in after} <= set(
        epochs2.values()
    )



def test_lease_epochs_forget_a_fenced_lease_but_not_a_newer_retake() -> None:
    """What the shard tells its ``EpochSource`` when the store fenced a batch out: the lease
    of that epoch is dropped like a refused renewal (no NATS needed)."""
    epochs = LeaseEpochs(None, monotonic=lambda: 0.0)  # type: ignore[arg-type]
    epochs._held[1] = HeldLease(1, epoch=5, revision=9, sent=0.0, ttl=10.0, drift=2.0)
    epochs._held[2] = HeldLease(2, epoch=7, revision=12, sent=0.0, ttl=10.0, drift=2.0)
    assert epochs.fences and epochs.may_acknowledge(1, 5)
    epochs.fenced(1, 5)
    assert not epochs.may_acknowledge(1, 5) and 1 not in epochs.held() and epochs.lost == 1
    epochs.fenced(2, 6)  # an older incarnation's late answer: epoch 7 is this member's now
    assert epochs.may_acknowledge(2, 7) and epochs.lost == 1
