"""Actor statuses: the transition tables, as data, and the check that refuses the rest."""

import itertools

import pytest

from writebehind._core._status import (
    CACHE,
    SHARD,
    STORE_ACTOR,
    IllegalTransition,
    Lifecycle,
    Status,
)

LIFECYCLES = {"shard": SHARD, "store actor": STORE_ACTOR, "cache": CACHE}


def legal(lifecycle: Lifecycle) -> list[tuple[Status, Status]]:
    return [(a, b) for a, nexts in lifecycle.table.items() for b in sorted(nexts)]


def illegal(lifecycle: Lifecycle) -> list[tuple[Status, Status]]:
    statuses = list(lifecycle.table)
    return [
        (a, b) for a, b in itertools.product(statuses, statuses)
        if a is not b and b not in lifecycle.table[a]
    ]


@pytest.mark.parametrize("kind", sorted(LIFECYCLES))
def test_every_legal_transition_passes(kind: str) -> None:
    lifecycle = LIFECYCLES[kind]
    pairs = legal(lifecycle)
    assert pairs  # the table is not empty
    for current, new in pairs:
        assert lifecycle.advance(current, new, "actor-0") is new


@pytest.mark.parametrize("kind", sorted(LIFECYCLES))
def test_every_illegal_transition_raises_naming_both_states(kind: str) -> None:
    lifecycle = LIFECYCLES[kind]
    pairs = illegal(lifecycle)
    assert pairs
    for current, new in pairs:
        with pytest.raises(IllegalTransition) as info:
            lifecycle.advance(current, new, "actor-7")
        message = str(info.value)
        assert f"'{current.value}'" in message and f"'{new.value}'" in message, message
        assert "actor-7" in message and lifecycle.kind in message


def test_a_refused_transition_changes_nothing() -> None:
    class Actor:
        status = Status.RUNNING

    actor = Actor()
    with pytest.raises(IllegalTransition, match="from 'running' to 'replaying'"):
        actor.status = SHARD.advance(actor.status, Status.REPLAYING, "shard-0")
    assert actor.status is Status.RUNNING


def test_staying_put_is_no_transition() -> None:
    for lifecycle in LIFECYCLES.values():
        for status in lifecycle.table:
            assert lifecycle.advance(status, status, "x") is status


@pytest.mark.parametrize("kind", sorted(LIFECYCLES))
def test_every_status_a_table_names_has_a_row_and_is_reachable(kind: str) -> None:
    lifecycle = LIFECYCLES[kind]
    named = {lifecycle.initial} | {b for nexts in lifecycle.table.values() for b in nexts}
    assert named == set(lifecycle.table)
    reached, frontier = {lifecycle.initial}, [lifecycle.initial]
    while frontier:
        for new in lifecycle.table[frontier.pop()]:
            if new not in reached:
                reached.add(new)
                frontier.append(new)
    assert reached == set(lifecycle.table)
    # Stopped is for good, but for a shard in cluster mode: handed over, it can be hosted
    # (and replay) again.
    again = {Status.REPLAYING} if kind == "shard" else set()
    assert lifecycle.table[Status.STOPPED] == again


def test_the_wire_carries_the_same_strings() -> None:
    assert [s.value for s in Status] == [
        "starting", "replaying", "running", "reconnecting", "draining", "crashed", "stopped",
    ]
    assert Status.RUNNING == "running" and f"{Status.CRASHED}" == "crashed"


def test_a_restarted_shard_replays_again_and_a_stopped_one_only_when_hosted_again() -> None:
    steps = [Status.REPLAYING, Status.RUNNING, Status.CRASHED, Status.REPLAYING,
             Status.RUNNING, Status.STOPPED]
    status = SHARD.initial
    for new in steps:
        status = SHARD.advance(status, new, "shard-0")
    for never in (Status.RUNNING, Status.CRASHED):
        with pytest.raises(IllegalTransition):
            SHARD.advance(status, never, "shard-0")
    # Cluster mode: a shard handed over and hosted here again replays first.
    assert SHARD.advance(status, Status.REPLAYING, "shard-0") is Status.REPLAYING
