"""Membership and what each member hosts, pure (``_core/_membership.py``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from writebehind._core._membership import MemberValue, live_members, member_key, plan
from writebehind._core._partitions import assign


def test_a_member_value_round_trips_and_garbage_is_no_member() -> None:
    value = MemberValue("host:12:ab", 1000.5)
    assert MemberValue.decode(value.encode()) == value
    for garbage in (b"", b"{", b"[]", b'{"member": 3, "expires": 1}',
                    b'{"member": "a", "expires": "soon"}', b'{"member": "a"}',
                    b'{"member": "", "expires": 1}', b'{"member": "a", "expires": NaN}'):
        assert MemberValue.decode(garbage) is None


def test_member_keys_are_valid_kv_keys_and_distinct() -> None:
    a, b = member_key("host:1:aa"), member_key("host:1:ab")
    assert a != b and a.isalnum() and len(a) == 21


def test_live_is_unexpired_with_the_drift_margin_and_always_me() -> None:
    values = [MemberValue("a", 100.0), MemberValue("b", 98.0), MemberValue("c", 97.0)]
    assert live_members(values, me="me", now=99.0, drift=1.5) == {"me", "a", "b"}
    assert live_members(values, me="me", now=99.5, drift=1.5) == {"me", "a"}
    assert live_members([], me="me", now=0.0, drift=0.0) == {"me"}


def test_plan_is_the_difference_between_hosted_and_assigned() -> None:
    alone = plan(8, ["a"], "a", set())
    assert alone.host == set(range(8)) and not alone.unhost
    share = assign(8, ["a", "b"])
    joined = plan(8, ["a", "b"], "a", set(range(8)))
    assert joined.unhost == {p for p, m in share.items() if m == "b"}
    assert not joined.host
    settled = plan(8, ["a", "b"], "a", {p for p, m in share.items() if m == "a"})
    assert not settled.host and not settled.unhost


@given(st.sets(st.text(min_size=1, max_size=5), min_size=1, max_size=6), st.integers(1, 64))
def test_the_members_plans_cover_every_partition_once(members: set[str], partitions: int) -> None:
    hosted = [plan(partitions, members, m, set()).host for m in members]
    assert sorted(p for share in hosted for p in share) == list(range(partitions))
