"""writebehind.chaos: seeded, reproducible chaos suites users run in their CI.

``writebehind chaos run`` runs a suite (:data:`SUITES`) and ``writebehind chaos replay`` one
sub-run of it; :func:`run_suite` is the same from Python.
"""

from ._runs import RunOptions, RunRecord, derive_seed, run_kill, run_simulation
from ._suites import SUITES, Suite, SuiteReport, run_suite

__all__ = [
    "SUITES",
    "RunOptions",
    "RunRecord",
    "Suite",
    "SuiteReport",
    "derive_seed",
    "run_kill",
    "run_simulation",
    "run_suite",
]
