"""The store lease on a real PostgreSQL server (issue 12, item 7)."""

from pathlib import Path

import pytest
import trio

from writebehind import Config, LeaseHeld, Seams, open_cache
from writebehind._core._lease import LeaseClaim
from writebehind._stores._postgres import PostgresStore

pytestmark = pytest.mark.postgres

CAP = 60  # seconds: a hung test fails, naming itself, instead of blocking CI


def _claim(token: str, host: str) -> LeaseClaim:
    return LeaseClaim(token=token, host=host, pid=1, since=0.0, ttl=30.0)


def test_postgres_lease_is_taken_refused_renewed_taken_over_and_released(
    pg_url: str, pg_table: str
) -> None:
    a, b = PostgresStore(pg_url, table=pg_table), PostgresStore(pg_url, table=pg_table)
    a.connect()
    b.connect()
    try:
        first, second = _claim("a", "ha"), _claim("b", "hb")
        assert a.acquire_lease(first, 1000.0) is None
        held = b.acquire_lease(second, 1010.0)
        assert held is not None and (held.host, held.expires) == ("ha", 1030.0)
        assert a.renew_lease(first, 1020.0) is None
        assert b.acquire_lease(second, 1049.0) is not None
        assert b.acquire_lease(second, 1050.0) is None
        assert a.renew_lease(first, 1051.0) is not None
        a.release_lease(first)
        assert a.acquire_lease(first, 1052.0) is not None
        b.release_lease(second)
        assert a.acquire_lease(first, 1052.0) is None
        assert a.take_epoch() >= 1  # the meta table's other rows are untouched
    finally:
        a.close()
        b.close()


async def test_a_second_instance_on_one_postgres_table_is_refused(
    pg_url: str, pg_table: str, tmp_path: Path
) -> None:
    with trio.fail_after(CAP):
        def config(name: str) -> Config:
            return Config(store=pg_url, store_table=pg_table, journal_dir=tmp_path / name)

        seams = Seams(wall_clock=lambda: 1_800_000_000.0)
        async with open_cache(config("a"), seams=seams) as first:
            await first.put("k", b"v")
            with pytest.raises(LeaseHeld, match=f"store table '{pg_table}' is in use"):
                async with open_cache(config("b"), seams=seams):
                    pass
        async with open_cache(config("b"), seams=seams) as second:
            assert await second.get("k") == b"v"
