"""The cluster suite's history checker on hand-written histories: for each rule, one that
keeps it and one that breaks it (and the rule it names)."""

from __future__ import annotations

import pytest

from writebehind.harness._history import Fence, Op, Snapshot, Stored, check

E = 40  # the epoch shift


def v(epoch: int, n: int) -> int:
    return epoch << E | n


def w(value: str | None, t0: float, t1: float | None, outcome: str = "ok", *,
      version: int | None = None, key: str = "k", process: str = "A.0",
      partition: int | None = 0) -> Op:
    return Op(process=process, key=key, kind="write",
              value=None if value is None else value.encode(), invoke=t0, complete=t1,
              outcome=outcome, version=version if outcome == "ok" else None,  # type: ignore[arg-type]
              partition=partition if outcome == "ok" else None)


def r(value: str | None, t0: float, t1: float, *, key: str = "k", process: str = "B.0",
      served: int | None = None) -> Op:
    return Op(process=process, key=key, kind="read",
              value=None if value is None else value.encode(), invoke=t0, complete=t1,
              outcome="ok", served=served)


def s(value: str | None, version: int) -> Stored:
    return Stored(None if value is None else value.encode(), version)


def rules(result: object) -> list[str]:
    return [violation.rule for violation in result.violations]  # type: ignore[attr-defined]


# -- lost -------------------------------------------------------------------------------------


def test_acknowledged_writes_in_the_store_or_superseded_pass() -> None:
    ops = [w("A:1", 0, 1, version=v(1, 1)), w("A:2", 2, 3, version=v(1, 2)),
           w("B:1", 4, 5, version=v(1, 3), key="j")]
    assert check(ops, {"k": s("A:2", v(1, 2)), "j": s("B:1", v(1, 3))}).ok
    # Superseded by a newer write whose outcome was unknown: it may have happened.
    ops.append(w("C:1", 6, None, "unknown"))
    result = check(ops, {"k": s("C:1", v(2, 1)), "j": s("B:1", v(1, 3))})
    assert result.ok and result.acknowledged == 3 and result.writes == 4


def test_an_acknowledged_write_missing_or_older_in_the_store_is_lost() -> None:
    ops = [w("A:1", 0, 1, version=v(1, 1)), w("A:2", 2, 3, version=v(1, 2))]
    assert rules(check(ops, {})) == ["lost"]
    result = check(ops, {"k": s("A:1", v(1, 1))})
    assert rules(result) == ["lost"]
    assert "'A:2'" in result.violations[0].detail


# -- phantom ----------------------------------------------------------------------------------


def test_the_store_holding_a_refused_or_unwritten_value_is_a_phantom() -> None:
    ops = [w("A:1", 0, 1, version=v(1, 1)), w("A:2", 2, 3, "fail")]
    assert rules(check(ops, {"k": s("A:2", v(1, 2))})) == ["phantom"]
    assert rules(check(ops, {"k": s("Z:9", v(1, 2))})) == ["phantom"]
    # At a version above the one the acknowledgement reported: applied again after it.
    assert rules(check([w("A:1", 0, 1, version=v(1, 1))], {"k": s("A:1", v(1, 7))})) == [
        "phantom"]
    # Below it, in a snapshot: an earlier application (a routed write retried on a new
    # owner), superseded by the acknowledged one.
    retried = [w("A:1", 0, 1, version=v(2, 1))]
    assert check(retried, {"k": s("A:1", v(2, 1))}, [Snapshot(0.5, {"k": s("A:1", v(1, 9))})]).ok
    assert rules(check(retried, {"k": s("A:1", v(1, 9))})) == ["lost"]
    # A tombstone needs a delete that was not refused.
    assert rules(check([w(None, 0, 1, version=v(1, 1))], {"k": s(None, v(1, 1))})) == []
    assert "phantom" in rules(check([w(None, 0, 1, "fail")], {"k": s(None, v(1, 1))}))
    assert rules(check([w(None, 0, 1, version=v(2, 1))], {"k": s(None, v(2, 1))},
                       [Snapshot(0.5, {"k": s(None, v(1, 3))})])) == []  # applied earlier too
    assert rules(check([w(None, 0, 1, version=v(1, 1))], {"k": s(None, v(1, 5))})) == [
        "phantom"]  # above the acknowledged version: applied again after the ack


# -- real time --------------------------------------------------------------------------------


def test_a_later_write_with_a_lower_version_breaks_real_time() -> None:
    ok = [w("A:1", 0, 1, version=v(1, 5)), w("B:1", 2, 3, version=v(2, 1))]
    assert check(ok, {"k": s("B:1", v(2, 1))}).ok
    # Overlapping writes may be ordered either way.
    overlap = [w("A:1", 0, 3, version=v(1, 5)), w("B:1", 2, 4, version=v(1, 4))]
    assert check(overlap, {"k": s("A:1", v(1, 5))}).ok
    bad = [w("A:1", 0, 1, version=v(1, 9)), w("B:1", 2, 3, version=v(1, 5))]
    assert rules(check(bad, {"k": s("A:1", v(1, 9))})) == ["real-time"]
    # From an older epoch, it is also an acknowledgement by a fenced owner.
    zombie = [w("A:1", 0, 1, version=v(2, 5)), w("B:1", 2, 3, version=v(1, 9))]
    assert rules(check(zombie, {"k": s("A:1", v(2, 5))})) == ["real-time", "fenced-ack"]


