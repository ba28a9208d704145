"""Side by side, in one run: what store epoch fencing costs a flush, on SQLite and PostgreSQL.

    python tests/postgres/bench_fencing.py [URL] [--rows N] [--batch B] [--rounds R]
                                           [--before REV]

Per store, interleaved round by round so machine noise hits all alike, each on its own
fresh table: ``write_batch`` (unfenced: single-process mode), ``write_batch_fenced`` (cluster
mode: one more statement per batch), and with ``--before REV`` the same store class as it was
at git revision ``REV`` (its ``write_batch``: the hot path before fencing existed). Prints
rows/s (wall clock) and this process's CPU microseconds per row (the client side: the
server's work for PostgreSQL is not in it), each as a ratio to the unfenced ``write_batch``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from writebehind import Fence, StoreRecord
from writebehind._stores._postgres import PostgresStore
from writebehind._stores._sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]


def load_before(rev: str, module: str) -> Any:
    """``writebehind._stores.<module>`` as it was at ``rev`` (relative imports resolve to
    today's package: the modules it imports must still offer what it used)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:actors/_stores/{module}.py"], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout
    name = f"writebehind._stores.{module}_before"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "writebehind._stores"
    sys.modules[name] = mod
    exec(compile(source, f"{rev}:{module}.py", "exec"), mod.__dict__)
    return mod


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--before", metavar="REV")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-fencing-"))
    makers: dict[str, Callable[[str], Any]] = {
        "sqlite": lambda t: SQLiteStore(tmp / f"{t}.db", table=t),
        "postgres": lambda t: PostgresStore(args.url, table=t),
    }
    classes = {"sqlite": ("_sqlite", "SQLiteStore"), "postgres": ("_postgres", "PostgresStore")}
    for kind, make in makers.items():
        ways: dict[str, tuple[Any, Callable[[Any, list[StoreRecord]], object]]] = {}
        ways["write_batch"] = (make(f"wb_bench_{uuid.uuid4().hex[:8]}"),
                               lambda s, rows: s.write_batch(rows))
        ways["write_batch_fenced"] = (make(f"wb_bench_{uuid.uuid4().hex[:8]}"),
                                      lambda s, rows: s.write_batch_fenced(rows, Fence(0, 1)))
        if args.before:
            module, cls = classes[kind]
            old = getattr(load_before(args.before, module), cls)
            table = f"wb_bench_{uuid.uuid4().hex[:8]}"
            store = (old(tmp / f"{table}.db", table=table) if kind == "sqlite"
                     else old(args.url, table=table))
            ways[f"write_batch at {args.before}"] = (store, lambda s, rows: s.write_batch(rows))
        for store, _ in ways.values():
            store.connect()
        totals = {name: [0, 0.0, 0.0] for name in ways}  # rows, wall s, CPU s
        version = 1 << 40
        try:
            names = list(ways)
            for round_ in range(args.rounds):
                # Each way takes each place in the round in turn: the first of a round pays
                # for what the last one left behind (a checkpoint, a cold cache).
                for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                    store, write = ways[name]
                    version += 1
                    batches = [
                        [StoreRecord(f"k{i}", b"x" * 100, version)
                         for i in range(start, min(start + args.batch, args.rows))]
                        for start in range(0, args.rows, args.batch)
                    ]
                    w0, c0 = time.perf_counter(), time.process_time()
                    for batch in batches:
                        write(store, batch)
                    totals[name][0] += args.rows
                    totals[name][1] += time.perf_counter() - w0
                    totals[name][2] += time.process_time() - c0
        finally:
            for store, _ in ways.values():
                if kind == "postgres":
                    import psycopg

                    with psycopg.connect(args.url, autocommit=True) as conn:
                        for suffix in ("", "_meta", "_quarantine", "_fences"):
                            conn.execute(f"DROP TABLE IF EXISTS {store.table}{suffix}")
                store.close()
        rows, wall, cpu = totals["write_batch"]
        base_rate, base_cpu = rows / wall, cpu / rows * 1e6
        print(f"{kind}: {args.rounds} rounds of {args.rows} rows in {args.batch}-row batches")
        for name, (n, w, c) in totals.items():
            rate, us = n / w, c / n * 1e6
            print(f"  {name:28} {rate:10,.0f} rows/s ({rate / base_rate:4.2f}x)  "
                  f"{us:5.2f} CPU us/row ({us / base_cpu:4.2f}x)")


if __name__ == "__main__":
    main()
