"""Partition leases: the pure rule, and compare-and-set on a real three-node KV bucket."""

from __future__ import annotations

import time

import pytest
import trio

from writebehind._cluster._bridge import NatsConnection, connect
from writebehind._cluster._epochs import MAX_EPOCH, EpochOverflow, LeaseEpochs
from writebehind._cluster._lease import PartitionHeld, PartitionLeases, PartitionLost, open_bucket
from writebehind._core._partition_lease import (
    HeldLease,
    KvEntry,
    LeaseValue,
    Step,
    check_timing,
    decide_acquire,
    next_epoch,
)

from .nodes import NatsCluster

# -- the pure rule --------------------------------------------------------------------------


def test_decide_acquire_creates_takes_or_waits() -> None:
    assert decide_acquire(None, "a", 100.0).step is Step.CREATE
    held = KvEntry(LeaseValue("b", expires=105.0, epoch=3), revision=7)
    wait = decide_acquire(held, "a", 100.0)
    assert wait.step is Step.WAIT and wait.holder == held.value
    assert decide_acquire(held, "a", 105.0) == decide_acquire(held, "a", 200.0)
    assert decide_acquire(held, "a", 105.0).step is Step.TAKE
    assert decide_acquire(held, "a", 105.0).last == 7
    # Released (deleted) or unreadable: take it on the revision read.
    assert decide_acquire(KvEntry(None, 9), "a", 0.0).last == 9
    # A member's own unexpired lease from before a restart is not inherited.
    assert decide_acquire(KvEntry(LeaseValue("a", 105.0), 7), "a", 100.0).step is Step.WAIT


def test_taking_a_lapsed_lease_of_another_member_is_a_take_over() -> None:
    lapsed = KvEntry(LeaseValue("b", expires=105.0, epoch=3), revision=7)
    assert decide_acquire(lapsed, "a", 106.0).taken_from == "b"
    # Released (expires 0: a graceful hand-over), never written, or unreadable: none.
    released = KvEntry(LeaseValue("b", expires=0.0, epoch=3), revision=8)
    assert decide_acquire(released, "a", 106.0).step is Step.TAKE
    assert decide_acquire(released, "a", 106.0).taken_from is None
    assert decide_acquire(None, "a", 106.0).taken_from is None
    assert decide_acquire(KvEntry(None, 9), "a", 106.0).taken_from is None
    # Its own lapsed lease (the same process, after its renewals stopped) is no take-over.
    assert decide_acquire(KvEntry(LeaseValue("a", 105.0), 7), "a", 106.0).taken_from is None
    # Still held: a wait, not a take-over.
    assert decide_acquire(lapsed, "a", 100.0).taken_from is None


def test_the_holder_stops_acknowledging_drift_before_its_lease_ends() -> None:
    lease = HeldLease(partition=0, epoch=5, revision=5, sent=1000.0, ttl=10.0, drift=2.0)
    assert lease.may_acknowledge(1000.0)
    assert lease.may_acknowledge(1007.999)
    assert not lease.may_acknowledge(1008.0)  # ttl - drift after the write was sent
    assert not lease.may_acknowledge(1010.0)
    renewed = lease.renewed(revision=9, sent=1006.0)
    assert renewed.epoch == 5 and renewed.revision == 9
    assert renewed.may_acknowledge(1013.9) and not renewed.may_acknowledge(1014.0)
    assert not lease.renew_due(1001.9, 2.0) and lease.renew_due(1002.0, 2.0)


def test_timings_that_leave_no_room_for_a_failed_renewal_are_refused() -> None:
    check_timing(10.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="no room"):
        check_timing(10.0, 4.5, 2.0)  # 2 x 4.5 > 10 - 2
    with pytest.raises(ValueError, match="positive"):
        check_timing(10.0, 0.0, 1.0)


def test_lease_values_round_trip_and_foreign_bytes_are_no_lease() -> None:
    value = LeaseValue("m1", 12.5, 4)
    assert LeaseValue.decode(value.encode()) == value
    assert LeaseValue.decode(b"not json") is None
    assert LeaseValue.decode(b'{"member": "x"}') is None


