"""specs/operations/store-schema.md lists exactly the columns the PostgreSQL store creates."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

SCHEMA_PAGE = Path(__file__).resolve().parents[2] / "specs" / "operations" / "store-schema.md"


def documented_columns(page: str, store: str) -> dict[str, dict[str, str]]:
    """``{table suffix: {column: type}}`` from the page's first table of each ``<table>``
    section (as tests/test_docs_reference.py reads it for SQLite)."""
    tables: dict[str, dict[str, str]] = {}
    for section in re.split(r"^## ", page, flags=re.M)[1:]:
        match = re.match(r"`<table>(\w*)`", section)
        if not match:
            continue
        lines = section.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("|"))
        rows = []
        for line in lines[start:]:
            if not line.startswith("|"):
                break
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        column = rows[0].index(store)
        tables[match.group(1)] = {r[0].strip("`"): r[column] for r in rows[2:] if r[column]}
    return tables


def test_the_schema_page_lists_every_postgres_column(pg_url: str, pg_table: str) -> None:
    import psycopg

    from writebehind import Fence
    from writebehind._runtime._lease import new_claim
    from writebehind._stores._postgres import PostgresStore

    store = PostgresStore(pg_url, table=pg_table)
    store.connect()
    try:
        claim = new_claim(time.time())
        assert store.acquire_lease(claim, time.time()) is None  # adds the meta's detail column
        store.release_lease(claim)
        store.write_batch_fenced([], Fence(0, 1))  # creates the fence table (cluster mode)
    finally:
        store.close()
    actual: dict[str, dict[str, str]] = {}
    with psycopg.connect(pg_url) as conn:
        for suffix in ("", "_meta", "_quarantine", "_fences"):
            rows = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (f"{pg_table}{suffix}",),
            ).fetchall()
            actual[suffix] = dict(rows)
    assert documented_columns(SCHEMA_PAGE.read_text(), "PostgreSQL") == actual
