"""The PostgreSQL store against a real server: never a mock."""

import functools
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import (
    Config,
    ConfigError,
    SchemaMismatch,
    Seams,
    StoreRecord,
    open_cache,
    serve_cache,
)
from writebehind._stores._postgres import PostgresStore
from writebehind.harness._kill import pg_restart_command

CAP = 60  # seconds: a hung test fails, naming itself, instead of blocking CI

pytestmark = pytest.mark.postgres


def store(url: str, table: str) -> PostgresStore:
    s = PostgresStore(url, table=table)
    s.connect()
    return s


def test_versioned_upsert_only_moves_forward_and_keeps_tombstones(
    pg_url: str, pg_table: str
) -> None:
    s = store(pg_url, pg_table)
    try:
        s.write_batch([StoreRecord("a", b"v2", 2), StoreRecord("b", b"x", 1)])
        s.write_batch([StoreRecord("a", b"v1", 1)])  # older: refused silently
        s.write_batch([StoreRecord("b", None, 5)])  # tombstone
        s.write_batch([StoreRecord("b", b"late", 4)])  # older than the tombstone
        rows = s.read_all()
        assert rows["a"] == StoreRecord("a", b"v2", 2)
        assert rows["b"] == StoreRecord("b", None, 5)
        assert s.read("missing") is None
    finally:
        s.close()


def test_epochs_increase_across_connections(pg_url: str, pg_table: str) -> None:
    a, b = store(pg_url, pg_table), store(pg_url, pg_table)
    try:
        first, second = a.take_epoch(), b.take_epoch()
        assert second == first + 1
    finally:
        a.close()
        b.close()


def test_a_record_postgres_cannot_hold_is_quarantined_and_the_rest_lands(
    pg_url: str, pg_table: str
) -> None:
    s = store(pg_url, pg_table)
    try:
        rejected = s.write_batch([StoreRecord("ok", b"1", 1), StoreRecord("bad\x00key", b"2", 1)])
        assert [r.key for r in rejected] == ["bad\x00key"]
        assert s.read("ok") == StoreRecord("ok", b"1", 1)
        quarantined = s._run("q", f"SELECT key, reason FROM {pg_table}_quarantine", ())
        assert quarantined[0][0] == "bad\\x00key"
    finally:
        s.close()


def test_a_mismatched_schema_version_is_a_clear_error(pg_url: str, pg_table: str) -> None:
    s = store(pg_url, pg_table)
    s._run("bump", f"UPDATE {pg_table}_meta SET value = 99 WHERE name = 'schema_version'", ())
    s.close()
    with pytest.raises(SchemaMismatch, match="schema version 99"):
        store(pg_url, pg_table)


def test_bad_table_names_and_passwords_never_leak(pg_url: str) -> None:
    with pytest.raises(ConfigError, match="store_table"):
        PostgresStore(pg_url, table="users; drop")
    cfg = Config(store="postgresql://bob:hunter2@127.0.0.1:1/test")
    assert "hunter2" not in repr(cfg)
    s = PostgresStore("postgresql://bob:hunter2@127.0.0.1:1/test", timeout=2)
    with pytest.raises(Exception) as info:
        s.connect()
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def pg_config(tmp_path: Path, url: str, table: str, **kw: Any) -> Config:
    kw.setdefault("flush_interval", 0.05)
    return Config(store=url, store_table=table, journal_dir=tmp_path / "journal", **kw)


@pytest.mark.parametrize("ack", ["fsync", "store"])
async def test_the_cache_flushes_to_postgres(
    tmp_path: Path, pg_url: str, pg_table: str, ack: str
) -> None:
    with trio.fail_after(CAP):
        async with open_cache(pg_config(tmp_path, pg_url, pg_table, ack=ack)) as cache:
            for i in range(200):
                await cache.put(f"k{i % 50}", b"v%d" % i)
            await cache.delete("k0")
            await cache.flush()
            assert await cache.get("k1") == b"v151"
        s = store(pg_url, pg_table)
        rows = s.read_all()
        s.close()
        assert rows["k49"].value == b"v199" and rows["k0"].value is None


async def test_unflushed_writes_replay_into_postgres(
    tmp_path: Path, pg_url: str, pg_table: str
) -> None:
    with trio.fail_after(CAP):
        cfg = pg_config(tmp_path, pg_url, pg_table, flush_interval=600.0)
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(serve_cache, cfg)
            for i in range(100):
                await cache.put(f"k{i}", b"v")
            nursery.cancel_scope.cancel()
        async with open_cache(cfg):
            pass
        s = store(pg_url, pg_table)
        assert len(s.read_all()) == 100
        s.close()


