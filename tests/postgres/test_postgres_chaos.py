"""Chaos on PostgreSQL: real SIGKILL rounds of a worker, with its backends terminated mid-run."""

from pathlib import Path

import pytest

from writebehind.harness import run_kill_rounds
from writebehind.harness._kill import pg_restart_command

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("ack", ["fsync", "store"])
def test_sigkills_and_killed_backends_lose_nothing_acknowledged(
    tmp_path: Path, pg_url: str, pg_table: str, ack: str
) -> None:
    result = run_kill_rounds(
        seed=7, ack=ack, store=pg_url, rounds=2, workdir=tmp_path,
        config={"store_table": pg_table, "retry_initial": 0.01, "retry_max": 0.2},
    )
    assert result.kills == 2 and result.backend_kills >= 1, result
    assert result.faults["pg_terminate_backend"] == result.backend_kills
    assert result.ok and not result.verdict.lost, result.verdict
    assert result.verdict.acked > 0


def test_a_server_restart_during_kill_rounds_loses_nothing_acknowledged(
    tmp_path: Path, pg_url: str, pg_table: str
) -> None:
    if pg_restart_command() is None:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster")
    result = run_kill_rounds(
        seed=11, ack="fsync", store=pg_url, rounds=2, workdir=tmp_path, restart_server=True,
        config={"store_table": pg_table, "retry_initial": 0.01, "retry_max": 0.2},
    )
    assert result.server_restarts == 1 and result.faults["pg_restart"] == 1, result
    assert result.ok and not result.verdict.lost, result.verdict
