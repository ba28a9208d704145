"""PostgreSQL on 127.0.0.1:5432 (trust auth, database ``test``), one table set per test.

In CI (``CI`` set) an unreachable server fails the run; elsewhere these tests skip with a reason.
"""

import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("WRITEBEHIND_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def pg_url() -> str:
    problem = _reachable()
    if problem is not None:
        message = f"PostgreSQL at {PG_URL} is not reachable ({problem})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the PostgreSQL tests")
        pytest.skip(message)
    return PG_URL


@pytest.fixture
def pg_table(pg_url: str) -> Iterator[str]:
    """A fresh table name; the table and its meta and quarantine tables are dropped after."""
    import psycopg

    table = f"wb_test_{uuid.uuid4().hex[:12]}"
    yield table
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for suffix in ("", "_meta", "_quarantine", "_fences"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