def test_a_write_answered_uncertain_takes_effect_by_its_answer_or_never() -> None:
    # A:1's caller heard "may or may not" at 2; B:1 was invoked after. A:1 found in the
    # store at a version above B:1's landed after its answer (a request held and applied
    # once newer writes were acknowledged).
    late = [w("A:1", 0, 2, "unknown"), w("B:1", 3, 4, version=v(2, 1))]
    result = check(late, {"k": s("A:1", v(3, 1))})
    assert rules(result) == ["real-time"] and "invoked after its answer" in str(
        result.violations[0])
    assert rules(check([*late, w("C:1", 6, 7, version=v(4, 1))], {"k": s("C:1", v(4, 1))},
                       [Snapshot(5, {"k": s("A:1", v(3, 1))})])) == ["real-time"]
    # Below it (applied in time, B:1 supersedes it), or concurrent with B:1, or never
    # answered (the process died, the call was cancelled): no bound to break.
    assert check(late, {"k": s("B:1", v(2, 1))}, [Snapshot(2.5, {"k": s("A:1", v(1, 3))})]).ok
    assert check([w("A:1", 0, 3.5, "unknown"), w("B:1", 3, 4, version=v(2, 1))],
                 {"k": s("A:1", v(3, 1))}).ok
    assert check([w("A:1", 0, None, "unknown"), w("B:1", 3, 4, version=v(2, 1))],
                 {"k": s("A:1", v(3, 1))}).ok
    # Under skewed clocks the deadline it was applied by is on a clock off by more than drift.
    assert check(late, {"k": s("A:1", v(3, 1))}, skewed=[(1, 10)]).ok


# -- reads ------------------------------------------------------------------------------------


def test_reads_of_the_latest_or_a_concurrent_write_pass() -> None:
    ops = [
        w("A:1", 0, 1, version=v(1, 1)),
        r("A:1", 2, 3),
        w("A:2", 4, 6, version=v(1, 2)),
        r("A:1", 5, 5.5),  # concurrent with A:2: either is fine
        r("A:2", 5, 5.5),  # A:2 began before the read ended
        r("A:2", 7, 8),
        r(None, -2, -1, key="j"),  # before any write of j
    ]
    result = check(ops, {"k": s("A:2", v(1, 2))})
    assert result.ok and result.reads == 5


def test_a_read_older_than_an_acknowledged_write_is_stale() -> None:
    ops = [w("A:1", 0, 1, version=v(1, 1)), w("A:2", 2, 3, version=v(1, 2)), r("A:1", 4, 5)]
    result = check(ops, {"k": s("A:2", v(1, 2))})
    assert rules(result) == ["stale-read"]
    assert "'A:2'" in result.violations[0].detail
    # An absent key after an acknowledged put, with no delete: stale too.
    assert rules(check([w("A:1", 0, 1, version=v(1, 1)), r(None, 2, 3)],
                       {"k": s("A:1", v(1, 1))})) == ["stale-read"]
    # ... but fine after an acknowledged delete.
    assert check([w("A:1", 0, 1, version=v(1, 1)), w(None, 2, 3, version=v(1, 2)),
                  r(None, 4, 5)], {"k": s(None, v(1, 2))}).ok


def test_under_skewed_clocks_a_read_may_miss_only_writes_of_an_epoch_taken_early() -> None:
    # A former owner (epoch 1) answers A:1 from memory after a member whose clock ran ahead
    # took the partition (epoch 2, first acknowledged at 3, inside the window) and
    # acknowledged A:2: excused, and counted.
    ops = [w("A:1", 0, 1, version=v(1, 1)), w("A:2", 2, 3, version=v(2, 2)), r("A:1", 4, 5)]
    final = {"k": s("A:2", v(2, 2))}
    inside = check(ops, final, skewed=[(2.5, 4.5)])
    assert inside.ok and inside.unjudged_reads == 1
    assert rules(check(ops, final, skewed=[(6, 9)])) == ["stale-read"]  # outside the window
    # Epoch 2 began before the window: no member took it early, so the miss is judged.
    assert rules(check(ops, final, skewed=[(3.5, 4.5)])) == ["stale-read"]
    # A miss of a write of an epoch begun before the window is judged even when the read's
    # value is of that epoch too: the new owner fenced and replayed it, and the old owner
    # has its own writes (a new owner serving without its fence record, say, misses the
    # old owner's late appends).
    same = [w("A:1", 0, 1, version=v(1, 1)), w("A:2", 2, 3, version=v(1, 2)), r("A:1", 4, 5)]
    assert rules(check(same, {"k": s("A:2", v(1, 2))}, skewed=[(1.5, 9)])) == ["stale-read"]
    # A lost acknowledged write is a violation whatever the clocks did.
    assert rules(check(ops, {"k": s("A:1", v(1, 1))}, skewed=[(0, 9)])) == ["lost"]