# -- on the cluster ---------------------------------------------------------------------------


async def _leases(conn: NatsConnection, member: str, **timing: float) -> PartitionLeases:
    return await PartitionLeases.open(conn, "wb-leases", member, replicas=3, **timing)


async def test_of_two_contenders_exactly_one_wins(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.urls[0]) as c1, connect(nats_cluster.urls[2]) as c2:
            await open_bucket(c1, "wb-leases", replicas=3)
            for partition in range(8):
                results: dict[str, object] = {}

                async def contend(conn: NatsConnection, member: str, p: int = partition,
                                  out: dict[str, object] = results) -> None:
                    leases = await _leases(conn, member)
                    try:
                        out[member] = await leases.acquire(p)
                    except (PartitionHeld, PartitionLost) as exc:
                        out[member] = exc

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(contend, c1, "a")
                    nursery.start_soon(contend, c2, "b")
                winners = [m for m, r in results.items() if isinstance(r, HeldLease)]
                assert len(winners) == 1, results
                loser = "b" if winners == ["a"] else "a"
                assert isinstance(results[loser], PartitionHeld | PartitionLost)
                # The loser trying again finds the winner's live lease in the way.
                with pytest.raises(PartitionHeld, match=repr(winners[0])):
                    await (await _leases(c1 if loser == "a" else c2, loser)).acquire(partition)


