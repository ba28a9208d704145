"""Real process crashes: SIGKILL a worker that embeds the cache, restart it, check the store.

The parent starts ``python -m writebehind.harness._worker`` (see that module for the workload
and its log), lets writes flow for a seeded while, SIGKILLs it, and starts it again: the new
incarnation replays the journals. After the last round a final worker reads every key and
drains. The parent then rebuilds the :class:`Model` from the workers' logs (a kill is a
``crash("process")``: writes still pending become uncertain) and checks the store.

Kill moments are seeded, but a real process's timing is not: the same seed repeats the same
schedule and workload, not necessarily the same interleaving.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from writebehind._core._config import mask_url
from writebehind._stores._registry import store_factory
from writebehind._stores._sqlite import sqlite_path

from ._model import Loss, Model, Verdict
from ._worker import STORE_ENV

#: ``progress(step, total, message)``: called after each round and after the final drain.
Progress = Callable[[int, int, str], None]

START_TIMEOUT = 30.0
FINAL_TIMEOUT = 120.0


@attrs.frozen
class KillResult:
    """What a run of kill rounds found."""

    seed: int
    ack: str
    store: str  # password masked
    rounds: int
    kills: int
    verdict: Verdict
    recoveries: int  # restarts that replayed the journals and served again
    operations: int  # writes issued
    read_violations: tuple[Loss, ...]
    worker_errors: tuple[str, ...]
    kill_delays: tuple[float, ...]
    backend_kills: int = 0  # PostgreSQL connections terminated mid-run (pg_terminate_backend)
    server_restarts: int = 0  # PostgreSQL server restarts mid-run

    @property
    def faults(self) -> dict[str, int]:
        faults = {"sigkill": self.kills}
        if self.backend_kills:
            faults["pg_terminate_backend"] = self.backend_kills
        if self.server_restarts:
            faults["pg_restart"] = self.server_restarts
        return faults

    @property
    def ok(self) -> bool:
        """No contract violation: no forbidden loss (store or reads) and no worker error."""
        reads_ok = not self.read_violations or self.verdict.loss_allowed
        return self.verdict.ok and reads_ok and not self.worker_errors

    @property
    def label(self) -> str:
        if self.worker_errors:
            return "ERROR"
        if not self.ok:
            return "FAIL"
        return self.verdict.label


def _absolute(url: str) -> str:
    """A relative SQLite path means the caller's directory, not the worker's (options such
    as ``?worker=process`` are kept)."""
    if url.startswith("sqlite://"):
        _, sep, options = url.partition("?")
        return f"sqlite:///{sqlite_path(url).resolve()}{sep}{options}"
    return url


def _read_store(url: str, table: str) -> dict[str, bytes | None]:
    store = store_factory(url, table=table)()
    store.connect()
    try:
        return {key: record.value for key, record in store.read_all().items()}
    finally:
        store.close()


def pg_restart_command() -> list[str] | None:
    """The command that restarts the local PostgreSQL cluster, if this process may run it."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"]


def _terminate_backends(url: str, table: str) -> int:
    """Kill the worker's PostgreSQL connections, as an administrator or a failover would."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"writebehind:{table}",),
        ).fetchone()
    return int(row[0]) if row else 0


class _LogReplay:
    """Feeds the workers' logs, in order, into a :class:`Model`."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.ops: dict[str, int] = {}
        self.issued = 0
        self.read_violations: list[Loss] = []

    def feed(self, path: Path) -> set[str]:
        """Apply one incarnation's log; return the marker lines it reached (S, D, E)."""
        marks: set[str] = set()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return marks
        # A line without its newline was cut by the kill mid-line: it never happened.
        for raw in data.decode().split("\n")[:-1]:
            kind, *fields = raw.split(" ")
            if kind == "I":
                op, key, value, at = fields
                self.ops[op] = self.model.issue(key, _unhex(value), float(at))
                self.issued += 1
            elif kind == "A":
                self.model.acked(self.ops[fields[0]], float(fields[1]))
            elif kind == "R":
                self.model.refused(self.ops[fields[0]])
            elif kind == "U":
                self.model.uncertain(self.ops[fields[0]])
            elif kind == "G":
                loss = self.model.check_read(fields[0], _unhex(fields[1]))
                if loss is not None:
                    self.read_violations.append(loss)
            else:
                marks.add(kind)
        return marks


def _unhex(text: str) -> bytes | None:
    return None if text == "-" else bytes.fromhex(text)


_ERROR_LINE = re.compile(r"^[\s|+]*([A-Za-z_][\w.]*: .*)$")


def _tail(path: Path) -> str:
    """The last ``SomeError: message`` line of a worker's stderr (the error it died of)."""
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return "(no stderr)"
    for line in reversed(text.splitlines()):
        match = _ERROR_LINE.match(line)
        if match:
            return match.group(1)
    return text[-300:] or "(empty stderr)"