async def test_killed_backends_lose_nothing_acknowledged(
    tmp_path: Path, pg_url: str, pg_table: str
) -> None:
    with trio.fail_after(CAP):
        import psycopg

        cfg = pg_config(tmp_path, pg_url, pg_table, retry_initial=0.01, retry_max=0.1)
        admin = await trio.to_thread.run_sync(lambda: psycopg.connect(pg_url, autocommit=True))
        killed = 0

        def kill_backends() -> int:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                (f"writebehind:{pg_table}",),
            ).fetchall()
            return sum(bool(r[0]) for r in rows)

        try:
            async with open_cache(cfg) as cache:
                for round_ in range(5):
                    for i in range(100):
                        await cache.put(f"k{i}", b"r%d" % round_)
                    await trio.sleep(0.1)  # let a flush be in flight or just done
                    killed += await trio.to_thread.run_sync(kill_backends)
                await cache.flush()
                stats = cache.statistics()
        finally:
            admin.close()
        assert killed >= 5
        assert stats.stores[0].errors >= 1  # the store actor saw the drops and reconnected
        s = store(pg_url, pg_table)
        rows = s.read_all()
        s.close()
        assert {k: r.value for k, r in rows.items()} == {f"k{i}": b"r4" for i in range(100)}
        assert stats.stores[0].status == "running"


async def test_two_instances_on_one_table_the_older_epoch_loses(
    tmp_path: Path, pg_url: str, pg_table: str
) -> None:
    with trio.fail_after(CAP):
        old = pg_config(tmp_path / "old", pg_url, pg_table, flush_interval=600.0)
        new = pg_config(tmp_path / "new", pg_url, pg_table)
        now = [1_800_000_000.0]
        seams = Seams(wall_clock=lambda: now[0])  # the store lease's clock
        async with trio.open_nursery() as nursery:
            zombie = await nursery.start(functools.partial(serve_cache, seams=seams), old)
            await zombie.put("k", b"zombie")
            now[0] += 3600  # the zombie stalled past its lease: the new instance takes over
            async with open_cache(new, seams=seams) as fresh:
                await fresh.put("k", b"fresh")
                await fresh.flush()
            await zombie.flush()
            await zombie.aclose()
        s = store(pg_url, pg_table)
        assert s.read("k") == StoreRecord("k", b"fresh", s.read("k").version)  # type: ignore[union-attr]
        s.close()


async def test_a_server_restart_while_writes_flow_loses_nothing(
    tmp_path: Path, pg_url: str, pg_table: str
) -> None:
    command = pg_restart_command()
    if command is None:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster")
    with trio.fail_after(2 * CAP):  # a server restart, then the flush's retries
        cfg = pg_config(tmp_path, pg_url, pg_table, retry_initial=0.05, retry_max=0.5)
        async with open_cache(cfg) as cache:
            acked: dict[str, bytes] = {}

            async def writer() -> None:
                for i in range(3000):
                    await cache.put(f"k{i % 300}", b"v%d" % i)
                    acked[f"k{i % 300}"] = b"v%d" % i
                    await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await trio.sleep(0.3)
                await trio.run_process(command)
            with trio.fail_after(60):
                await cache.flush()
            stats = cache.statistics()
        s = store(pg_url, pg_table)
        rows = s.read_all()
        s.close()
        assert {k: r.value for k, r in rows.items()} == acked
        assert stats.stores[0].errors >= 1


async def test_reads_survive_a_dropped_reader_connection(
    tmp_path: Path, pg_url: str, pg_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(CAP):
        import psycopg

        cfg = pg_config(tmp_path, pg_url, pg_table, max_entries=1, shards=1)
        async with open_cache(cfg) as cache:
            await cache.put("a", b"1")
            await cache.put("b", b"2")
            await cache.flush()
            with psycopg.connect(pg_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s", (f"writebehind:{pg_table}",),
                ).fetchone()
            assert killed is not None and killed[0] >= 2
            await trio.sleep(0.1)
            assert await cache.get("a") == b"1"  # evicted (max_entries=1): reads through
            assert await cache.get("b") == b"2"
        assert "the store reader failed" in caplog.text
