"""FaultyStore over a MemoryStore and a real SQLiteStore: each fault does what it says."""

from collections.abc import Callable
from pathlib import Path

import pytest

from writebehind import SQLiteStore, Store, StoreRecord, StoreUnavailable
from writebehind.harness import FaultInjector, FaultPlan, MemoryStore, StoreFaults


def memory(tmp_path: Path) -> Callable[[], Store]:
    db = MemoryStore()
    return db.factory  # type: ignore[return-value]


def sqlite(tmp_path: Path) -> Callable[[], Store]:
    return lambda: SQLiteStore(tmp_path / "store.db")


@pytest.fixture(params=[memory, sqlite], ids=["memory", "sqlite"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    make: Callable[[Path], Callable[[], Store]] = request.param
    return make(tmp_path)


def faulty(factory: Callable[[], Store], *kinds: str) -> tuple[Store, Store, StoreFaults]:
    plan = FaultPlan(0, dict.fromkeys(kinds, 1.0))
    faults = StoreFaults(FaultInjector(plan), pause=lambda seconds: None)
    store = faults.wrap(factory())
    store.connect()
    plain = factory()
    plain.connect()
    return store, plain, faults


def rec(key: str, value: bytes | None, version: int) -> StoreRecord:
    return StoreRecord(key, value, version)


def test_a_transient_error_writes_nothing(factory: Callable[[], Store]) -> None:
    store, plain, _ = faulty(factory, "store.unavailable")
    with pytest.raises(StoreUnavailable, match=r"store\.unavailable"):
        store.write_batch([rec("a", b"1", 1)])
    assert plain.read_all() == {}


def test_a_timeout_after_the_commit_wrote_the_batch(factory: Callable[[], Store]) -> None:
    store, plain, _ = faulty(factory, "store.applied_then_timeout")
    with pytest.raises(StoreUnavailable, match="applied_then_timeout"):
        store.write_batch([rec("a", b"1", 1)])
    assert plain.read("a") == rec("a", b"1", 1)
    with pytest.raises(StoreUnavailable):
        store.write_batch([rec("a", b"1", 1)])  # the retry is idempotent
    assert plain.read("a") == rec("a", b"1", 1)


def test_a_reordered_batch_lands_after_a_later_one_without_undoing_it(
    factory: Callable[[], Store],
) -> None:
    store, plain, faults = faulty(factory, "store.reorder")
    with pytest.raises(StoreUnavailable, match="still on its way"):
        store.write_batch([rec("a", b"old", 1)])
    assert plain.read_all() == {} and len(faults.held) == 1
    faults.injector.quiet = True
    store.write_batch([rec("a", b"new", 2)])
    assert plain.read("a") == rec("a", b"new", 2) and faults.held == []


def test_held_batches_can_be_delivered_at_the_end(factory: Callable[[], Store]) -> None:
    store, plain, faults = faulty(factory, "store.reorder")
    with pytest.raises(StoreUnavailable):
        store.write_batch([rec("a", b"1", 1)])
    assert faults.deliver_held(plain) == 1 and plain.read("a") == rec("a", b"1", 1)


def test_a_rejected_record_is_refused_for_good_and_the_rest_lands(
    factory: Callable[[], Store],
) -> None:
    store, plain, faults = faulty(factory, "store.reject")
    rejected = store.write_batch([rec("a", b"1", 1)])
    assert [(r.key, r.version) for r in rejected] == [("a", 1)]
    faults.injector.quiet = True
    assert store.write_batch([rec("a", b"1", 1), rec("b", b"2", 1)])[0].key == "a"
    assert plain.read("a") is None and plain.read("b") == rec("b", b"2", 1)
    assert store.write_batch([rec("a", b"3", 2)]) == ()  # a newer version is welcome


def test_a_dropped_connection_fails_until_reconnected(factory: Callable[[], Store]) -> None:
    store, plain, faults = faulty(factory, "store.disconnect")
    with pytest.raises(StoreUnavailable, match="dropped"):
        store.write_batch([rec("a", b"1", 1)])
    faults.injector.quiet = True
    with pytest.raises(StoreUnavailable):
        store.write_batch([rec("a", b"1", 1)])
    store.connect()
    store.write_batch([rec("a", b"1", 1)])
    assert plain.read("a") == rec("a", b"1", 1)


def test_a_duplicated_delivery_applies_once_in_effect(factory: Callable[[], Store]) -> None:
    store, plain, faults = faulty(factory, "store.duplicate")
    assert store.write_batch([rec("a", b"1", 1)]) == ()
    assert plain.read_all() == {"a": rec("a", b"1", 1)}
    assert faults.injector.counts["store.duplicate"] == 1


def test_a_slow_call_takes_simulated_time_and_read_errors_are_transient(
    factory: Callable[[], Store],
) -> None:
    paused: list[float] = []
    faults = StoreFaults(
        FaultInjector(FaultPlan(0, {"store.slow": 1.0, "store.read_error": 1.0})),
        pause=paused.append,
    )
    store = faults.wrap(factory())
    store.connect()
    store.write_batch([rec("a", b"1", 1)])
    assert len(paused) == 1 and 0.2 <= paused[0] <= 3.0
    with pytest.raises(StoreUnavailable, match="read_error"):
        store.read("a")
    faults.injector.quiet = True
    assert store.read("a") == rec("a", b"1", 1)
