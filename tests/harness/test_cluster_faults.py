"""The cluster suite's faults and log lines, without a cluster: an armed instance process
stops itself exactly at the pause point (and only once); the suite reads when each epoch
began serving from the instance logs, and when the latest write answered uncertain was
invoked (a ``stall`` lasts until one invoked after its cut); and a writer told its write may
or may not have happened writes the key again."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from itertools import count
from pathlib import Path

import pytest
import trio

from writebehind import ShardCrashed
from writebehind.harness._cluster_run import _Instance, _wait_stopped, read_fences
from writebehind.harness._cluster_worker import OpLog, _log_with_times, _writer
from writebehind.harness._history import Fence

CHILD = """
import os, signal
from writebehind.harness._cluster_worker import PAUSE_POINT, SelfPause
pause = SelfPause()
pause.install()
pause(PAUSE_POINT, "store")              # not armed: goes on
os.kill(os.getpid(), signal.SIGUSR1)
os.kill(os.getpid(), signal.SIGUSR2)     # disarmed again
pause(PAUSE_POINT, "store")
os.kill(os.getpid(), signal.SIGUSR1)
pause("flush.before_send", "shard-0")    # armed, but another point
print("armed", flush=True)
pause(PAUSE_POINT, "store")              # stops here
pause(PAUSE_POINT, "store")              # once: the stop disarmed it
print("continued", flush=True)
"""


def test_an_armed_instance_stops_itself_once_at_the_pause_point() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "armed\n"
        assert _wait_stopped(child.pid, 20.0)
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
    assert out == "continued\n" and child.returncode == 0
    assert not _wait_stopped(child.pid, 0.05)  # gone, not stopped


def test_the_suite_reads_when_each_epoch_began_serving(tmp_path: Path) -> None:
    log = tmp_path / "A0.log"
    lines = [{"e": "start", "t": 1.0}, {"e": "serve", "p": 3, "ep": 7, "t": 2.5},
             {"e": "i", "id": 0, "k": "k000", "op": "r", "v": None, "t": 3.0}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines)
                   + '{"e": "serve", "p": 4, "ep"')  # a line cut by a kill never happened
    assert read_fences([log, tmp_path / "missing.log"]) == [Fence(partition=3, epoch=7, at=2.5)]


def test_the_suite_sees_when_the_latest_uncertain_write_was_invoked(tmp_path: Path) -> None:
    inst = _Instance("A")
    inst.log = tmp_path / "A0.log"
    lines = [{"e": "start", "t": 1.0},
             {"e": "i", "id": 0, "k": "k000", "op": "w", "v": "00", "t": 2.0},
             {"e": "i", "id": 1, "k": "k001", "op": "w", "v": "01", "t": 3.0},
             {"e": "c", "id": 1, "o": "unknown", "t": 12.0},
             {"e": "c", "id": 0, "o": "ok", "ver": 5, "p": 0, "t": 12.5},
             {"e": "i", "id": 2, "k": "k002", "op": "r", "v": None, "t": 13.0},
             {"e": "c", "id": 2, "o": "fail", "t": 14.0}]
    inst.log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert [e["e"] for e in inst.poll_log()] == ["start"]
    assert inst.uncertain == 3.0  # invoked then: before a stall cut at 2.5 ended, not one at 4
    assert inst.last_ack == 12.5 and inst.serving
    assert inst.invoked == {}  # answered calls are forgotten


class _FlakyCache:
    """A cache whose first put's outcome is unknown."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes | None]] = []

    def cluster_view(self) -> None:
        return None

    async def put(self, key: str, value: bytes) -> object:
        self.calls.append(("put", key, value))
        if [op for op, _, _ in self.calls].count("put") == 1:
            raise ShardCrashed("the owner crashed under the write; it may or may not have happened")
        return _Receipt()

    async def delete(self, key: str) -> object:
        self.calls.append(("delete", key, None))
        return _Receipt()

    async def get(self, key: str) -> bytes | None:
        self.calls.append(("get", key, None))
        return None


class _Receipt:
    version, shard = 1, 0


async def test_a_writer_told_its_write_may_have_happened_writes_the_key_again(
    tmp_path: Path,
) -> None:
    cache = _FlakyCache()
    log = OpLog(tmp_path / "A0.log")
    keys = [f"k{i:03d}" for i in range(24)]
    with trio.fail_after(10), trio.move_on_after(0.5):
        await _writer(cache, log, random.Random(0), keys, "A0", count(),  # type: ignore[arg-type]
                      lambda: [])
    log.close()
    first = next(i for i, (op, _, _) in enumerate(cache.calls) if op == "put")
    (_, key, value), (again, key2, value2) = cache.calls[first:first + 2]
    assert again == "put" and key2 == key and value2 not in (None, value)
    assert len({k for _, k, _ in cache.calls}) > 2  # then it goes on as before


def test_an_instance_stamps_its_warnings_with_the_history_clock(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("writebehind")
    handlers, level = list(logger.handlers), logger.level
    try:
        _log_with_times()
        before = time.monotonic()
        logger.warning("store-0 cannot connect")
        after = time.monotonic()
    finally:
        logger.handlers[:], logger.level = handlers, level
    stamp, rest = capsys.readouterr().err.split(" ", 1)
    assert before - 0.001 <= float(stamp) <= after + 0.001  # printed to the millisecond
    assert rest == "WARNING store-0 cannot connect\n"
