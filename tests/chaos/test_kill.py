"""Real SIGKILLs of a worker process embedding the cache, per ack mode.

Each run is 3 kills of short runs plus a draining final worker (a few seconds). Timing is real,
so tests assert on the contract (lost or not, labelled how), never on counts a machine's speed
decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from writebehind.harness import Model
from writebehind.harness._kill import _LogReplay, mask_url, run_kill_rounds
from writebehind.harness._worker import BREAK_ENV, STORE_ENV, keys_for


@pytest.mark.parametrize("ack", ["journal", "fsync", "store"])
def test_kills_lose_no_acknowledged_write_where_the_ack_mode_promises_it(
    ack: str, tmp_path: Path
) -> None:
    steps: list[tuple[int, int]] = []
    result = run_kill_rounds(
        seed=11, ack=ack, rounds=3, workdir=tmp_path,
        progress=lambda step, total, message: steps.append((step, total)),
    )
    assert result.worker_errors == ()
    assert result.kills == 3
    assert result.recoveries == 3  # every restart replayed and served again
    assert result.verdict.acked > 0
    assert result.verdict.lost == ()
    assert result.read_violations == ()
    assert result.label == "PASS" and result.ok
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_kills_of_a_cache_whose_sqlite_runs_in_a_worker_process_lose_nothing(
    tmp_path: Path,
) -> None:
    # A SIGKILLed cache takes its store worker process with it (PR_SET_PDEATHSIG): the next
    # incarnation's replay and the final check see no worker committing behind them.
    result = run_kill_rounds(
        seed=13, ack="fsync", rounds=3, workdir=tmp_path,
        store=f"sqlite:///{tmp_path / 'store.db'}?worker=process",
    )
    assert result.worker_errors == ()
    assert result.kills == 3 and result.recoveries == 3
    assert result.verdict.acked > 0
    assert result.verdict.lost == ()
    assert result.read_violations == ()
    assert result.label == "PASS" and result.ok


def test_kills_under_ack_memory_lose_writes_and_say_that_is_allowed(tmp_path: Path) -> None:
    result = run_kill_rounds(seed=11, ack="memory", rounds=3, workdir=tmp_path)
    assert result.worker_errors == ()
    assert result.kills == 3
    assert result.verdict.lost, "the worker should ack writes the background journal missed"
    assert result.verdict.loss_allowed
    assert result.label == "LOSS (allowed by ack mode)"
    assert result.ok  # a measured, allowed loss is not a violation
    for loss in result.verdict.lost:
        assert loss.acked_at is not None and loss.window is not None and loss.window >= 0


def test_the_kill_runner_catches_a_cache_that_skips_journal_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BREAK_ENV, "skip-replay")
    result = run_kill_rounds(seed=5, ack="fsync", rounds=2, workdir=tmp_path)
    assert result.verdict.lost
    assert not result.verdict.loss_allowed
    assert result.label == "FAIL" and not result.ok


def test_a_worker_that_dies_on_its_own_is_reported_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BREAK_ENV, "no-such-break")
    result = run_kill_rounds(seed=1, ack="fsync", rounds=1, workdir=tmp_path)
    assert result.kills == 0
    assert len(result.worker_errors) == 2  # the round's worker and the final one
    assert "no-such-break" in result.worker_errors[0]
    assert result.label == "ERROR" and not result.ok


def test_a_password_in_the_store_url_is_masked() -> None:
    assert mask_url("postgresql://app:s3cret@db:5432/cache") == "postgresql://app:***@db:5432/cache"
    assert mask_url("sqlite:///data/store.db") == "sqlite:///data/store.db"


def test_the_log_replay_ignores_a_cut_line_and_a_kill_makes_pending_writes_uncertain(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    log.write_bytes(
        b"S 0 42\n"
        b"I 0.0.0 w0/k0 6161 1.0\nA 0.0.0 1.1\n"
        b"I 0.0.1 w0/k0 6262 1.2\n"  # killed before its outcome
        b"I 0.1.0 w1/k0 6363 1.3\nA 0.1"  # the ack line was cut: it never happened
    )
    model = Model("fsync")
    replay = _LogReplay(model)
    assert replay.feed(log) == {"S"}
    model.crash("process", 2.0)
    assert [w.status for w in model.writes] == ["acked", "uncertain", "uncertain"]
    assert model.allowed("w0/k0") == (b"aa", b"bb")
    assert model.allowed("w1/k0") == (None, b"cc")


def test_worker_keys_are_shared_across_incarnations_or_owned_by_one() -> None:
    first = keys_for(0, 0, shared=2, local=1)
    second = keys_for(0, 1, shared=2, local=1)
    assert first[:2] == second[:2] == ["w0/k0", "w0/k1"]
    assert first[2] != second[2]


class _Spawned(Exception):
    """Raised by the fake Popen below: the test only wants to see how the worker is started."""


def test_the_worker_gets_the_store_url_through_its_environment_not_its_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Anyone on the machine can read a process's command line (ps, /proc/PID/cmdline).
    import writebehind.harness._kill as kill

    seen: dict[str, Any] = {}

    def fake_popen(argv: list[str], **options: Any) -> None:
        seen["argv"], seen["env"] = argv, options.get("env")
        raise _Spawned

    monkeypatch.setattr(kill, "_read_store", lambda url, table: {})
    monkeypatch.setattr(kill.subprocess, "Popen", fake_popen)
    url = "postgresql://writer:s3cr3t-pw@127.0.0.1:5432/app"
    with pytest.raises(_Spawned):
        run_kill_rounds(seed=1, ack="fsync", store=url, rounds=1, workdir=tmp_path)
    assert not any("s3cr3t-pw" in arg for arg in seen["argv"])
    assert seen["env"][STORE_ENV] == url
