"""Rendezvous assignment of partitions (pure): one owner each, and few moves on a change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from writebehind._core._partitions import assign, moves, owned_by, owner, partition_of

member_names = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=12)
member_sets = st.sets(member_names, min_size=1, max_size=12)
partition_counts = st.integers(min_value=1, max_value=256)


@given(partition_counts, member_sets)
def test_every_partition_has_exactly_one_live_owner(partitions: int, members: set[str]) -> None:
    assignment = assign(partitions, members)
    assert set(assignment) == set(range(partitions))
    assert set(assignment.values()) <= members
    # Owned sets partition the partitions: disjoint, and together all of them.
    owned = [owned_by(assignment, m) for m in members]
    assert sum(len(o) for o in owned) == partitions
    assert frozenset().union(*owned) == frozenset(range(partitions))


@given(partition_counts, member_sets)
def test_the_assignment_does_not_depend_on_member_order(partitions: int, members: set[str]
                                                         ) -> None:
    ordered = sorted(members)
    assert assign(partitions, ordered) == assign(partitions, list(reversed(ordered)))


@given(partition_counts, member_sets, member_names)
def test_a_join_moves_only_partitions_to_the_newcomer(partitions: int, members: set[str],
                                                      newcomer: str) -> None:
    members.discard(newcomer)
    if not members:
        return
    before = assign(partitions, members)
    after = assign(partitions, members | {newcomer})
    moved = moves(before, after)
    assert all(new == newcomer for _, new in moved.values())
    assert set(moved) == owned_by(after, newcomer)


@given(partition_counts, member_sets.filter(lambda s: len(s) >= 2), st.data())
def test_a_leave_moves_only_the_leavers_partitions(partitions: int, members: set[str],
                                                   data: st.DataObject) -> None:
    leaver = data.draw(st.sampled_from(sorted(members)))
    before = assign(partitions, members)
    after = assign(partitions, members - {leaver})
    moved = moves(before, after)
    assert set(moved) == owned_by(before, leaver)
    assert all(old == leaver and new != leaver for old, new in moved.values())


def test_about_one_nth_moves_when_a_fourth_member_joins() -> None:
    """Spread and churn on a realistic size: 1024 partitions, 3 then 4 members."""
    three = assign(1024, ["a", "b", "c"])
    four = assign(1024, ["a", "b", "c", "d"])
    counts = [len(owned_by(three, m)) for m in "abc"]
    assert all(abs(c - 1024 / 3) < 0.15 * 1024 / 3 for c in counts), counts
    moved = len(moves(three, four))
    assert abs(moved - 1024 / 4) < 0.15 * 1024 / 4, moved


def test_owner_with_no_members_and_partition_of_is_stable() -> None:
    assert owner(0, []) is None
    assert assign(8, []) == {}
    # Fixed values: a change of hash would move every key of a running cluster.
    assert [partition_of(k, 64) for k in ("a", "b", "key-1")] == [47, 53, 31]
    assert all(0 <= partition_of(str(i), 7) < 7 for i in range(100))
