"""Bench tests check that the command runs and writes well-formed output, never timings."""

import os

import pytest

PG_URL = os.environ.get("WRITEBEHIND_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "microbench: a pytest-benchmark of a pure core (few rounds: cheap as a test)"
    )


@pytest.fixture(scope="session")
def bench_pg_url() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            pass
    except Exception as exc:
        message = f"PostgreSQL at {PG_URL} is not reachable ({type(exc).__name__}: {exc})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the PostgreSQL tests")
        pytest.skip(message)
    return PG_URL
