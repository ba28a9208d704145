"""SIGTERM stops like Ctrl-C (drain, then exit) and Ctrl-C ends in one line (issue 12, item 9)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from writebehind._cli import _recover as _recover_tool
from writebehind._cli import is_interrupt, main

# A cache whose flush interval outlasts the test: only a drain puts the writes in the store.
APP = """\
import sys, trio
from writebehind import Config, open_cache

config = Config(store=f"sqlite:///{sys.argv[1]}/store.db", journal_dir=f"{sys.argv[1]}/journal",
                flush_interval=600.0, flush_threshold=100_000)

async def my_app(cache):
    for i in range(200):
        await cache.put(f"k{i}", b"v%d" % i)
    print("ready", flush=True)
    await trio.sleep_forever()
"""

# What writebehind's own commands do (writebehind._cli.main wraps every command in it).
VIA_THE_CLI = APP + """
from writebehind._cli import sigterm_as_sigint

async def main():
    async with open_cache(config) as cache:
        await my_app(cache)

with sigterm_as_sigint():
    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(130)
"""

# The README's recipe for embedders.
EMBEDDED = APP + """
import signal

async def main() -> None:
    async with open_cache(config) as cache, trio.open_nursery() as nursery:
        nursery.start_soon(my_app, cache)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()  # stop the app; leaving open_cache drains
                break

trio.run(main)
"""


def _stored(directory: Path) -> int:
    with sqlite3.connect(directory / "store.db") as db:
        return int(db.execute("SELECT count(*) FROM writebehind_entries").fetchone()[0])


@pytest.mark.parametrize(("script", "code"), [(VIA_THE_CLI, 130), (EMBEDDED, 0)])
def test_sigterm_drains_the_cache_before_the_process_exits(
    tmp_path: Path, script: str, code: int
) -> None:
    (tmp_path / "app.py").write_text(script)
    child = subprocess.Popen([sys.executable, str(tmp_path / "app.py"), str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == code, err
    assert _stored(tmp_path) == 200, "SIGTERM ended the process without draining"


def test_chaos_run_stops_on_sigterm_with_its_partial_report_and_no_traceback(
    tmp_path: Path,
) -> None:
    out_json = tmp_path / "chaos.json"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from writebehind._cli import main; "
         "sys.exit(main(sys.argv[1:]))", "chaos", "run", "--seed", "5", "--duration", "60",
         "--kills", "0", "--json", str(out_json)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert child.stdout is not None and "--seed 5" in child.stdout.readline()
        try:
            child.communicate(timeout=3)  # let a few simulations finish
        except subprocess.TimeoutExpired:
            pass
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, out[-3000:] + err
    assert "Traceback" not in err
    assert "interrupted after" in out
    assert json.loads(out_json.read_text())["interrupted"] is True


def test_an_interrupt_inside_nurseries_ends_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def interrupted(args: object) -> int:
        async def body() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                raise KeyboardInterrupt

        trio.run(body)
        return 0

    monkeypatch.setattr(_recover_tool, "_run", interrupted)
    assert main(["recover", "--config", str(tmp_path / "c.toml")]) == 130
    assert capsys.readouterr().err == "writebehind: stopped by SIGINT\n"


def test_is_interrupt() -> None:
    assert is_interrupt(KeyboardInterrupt())
    assert is_interrupt(BaseExceptionGroup("", [KeyboardInterrupt()]))
    assert not is_interrupt(BaseExceptionGroup("", [KeyboardInterrupt(), ValueError()]))
    assert not is_interrupt(ValueError())


def test_the_readme_shows_embedders_the_sigterm_recipe() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    recipe = EMBEDDED[len(APP):].split("trio.run(main)")[0].strip()
    assert textwrap.dedent(recipe).replace("import signal\n\n", "") in readme
