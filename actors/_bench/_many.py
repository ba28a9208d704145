"""``put_many`` against single puts: keys acknowledged per second, ``ack='fsync'``, in one run.

Both sides run the same number of concurrent callers on a fresh cache each (fresh table, fresh
journal) on the run's store: one side puts one key per call, the other 100 keys per
``put_many``. What is timed is the acknowledgements; the flush afterwards is not.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import trio

from .._core._config import Config
from .._open import open_cache
from ._stores import StoreTarget

CALLERS = 8
KEYS_PER_CALL = 100
KEYS_PER_CALLER = 10_000  # each caller rewrites its own keys (coalescing, as in a cell)


@attrs.frozen
class ManyResult:
    put_single_keys_s: float
    put_many_keys_s: float


async def _keys_per_second(
    target: StoreTarget, root: Path, name: str, *, per_call: int, seconds: float, seed: int,
    value_bytes: int,
) -> float:
    table = target.table(name)
    config = Config(store=target.url, store_table=table, journal_dir=root / name,
                    ack="fsync", seed=seed)
    value = b"m" * value_bytes
    names = [[f"c{c}-{i}" for i in range(KEYS_PER_CALLER)] for c in range(CALLERS)]
    done = [0]
    async with open_cache(config) as cache:
        began = time.perf_counter()
        deadline = began + seconds

        async def caller(c: int) -> None:
            keys, i, count = names[c], 0, 0
            while time.perf_counter() < deadline:
                if per_call == 1:
                    await cache.put(keys[i], value)
                    i = (i + 1) % KEYS_PER_CALLER
                else:
                    await cache.put_many([(keys[(i + j) % KEYS_PER_CALLER], value)
                                          for j in range(per_call)])
                    i = (i + per_call) % KEYS_PER_CALLER
                count += per_call
            done[0] += count

        async with trio.open_nursery() as nursery:
            for c in range(CALLERS):
                nursery.start_soon(caller, c)
        elapsed = time.perf_counter() - began
        await cache.flush()
    target.drop(table)
    target.created.remove(table)
    return done[0] / elapsed


async def put_many_vs_single(
    target: StoreTarget, root: Path, *, seconds: float, seed: int, value_bytes: int = 100
) -> ManyResult:
    """Keys/s of :data:`CALLERS` callers putting one key per call, then the same callers
    putting :data:`KEYS_PER_CALL` keys per ``put_many``."""
    single = await _keys_per_second(target, root, "single", per_call=1, seconds=seconds,
                                    seed=seed, value_bytes=value_bytes)
    many = await _keys_per_second(target, root, "many", per_call=KEYS_PER_CALL,
                                  seconds=seconds, seed=seed, value_bytes=value_bytes)
    return ManyResult(single, many)
