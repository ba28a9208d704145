"""Trio's scheduler, seeded, so that a run of the harness replays exactly.

Trio orders the tasks it wakes together with its module-level Random, after the order they
were woken in, which for equal deadlines depends on memory addresses (a tie broken by id()).
Its deterministic mode (what it uses under Hypothesis) sorts each batch by task creation
before shuffling with that Random: with the Random seeded from the plan, a run replays
exactly. Trio offers no public way to seed that Random or to turn that mode on, so
:func:`_swap_scheduler` reaches into trio's private module: the one place in the harness that
touches a private attribute of trio (``tests/harness/test_public_seams.py`` keeps it so).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

RandomState = tuple[Any, ...]  # what random.Random.getstate() returns


def _swap_scheduler(state: RandomState, deterministic: bool | None) -> tuple[RandomState, bool]:
    """Put trio's scheduling Random into ``state`` and, unless ``deterministic`` is None, its
    deterministic mode on or off; return both as they were."""
    from trio._core import _run

    previous = (_run._r.getstate(), _run._ALLOW_DETERMINISTIC_SCHEDULING)
    _run._r.setstate(state)
    if deterministic is not None:
        # Trio declares the flag Final, yet its own Hypothesis plugin sets it: so do we.
        _run._ALLOW_DETERMINISTIC_SCHEDULING = deterministic  # type: ignore[misc]
    return previous


def reseed_trio_scheduler(seed: str) -> None:
    """Seed trio's scheduling Random from ``seed``; its mode stays as it is."""
    _swap_scheduler(random.Random(seed).getstate(), None)


@contextlib.contextmanager
def seeded_trio_scheduler(seed: str) -> Iterator[None]:
    """Within: trio's deterministic mode, its Random seeded from ``seed``. Both are put back
    afterwards."""
    state, deterministic = _swap_scheduler(random.Random(seed).getstate(), True)
    try:
        yield
    finally:
        _swap_scheduler(state, deterministic)