async def test_a_renewal_on_a_stale_revision_is_refused(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            leases = await _leases(conn, "a")
            first = await leases.acquire(3)
            second = await leases.renew(first)
            assert second.epoch == first.epoch and second.revision > first.revision
            with pytest.raises(PartitionLost, match="refused"):
                await leases.renew(first)  # names a revision that is no longer the last
            third = await leases.renew(second)
            assert third.revision > second.revision


async def test_after_expiry_another_member_takes_over_with_a_higher_epoch(
    nats_cluster: NatsCluster,
) -> None:
    timing = {"ttl": 1.0, "renew_every": 0.2, "drift": 0.2}
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            old = await _leases(conn, "old", **timing)
            new = await _leases(conn, "new", **timing)
            held = await old.acquire(5)
            with pytest.raises(PartitionHeld, match="'old'"):
                await new.acquire(5)
            assert held.may_acknowledge(time.monotonic())
            await trio.sleep(timing["ttl"] + 0.1)  # "old" is paused past its lease
            assert not held.may_acknowledge(time.monotonic())
            taken = await new.acquire(5)
            assert taken.epoch > held.epoch
            with pytest.raises(PartitionLost):
                await old.renew(held)  # the zombie's renewal is refused
            entry = await new.read(5)
            assert entry is not None and entry.value is not None
            assert entry.value.member == "new" and entry.revision == taken.revision


async def test_a_released_lease_is_taken_at_once(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            a = await _leases(conn, "a")
            b = await _leases(conn, "b")
            held = await a.acquire(1)
            await a.release(held)
            taken = await b.acquire(1)  # no wait for the 10 s TTL
            assert taken.epoch > held.epoch
            await a.release(held)  # a stale release does not delete b's lease
            entry = await b.read(1)
            assert entry is not None and entry.value is not None and entry.value.member == "b"


async def test_a_release_beaten_by_its_own_renewal_still_releases(
    nats_cluster: NatsCluster,
) -> None:
    # The renew loop's write of a revision can land just before the release naming the
    # same revision: the release must still free the lease, or the next owner waits out
    # the TTL (seen as an expired-lease take-over during a graceful hand-over).
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            a = await _leases(conn, "a")
            b = await _leases(conn, "b")
            held = await a.acquire(2)
            renewed = await a.renew(held)  # the renewal that was in flight
            await a.release(held)  # names the revision the renewal replaced
            entry = await b.read(2)
            assert entry is not None and entry.value is not None
            assert entry.value.expires == 0 and entry.revision > renewed.revision
            taken = await b.acquire(2)  # at once
            assert b.takeovers == 0 and taken.epoch == held.epoch + 1


async def test_leases_survive_the_loss_of_one_node(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(90):
        async with connect(nats_cluster.servers) as conn:
            leases = await _leases(conn, "a")
            held = await leases.acquire(2)
            nats_cluster.kill("n1" if conn.connected_url != nats_cluster.urls[0] else "n2")
            renewed = None
            with trio.move_on_after(30):  # the bucket's stream may re-elect its leader
                while renewed is None:
                    try:
                        renewed = await leases.renew(held)
                    except PartitionLost:
                        raise
                    except Exception:
                        await trio.sleep(0.2)
            assert renewed is not None and renewed.epoch == held.epoch


# -- epochs count acquisitions, not lease writes ---------------------------------------------


def test_the_next_epoch_is_one_more_than_the_recorded_one_or_than_the_revision() -> None:
    assert next_epoch(None) == 1
    assert decide_acquire(None, "a", 0.0).epoch == 1
    expired = KvEntry(LeaseValue("b", expires=5.0, epoch=4), revision=900)
    assert next_epoch(expired) == 5
    assert decide_acquire(expired, "a", 10.0).epoch == 5
    released = KvEntry(LeaseValue("b", expires=0.0, epoch=7), revision=901)
    assert decide_acquire(released, "a", 10.0).epoch == 8
    # Unknown epoch (a deleted key, foreign bytes, or epoch 0): no epoch ever written to the
    # key exceeds its revision, so one more than the revision is above all of them.
    assert next_epoch(KvEntry(None, 42)) == 43
    assert next_epoch(KvEntry(LeaseValue("b", 5.0, 0), 42)) == 43


async def test_renewals_do_not_move_the_epoch_and_each_take_over_moves_it_by_one(
    nats_cluster: NatsCluster,
) -> None:
    timing = {"ttl": 1.0, "renew_every": 0.2, "drift": 0.2}
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            a = await _leases(conn, "a", **timing)
            b = await _leases(conn, "b", **timing)
            held = await a.acquire(0)
            other = await a.acquire(1)
            assert held.epoch == 1
            for _ in range(50):  # the other partition's renewals move the bucket on too
                held = await a.renew(held)
                other = await a.renew(other)
            entry = await a.read(0)
            assert entry is not None and entry.value is not None
            assert held.epoch == entry.value.epoch == 1 and entry.revision > 100
            epochs = [held.epoch]
            for i in range(3):  # the holder dies; the other member takes over after expiry
                await trio.sleep(timing["ttl"] + 0.05)
                held = await (b if i % 2 == 0 else a).acquire(0)
                epochs.append(held.epoch)
            assert epochs == [1, 2, 3, 4]  # b, a, b took it
            retaken = await b.retake(held)
            assert retaken.epoch == 5
            # A release keeps the epoch: the next owner continues above it, without waiting.
            await b.release(retaken)
            entry = await a.read(0)
            assert entry is not None and entry.value is not None and entry.value.epoch == 5
            assert (await a.acquire(0)).epoch == 6


async def test_an_epoch_past_the_version_bits_is_refused(nats_cluster: NatsCluster) -> None:
    with trio.fail_after(60):
        async with connect(nats_cluster.servers) as conn:
            leases = await _leases(conn, "a")
            kv = await open_bucket(conn, "wb-leases", replicas=3)
            spent = LeaseValue("old", expires=0.0, epoch=MAX_EPOCH).encode()
            await conn.run(kv.put, "p7", spent)
            with pytest.raises(EpochOverflow, match=f"epoch {MAX_EPOCH + 1} is over"):
                await LeaseEpochs(leases).take_epoch(7)
            ok = LeaseValue("old", expires=0.0, epoch=MAX_EPOCH - 1).encode()
            await conn.run(kv.put, "p8", ok)
            assert await LeaseEpochs(leases).take_epoch(8) == MAX_EPOCH