def run_kill_rounds(
    *,
    seed: int,
    ack: str = "fsync",
    store: str | None = None,
    rounds: int = 5,
    workdir: Path,
    config: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    broken: str | None = None,
    min_run: float = 0.3,
    max_run: float = 1.2,
    restart_server: bool = False,
) -> KillResult:
    """SIGKILL a cache-embedding worker ``rounds`` times, drain, and check the store.

    ``store`` is a store URL (default: a SQLite file in ``workdir``; the journals are always in
    ``workdir``). Each round lets the worker write for a seeded ``min_run``..``max_run``
    seconds after its cache started before the kill. ``broken`` names a deliberately broken
    worker variant (:data:`~writebehind.harness._worker.BREAKS`), to show the runner catches it.
    On PostgreSQL each round also terminates the worker's connections mid-run; with
    ``restart_server`` the second round restarts the local server instead (when this process
    may: see :func:`pg_restart_command`).
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds!r}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    url = _absolute(store) if store else f"sqlite:///{workdir / 'store.db'}"
    rng = random.Random(f"kill:{seed}")
    model = Model(ack)
    replay = _LogReplay(model)
    table = str((config or {}).get("store_table", "writebehind_entries"))
    postgres = url.startswith(("postgresql://", "postgres://"))
    if store is not None:
        model.seed_store(_read_store(url, table))
    errors: list[str] = []
    delays: list[float] = []
    kills = recoveries = backend_kills = server_restarts = 0
    restart = pg_restart_command() if restart_server and postgres else None
    # The store URL (it may hold a PostgreSQL password) goes through the environment, never
    # the command line: anyone on the machine can read a process's argv (ps, /proc).
    env = {**os.environ, STORE_ENV: url}
    base = [
        sys.executable, "-m", "writebehind.harness._worker", "--workdir", str(workdir),
        "--ack", ack, "--seed", str(seed),
        "--config", json.dumps(dict(config or {})), "--parent", str(os.getpid()),
        *(["--break", broken] if broken else []),
    ]

    def spawn(incarnation: int, *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        log = workdir / f"worker-{incarnation:03d}.log"
        err = workdir / f"worker-{incarnation:03d}.stderr"
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [*base, "--incarnation", str(incarnation), "--log", str(log), *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                cwd=workdir, env=env,
            )
        return proc, log, err

    for incarnation in range(rounds):
        delay = rng.uniform(min_run, max_run)
        proc, log, err = spawn(incarnation)
        try:
            started = _wait_for_start(proc, log)
            if started and postgres:
                # On PostgreSQL, also drop the worker's connections mid-run: batches in
                # flight fail, the store actors reconnect, nothing acknowledged may be lost.
                first = delay * rng.uniform(0.2, 0.8)
                time.sleep(first)
                if restart is not None and incarnation == 1:
                    subprocess.run(restart, check=True, capture_output=True, timeout=120)
                    server_restarts += 1
                else:
                    backend_kills += _terminate_backends(url, table)
                time.sleep(delay - first)
            elif started:
                time.sleep(delay)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        crashed_at = time.monotonic()
        marks = replay.feed(log)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            delays.append(round(delay, 3))
            model.crash("process", crashed_at)
        else:
            errors.append(
                f"incarnation {incarnation} exited with {proc.returncode} before the kill: "
                f"{_tail(err)}"
            )
        if incarnation > 0 and "S" in marks:
            recoveries += 1
        if progress is not None:
            progress(incarnation + 1, rounds + 1, f"{ack}: kill {incarnation + 1}/{rounds} "
                     f"after {delay:.2f}s")

    proc, log, err = spawn(rounds, "--final")
    try:
        proc.wait(timeout=FINAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    marks = replay.feed(log)
    if rounds > 0 and "S" in marks:
        recoveries += 1
    if proc.returncode != 0 or "E" not in marks:
        errors.append(f"the final worker exited with {proc.returncode}: {_tail(err)}")
    if progress is not None:
        progress(rounds + 1, rounds + 1, f"{ack}: drained and checked")
    verdict = model.check_store(_read_store(url, table))
    return KillResult(
        seed=seed, ack=ack, store=mask_url(url), rounds=rounds, kills=kills, verdict=verdict,
        recoveries=recoveries, operations=replay.issued,
        read_violations=tuple(replay.read_violations), worker_errors=tuple(errors),
        kill_delays=tuple(delays), backend_kills=backend_kills, server_restarts=server_restarts,
    )


def _wait_for_start(proc: subprocess.Popen[bytes], log: Path) -> bool:
    """Wait until the worker's cache started (its ``S`` line); False if it exited first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if log.read_bytes().startswith(b"S "):
                return True
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False
