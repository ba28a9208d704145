"""Workloads: which key each operation touches and whether it reads or writes (pure, seeded).

Zipf keys come from a precomputed CDF searched with :func:`bisect.bisect_left`, so no numpy is
needed and a seed replays the exact sequence.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable

import attrs

KEY_SPACE = 100_000


@attrs.frozen
class Workload:
    """``keys`` is ``"uniform"`` or ``"zipf"``; ``read_fraction`` of operations are gets."""

    name: str
    keys: str
    read_fraction: float = 0.0
    zipf_s: float = 1.1


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("uniform", "uniform"),
        Workload("zipf", "zipf"),
        Workload("read-mostly", "zipf", read_fraction=0.9),
    )
}


class ZipfCDF:
    """Ranks ``0..n-1`` with P(rank k) proportional to ``1 / (k + 1) ** s``."""

    def __init__(self, n: int, s: float) -> None:
        if n <= 0 or s <= 0:
            raise ValueError(f"ZipfCDF needs n > 0 and s > 0, got n={n!r}, s={s!r}")
        self.n = n
        self.s = s
        self._cdf = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(n)))
        self._total = self._cdf[-1]

    def rank(self, u: float) -> int:
        """The rank for a uniform draw ``u`` in [0, 1)."""
        return min(self.n - 1, bisect.bisect_left(self._cdf, u * self._total))

    def probability(self, rank: int) -> float:
        """P(rank), for tests and for the expected coalescing."""
        below = self._cdf[rank - 1] if rank else 0.0
        return float((self._cdf[rank] - below) / self._total)


    def expected_distinct(self, draws: float) -> float:
        """Expected number of distinct ranks among ``draws`` independent draws."""
        if draws <= 0:
            return 0.0
        return sum(
            -math.expm1(draws * math.log1p(-self.probability(k))) for k in range(self.n)
        )


def ideal_rows_per_put(workload: Workload, puts_per_window: float,
                       key_space: int = KEY_SPACE) -> float:
    """Store rows per put of a perfect coalescer flushing once per ``puts_per_window`` puts:
    the floor the key distribution itself sets (1.0 for uniform keys over a big space)."""
    if puts_per_window <= 0:
        return 1.0
    if workload.keys == "uniform":
        p = 1.0 / key_space
        return -math.expm1(puts_per_window * math.log1p(-p)) * key_space / puts_per_window
    cdf = zipf_cdf(key_space, workload.zipf_s)
    return cdf.expected_distinct(puts_per_window) / puts_per_window


_CDF_CACHE: dict[tuple[int, float], ZipfCDF] = {}


def zipf_cdf(n: int, s: float) -> ZipfCDF:
    """A shared :class:`ZipfCDF` (building one for 100k keys takes a few milliseconds)."""
    key = (n, s)
    if key not in _CDF_CACHE:
        _CDF_CACHE[key] = ZipfCDF(n, s)
    return _CDF_CACHE[key]


def key_name(rank: int) -> str:
    return f"key-{rank:07d}"


_NAMES_CACHE: dict[int, list[str]] = {}


def key_names(key_space: int) -> list[str]:
    """Every key name of the space, made once (64 writers must not each build 100k strings)."""
    if key_space not in _NAMES_CACHE:
        _NAMES_CACHE[key_space] = [key_name(k) for k in range(key_space)]
    return _NAMES_CACHE[key_space]


def key_chooser(
    workload: Workload, rng: random.Random, key_space: int = KEY_SPACE
) -> Callable[[], str]:
    """A function returning the next key of ``workload``, drawing only from ``rng``."""
    names = key_names(key_space)
    if workload.keys == "uniform":
        randrange = rng.randrange
        return lambda: names[randrange(key_space)]
    if workload.keys == "zipf":
        cdf = zipf_cdf(key_space, workload.zipf_s)
        draw, rank = rng.random, cdf.rank
        return lambda: names[rank(draw())]
    raise ValueError(f"unknown key distribution {workload.keys!r}; use 'uniform' or 'zipf'")


def value_pool(rng: random.Random, size: int, count: int = 64) -> list[bytes]:
    """Distinct values of ``size`` bytes to cycle through (drawn once, outside timed loops)."""
    return [rng.randbytes(size) for _ in range(count)]
