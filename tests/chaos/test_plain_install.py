"""The commands a plain install (``pip install writebehind``, no test extra) must run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from writebehind.harness import FaultPlan

# Hypothesis is a test dependency: this makes it unimportable in a child process, as on a
# machine that ran only the README's first set-up command.
BLOCKER = textwrap.dedent("""\
    import sys

    class _NoHypothesis:
        def find_spec(self, name, path=None, target=None):
            if name == "hypothesis" or name.startswith("hypothesis."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoHypothesis())
""")


def _run_without_hypothesis(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)


def test_the_printed_replay_command_runs_without_hypothesis(tmp_path: Path) -> None:
    # A failing run prints `writebehind chaos replay --plan "FaultPlan(...)"`: evaluating the
    # plan used to import every harness name, CacheMachine too, and so Hypothesis.
    plan = repr(FaultPlan.buggify(7))
    argv = ["chaos", "replay", "--plan", plan, "--operations", "100"]
    result = _run_without_hypothesis(
        tmp_path,
        "import sys\n"
        "from writebehind._cli import main\n"
        "assert 'hypothesis' not in sys.modules\n"
        f"code = main({argv!r})\n"
        "assert 'hypothesis' not in sys.modules, 'the replay path imported hypothesis'\n"
        "sys.exit(code)\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
    assert "Traceback" not in result.stderr


def test_cache_machine_without_hypothesis_names_the_extra_to_install(tmp_path: Path) -> None:
    result = _run_without_hypothesis(tmp_path, "from writebehind.harness import CacheMachine")
    assert result.returncode != 0
    assert "CacheMachine needs Hypothesis" in result.stderr
    assert "pip install 'writebehind[test]'" in result.stderr
