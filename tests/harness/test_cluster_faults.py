"""The cluster suite's ``pause`` fault and ``serve`` log lines, without a cluster: an armed
instance process stops itself exactly at the pause point (and only once), and the suite
reads when each epoch began serving from the instance logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from writebehind.harness._cluster_run import _wait_stopped, read_fences
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