def test_under_skewed_clocks_a_read_its_own_shard_answered_misses_nothing_of_that_epoch(
) -> None:
    # The routing bug the suite found: the member that took the partition early (epoch 2)
    # answered its own read with A:1 after it had acknowledged A:2 of its own epoch. A
    # former owner (epoch 1) answering could miss A:2; the epoch-2 owner cannot.
    ops = [w("A:1", 0, 1, version=v(2, 1)), w("A:2", 2, 3, version=v(2, 2))]
    final = {"k": s("A:2", v(2, 2))}
    window = [(0.5, 9.0)]
    assert check([*ops, r("A:1", 4, 5)], final, skewed=window).ok  # who answered: unknown
    assert check([*ops, r("A:1", 4, 5, served=1)], final, skewed=window).ok
    assert rules(check([*ops, r("A:1", 4, 5, served=2)], final, skewed=window)) == [
        "stale-read"]


def test_a_stale_read_of_a_write_whose_version_is_unknown_is_judged_by_time() -> None:
    # A:1's outcome is unknown and the store never showed it: its version is unknown.
    ops = [w("A:1", 0, 1, "unknown"), w("A:2", 2, 3, version=v(1, 2)), r("A:1", 4, 5)]
    assert rules(check(ops, {"k": s("A:2", v(1, 2))})) == ["stale-read"]
    concurrent = [w("A:1", 0, 2.5, "unknown"), w("A:2", 2, 3, version=v(1, 2)), r("A:1", 4, 5)]
    assert check(concurrent, {"k": s("A:2", v(1, 2))}).ok


def test_a_read_of_a_write_begun_after_it_ended_is_from_the_future() -> None:
    ops = [r("A:1", 0, 1), w("A:1", 2, 3, version=v(1, 1))]
    assert rules(check(ops, {"k": s("A:1", v(1, 1))})) == ["future-read"]
    assert rules(check([r("Z:1", 0, 1)], {})) == ["future-read"]  # nobody wrote it
    refused = [w("A:1", 0, 1, "fail"), r("A:1", 2, 3)]
    assert rules(check(refused, {})) == ["future-read"]


# -- fenced owners ----------------------------------------------------------------------------


def test_an_ack_with_an_old_epoch_after_a_newer_epoch_acknowledged_is_fenced() -> None:
    history = [
        w("A:1", 0, 1, version=v(1, 1), key="a", process="A.0"),
        w("B:1", 5, 6, version=v(2, 1), key="b", process="B.0"),  # epoch 2 fenced by t=6
        # The zombie: invoked before the new owner's first ack; overlapping is possible.
        w("A:2", 5.5, 9, version=v(1, 2), key="c", process="A.0"),
    ]
    final = {"a": s("A:1", v(1, 1)), "b": s("B:1", v(2, 1)), "c": s("A:2", v(1, 2))}
    assert check(history, final).ok
    zombie = w("A:3", 7, 9, version=v(1, 3), key="d", process="A.0")
    result = check([*history, zombie], {**final, "d": s("A:3", v(1, 3))})
    assert rules(result) == ["fenced-ack"]
    assert "epoch 2" in result.violations[0].detail
    # Another partition's newer epoch fences nothing here.
    other = w("A:3", 7, 9, version=v(1, 3), key="d", process="A.0", partition=1)
    assert check([*history, other], {**final, "d": s("A:3", v(1, 3))}).ok


def test_an_explicit_fence_event_tightens_the_bound() -> None:
    ops = [w("A:1", 3, 4, version=v(1, 1), key="a"), w("B:1", 5, 6, version=v(2, 1), key="b")]
    final = {"a": s("A:1", v(1, 1)), "b": s("B:1", v(2, 1))}
    assert check(ops, final).ok
    assert rules(check(ops, final, fences=[Fence(0, 2, 2.0)])) == ["fenced-ack"]


# -- the store's versions ---------------------------------------------------------------------


def test_store_versions_that_go_backwards_or_vanish_are_caught() -> None:
    ops = [w("A:1", 0, 1, version=v(1, 1)), w("A:2", 2, 3, "unknown")]
    snaps = [Snapshot(1.5, {"k": s("A:1", v(1, 1))}), Snapshot(3.5, {"k": s("A:2", v(1, 2))})]
    assert check(ops, {"k": s("A:2", v(1, 2))}, snaps).ok
    back = [*snaps, Snapshot(4.0, {"k": s("A:1", v(1, 1))})]
    assert rules(check(ops, {"k": s("A:2", v(1, 2))}, back)) == ["store-regress"]
    gone = [*snaps, Snapshot(4.0, {})]
    assert rules(check(ops, {"k": s("A:2", v(1, 2))}, gone)) == ["store-regress"]


def test_values_must_be_unique() -> None:
    with pytest.raises(ValueError, match="every written value unique"):
        check([w("A:1", 0, 1, version=v(1, 1)), w("A:1", 2, 3, version=v(1, 2))], {})
    with pytest.raises(ValueError, match="has its receipt's version"):
        Op(process="A", key="k", kind="write", value=b"x", invoke=0, complete=1, outcome="ok")
