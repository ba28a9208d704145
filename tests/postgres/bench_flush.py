"""Side by side: ways to write a versioned-upsert batch to PostgreSQL, in one run.

    python tests/postgres/bench_flush.py [URL] [--rows N] [--batch B]

Prints rows/s for the store's own ``write_batch`` (COPY-staged, temp table made once per
connection), the same COPY with the temp table made per batch, a multi-row ``unnest`` upsert,
``executemany`` in pipeline mode, and one upsert per transaction (write-through), each on its
own fresh table, interleaved round by round so machine noise hits all of them alike.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

import psycopg

from writebehind import StoreRecord
from writebehind._stores._postgres import PostgresStore


def unnest(store: PostgresStore, rows: list[StoreRecord]) -> None:
    db, t = store._db(), store.table
    with db.transaction(), db.cursor() as cur:
        cur.execute(
            f"INSERT INTO {t} SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bigint[], "
            "%s::boolean[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            f"version = excluded.version, deleted = excluded.deleted "
            f"WHERE excluded.version > {t}.version",
            (
                [r.key for r in rows], [r.value for r in rows], [r.version for r in rows],
                [r.value is None for r in rows],
            ),
        )


def copy_staged(store: PostgresStore, rows: list[StoreRecord]) -> None:
    db, t = store._db(), store.table
    with db.transaction(), db.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS wb_stage (key text, value bytea, version bigint, "
            "deleted boolean) ON COMMIT DELETE ROWS"
        )
        with cur.copy("COPY wb_stage FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "bytea", "int8", "bool"])
            for r in rows:
                copy.write_row((r.key, r.value, r.version, r.value is None))
        cur.execute(
            f"INSERT INTO {t} SELECT * FROM wb_stage ON CONFLICT (key) DO UPDATE SET "
            "value = excluded.value, version = excluded.version, deleted = excluded.deleted "
            f"WHERE excluded.version > {t}.version"
        )


def executemany_pipeline(store: PostgresStore, rows: list[StoreRecord]) -> None:
    db, t = store._db(), store.table
    with db.transaction(), db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {t} VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
            "value = excluded.value, version = excluded.version, deleted = excluded.deleted "
            f"WHERE excluded.version > {t}.version",
            [(r.key, r.value, r.version, r.value is None) for r in rows],
        )


def store_write_batch(store: PostgresStore, rows: list[StoreRecord]) -> None:
    store.write_batch(rows)


def one_per_transaction(store: PostgresStore, rows: list[StoreRecord]) -> None:
    for r in rows:
        store.write_batch([r])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    candidates: dict[str, Callable[[PostgresStore, list[StoreRecord]], None]] = {
        "PostgresStore (COPY)": store_write_batch,
        "COPY staged": copy_staged,
        "unnest": unnest,
        "executemany pipeline": executemany_pipeline,
        "one upsert per tx": one_per_transaction,
    }
    stores = {}
    for name in candidates:
        s = PostgresStore(args.url, table=f"wb_bench_{uuid.uuid4().hex[:8]}")
        s.connect()
        stores[name] = s
    totals: dict[str, list[float]] = {name: [0.0, 0.0] for name in candidates}
    version = 0
    try:
        for _ in range(args.rounds):
            for name, fn in candidates.items():
                n = args.rows if "per tx" not in name else args.rows // 10
                version += 1
                batches = [
                    [StoreRecord(f"k{i}", b"x" * 100, version)
                     for i in range(start, min(start + args.batch, n))]
                    for start in range(0, n, args.batch)
                ]
                t0 = time.perf_counter()
                for batch in batches:
                    fn(stores[name], batch)
                totals[name][0] += n
                totals[name][1] += time.perf_counter() - t0
        base = totals["one upsert per tx"][0] / totals["one upsert per tx"][1]
        for name, (n, dt) in totals.items():
            rate = n / dt
            print(f"{name:24} {rate:10,.0f} rows/s  {rate / base:6.1f}x write-through")
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            for s in stores.values():
                for suffix in ("", "_meta", "_quarantine"):
                    conn.execute(f"DROP TABLE IF EXISTS {s.table}{suffix}")
                s.close()


if __name__ == "__main__":
    main()
