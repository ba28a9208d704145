"""``writebehind bench`` runs end to end (tiny scale) and writes well-formed JSON and a PNG."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from writebehind._bench import _command, _stores
from writebehind._bench._cells import MODES, matrix
from writebehind._cli import main

PER_RUN_KEYS = {
    "mode", "workload", "writers", "value_bytes", "throughput_ops_s", "p50_ms", "p99_ms",
    "p999_ms", "store_writes_per_op", "flush_rows_s", "peak_rss_mib",
}
LIMIT_KEYS = {
    "fdatasync_p50_ms", "fdatasync_p99_ms", "fdatasync_per_s", "trio_round_trip_s",
    "group_commit_64w_acks_s", "group_commit_1w_acks_s", "journal_alone_64w_acks_s",
    "group_commit_64w_p50_ms", "group_commit_64w_p99_ms", "group_commit_1w_p50_ms",
    "group_commit_1w_p99_ms",
    "store_batch_rows_s", "store_one_row_tx_s",
    "put_single_keys_s", "put_many_100_keys_s",
}


def _run_tiny(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(["bench", "--tiny", "--json", str(out), "--plot", str(png),
                 "--dir", str(tmp_path / "work"), *extra])
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _check_figures(data: dict[str, Any]) -> None:
    assert set(data["limits"]) == LIMIT_KEYS
    assert all(v > 0 and math.isfinite(v) for v in data["limits"].values())
    cells = {(r["mode"], r["workload"], r["writers"], r["value_bytes"]) for r in data["runs"]}
    assert cells == {(c.mode, c.workload, c.writers, c.value_bytes) for c in matrix(True)}
    for run in data["runs"]:
        assert PER_RUN_KEYS <= set(run)
        assert run["throughput_ops_s"] > 0 and run["puts"] > 0
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["p999_ms"]
        assert run["store_writes_per_op"] > 0
        assert run["peak_rss_mib"] > 0
    write_through = [r for r in data["runs"] if r["mode"] == "store"]
    # One store row per acknowledged write-through: nothing coalesces in front of the store.
    assert all(r["store_writes_per_op"] == pytest.approx(1.0) for r in write_through)
    assert [r["records"] for r in data["recovery"]] == [2_000]
    assert data["recovery"][0]["records_per_s"] > 0
    assert data["recovery"][0]["records_per_cpu_s"] > 0
    floor = data["coalescing"]
    # The cell's own floor counts its last, partial window: never below the steady one.
    assert floor["ideal_rows_per_put_for_cell"] >= floor["ideal_rows_per_put_per_flush_interval"]
    assert 0 < floor["replay_floor_rows_per_put"] <= 1
    assert 0 < floor["replay_rows_per_put"] <= 1
    assert data["flush"]["rows"] == 2_000 and data["flush"]["rows_s"] > 0
    assert data["memory_per_million_keys_mib"] > 0
    assert len(data["targets"]) == 8
    for target in data["targets"]:
        assert target["verdict"] in {"PASS", "MISS"}, target
    assert any(t["name"].startswith("put_many") for t in data["targets"])
    assert data["disk_regime"] in {"fast", "slow"}


def test_tiny_run_on_sqlite_writes_json_and_png(tmp_path: Path) -> None:
    data = _run_tiny(tmp_path)
    assert data["store_kind"] == "sqlite" and data["scale"] == "tiny"
    assert data["machine"]["nproc"] >= 1 and data["machine"]["sqlite"]
    _check_figures(data)
    # The temporary journals and store are gone.
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.postgres
def test_tiny_run_on_postgres_drops_its_tables(
    tmp_path: Path, bench_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    # A known table prefix, fresh per test: other bench runs on the same server (a
    # developer's, another test session's) have tables of their own meanwhile.
    run_id = uuid.uuid4()
    monkeypatch.setattr(_stores.uuid, "uuid4", lambda: run_id)
    data = _run_tiny(tmp_path, "--store", bench_pg_url)
    assert data["store_kind"] == "postgresql" and data["machine"]["postgresql"]
    _check_figures(data)
    with psycopg.connect(bench_pg_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE %s",
            (f"wb\\_bench\\_{run_id.hex[:8]}%",),
        ).fetchone()
    assert left == (0,)


def test_missing_extra_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = _command.importlib.util.find_spec

    def without_hdrh(name: str, *args: Any) -> Any:
        return None if name == "hdrh" else real(name, *args)

    monkeypatch.setattr(_command.importlib.util, "find_spec", without_hdrh)
    assert main(["bench", "--tiny", "--dir", str(tmp_path)]) == 2
    assert "hdrhistogram" in capsys.readouterr().err
    assert "writebehind[bench]" in _command.EXTRA_HINT
    assert not list(tmp_path.iterdir())


def test_help_does_not_import_the_measuring_modules() -> None:
    code = (
        "import sys; from writebehind._cli import build_parser; build_parser(); "
        "heavy = [m for m in ('hdrh', 'matplotlib', 'writebehind._bench._runner') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_quick_matrix_covers_every_mode_for_each_target_cell() -> None:
    cells = matrix(True)
    for shape in [("uniform", 64, 100), ("zipf", 64, 100), ("uniform", 1, 100)]:
        assert {c.mode for c in cells if (c.workload, c.writers, c.value_bytes) == shape} == set(
            MODES
        )
    full = matrix(False)
    assert len(full) == 4 * 3 * 2 * 2 and len(set(full)) == len(full)


def test_store_workers_runs_alternated_pairs_of_thread_and_process(tmp_path: Path) -> None:
    out = tmp_path / "pairs.json"
    code = main(["bench", "--tiny", "--store-workers", "1", "--json", str(out),
                 "--dir", str(tmp_path / "work")])
    assert code == 0
    found = json.loads(out.read_text())
    assert [(f["pair"], f["worker"]) for f in found] == [(0, "thread"), (0, "process")]
    for figures in found:
        assert all(v > 0 and math.isfinite(v) for k, v in figures.items()
                   if k not in {"worker", "pair"}), figures
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("extra", [["--store-workers", "0"],
                                   ["--store-workers", "1", "--store", "postgresql://x/y"]])
def test_store_workers_takes_pairs_and_a_sqlite_store(
    tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--tiny", "--dir", str(tmp_path), *extra]) == 2
    assert "--store-workers takes a count of pairs (1 or more) and a SQLite store" in (
        capsys.readouterr().err
    )
