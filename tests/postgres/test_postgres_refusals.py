"""Issue 12, items 2 and 3 on a real PostgreSQL server.

- The store says which records did not apply because it holds newer versions.
- A record PostgreSQL refuses for good (a key over its btree index-row limit, a NUL in text)
  is quarantined, never retried forever; a put that could never be stored is refused before
  it is acknowledged; ``writebehind recover`` quarantines a refused record and says so; the
  operator's ``writebehind quarantine discard`` lets the journal's checkpoint move.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import (
    Config,
    Rejection,
    SQLiteStore,
    StoreRecord,
    Superseded,
    Unstorable,
    serve_cache,
)
from writebehind._cli import main
from writebehind._stores._postgres import PostgresStore

CAP = 60  # seconds: a hung test fails, naming itself, instead of blocking CI

pytestmark = pytest.mark.postgres


def store(url: str, table: str) -> PostgresStore:
    s = PostgresStore(url, table=table)
    s.connect()
    return s


def incompressible(size: int) -> str:
    # Random letters: PostgreSQL compresses a long key before indexing it, so a repetitive
    # one would fit.
    rng = random.Random(size)
    return "".join(rng.choice(string.ascii_letters) for _ in range(size))


def test_the_store_reports_records_that_lost_to_newer_versions(pg_url: str, pg_table: str) -> None:
    s = store(pg_url, pg_table)
    try:
        assert s.write_batch([StoreRecord("a", b"2", 20), StoreRecord("b", b"1", 10)]) == ()
        assert s.write_batch([StoreRecord("a", b"2", 20)]) == ()  # a retry: the same version
        outcome = s.write_batch([StoreRecord("a", b"1", 10), StoreRecord("b", b"2", 11)])
        assert outcome == (Superseded("a", 10),)
        # The one-by-one path (a refusal in the batch) says so too.
        outcome = s.write_batch([StoreRecord("a", b"0", 5), StoreRecord("n\x00", b"x", 1)])
        assert sorted(type(o).__name__ for o in outcome) == ["Rejection", "Superseded"]
        assert Superseded("a", 5) in outcome
    finally:
        s.close()


def test_a_key_over_the_index_row_limit_is_refused_for_good_not_retried(
    pg_url: str, pg_table: str
) -> None:
    # "index row requires N bytes, maximum size is 2712": SQLSTATE 54000, which psycopg
    # raises as an OperationalError (the class of connection failures).
    s = store(pg_url, pg_table)
    try:
        big = incompressible(100_000)
        outcome = s.write_batch([StoreRecord("ok", b"1", 1), StoreRecord(big, b"2", 1)])
        assert len(outcome) == 1 and isinstance(outcome[0], Rejection)
        assert outcome[0].key == big and "index row" in outcome[0].reason
        assert s.read("ok") == StoreRecord("ok", b"1", 1)
        rows = s.quarantine_rows()
        assert [(r.key == big, r.resolution) for r in rows] == [(True, None)]
        s.write_batch([StoreRecord(big, b"2", 1)])  # refused again (a replay): one row
        assert len(s.quarantine_rows()) == 1
        assert s.resolve_quarantine("discard") == 1
        assert s.write_batch([StoreRecord(big, b"2", 1)]) == (Superseded(big, 1),)
    finally:
        s.close()


def test_a_key_postgres_could_never_hold_is_refused_before_it_is_acknowledged(
    pg_url: str, pg_table: str, tmp_path: Path
) -> None:
    cfg = Config(store=pg_url, store_table=pg_table, journal_dir=tmp_path / "j", shards=1)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(serve_cache, cfg)
            with pytest.raises(Unstorable, match="NUL character"):
                await cache.put("w3.k5\0", b"v")
            with pytest.raises(Unstorable, match="NUL character"):
                await cache.delete("a\0")
            assert await cache.get("w3.k5\0") is None  # a read of it is a miss, not an error
            with pytest.raises(ValueError, match="max_key_bytes"):
                await cache.put(incompressible(100_000), b"v")
            await cache.put("fine", b"v")
            await cache.flush()
            assert cache.statistics().shards[0].acked_seq == 1
            assert cache.quarantined() == []
            await cache.aclose()

    trio.run(run)


def _journal_with(tmp_path: Path, records: list[tuple[str, bytes]]) -> None:
    """Journal ``records`` through a cache on SQLite (which holds any key), killed before
    it flushes: as a journal written before this version refused such keys up front."""
    cfg = Config(
        store=f"sqlite:///{tmp_path}/scratch.db", journal_dir=tmp_path / "journal", shards=1,
        flush_interval=3600.0,
    )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            cache = await nursery.start(serve_cache, cfg)
            for key, value in records:
                await cache.put(key, value)
            nursery.cancel_scope.cancel()

    trio.run(run)


def test_recover_quarantines_a_refused_record_says_so_and_discard_unpins_the_journal(
    pg_url: str, pg_table: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _journal_with(tmp_path, [("before", b"1"), ("bad\0key", b"2"), ("after", b"3")])
    toml = tmp_path / "writebehind.toml"
    toml.write_text(
        f'store = "{pg_url}"\nstore_table = "{pg_table}"\njournal_dir = "journal"\nshards = 1\n'
    )
    assert main(["recover", "--config", str(toml)]) == 0
    captured = capsys.readouterr()
    assert "recovered 3 records" in captured.out
    assert "refused 1 records for good (first: 'bad\\x00key'" in captured.err
    assert "writebehind quarantine list" in captured.err
    s = store(pg_url, pg_table)
    try:
        assert s.read("before") is not None and s.read("after") is not None
    finally:
        s.close()
    # The journal keeps the refused record: a second run meets it again.
    assert main(["recover", "--config", str(toml)]) == 0
    assert "recovered 2 records" in capsys.readouterr().out  # from the refused one on
    assert main(["quarantine", "list", "--config", str(toml)]) == 0
    assert "'bad\\\\x00key' version" in capsys.readouterr().out
    assert main(["quarantine", "discard", "--config", str(toml), "--all"]) == 0
    assert "1 quarantined records discarded" in capsys.readouterr().out
    assert main(["recover", "--config", str(toml)]) == 0
    captured = capsys.readouterr()
    assert "recovered 2 records" in captured.out and "refused" not in captured.err
    assert main(["recover", "--config", str(toml)]) == 0
    assert "recovered 0 records" in capsys.readouterr().out  # the checkpoint moved


async def test_a_cache_quarantines_a_replayed_refusal_and_discarding_it_moves_the_checkpoint(
    pg_url: str, pg_table: str, tmp_path: Path
) -> None:
    with trio.fail_after(CAP):
        await trio.to_thread.run_sync(_journal_with, tmp_path, [("bad\0key", b"2"), ("ok", b"1")])
        cfg = Config(
            store=pg_url, store_table=pg_table, journal_dir=tmp_path / "journal", shards=1,
            flush_interval=0.01,
        )
        async with trio.open_nursery() as nursery:
            cache: Any = await nursery.start(serve_cache, cfg)
            await cache.flush()  # returns: the refusal is quarantined
            assert [k for k, _v, _r in cache.quarantined()] == ["bad\0key"]
            assert cache.statistics().shards[0].persisted_seq == 0  # pinned below seq 1
            assert await cache.discard_quarantined() == 1
            while cache.statistics().shards[0].persisted_seq < 2:
                await trio.sleep(0.01)
            await cache.aclose()
        s = store(pg_url, pg_table)
        try:
            assert [r.resolution for r in s.quarantine_rows()] == ["discard"]
        finally:
            s.close()


def test_sqlite_store_is_unaffected(tmp_path: Path) -> None:
    # (A NUL key is an ordinary key on SQLite: no refusal there.)
    s = SQLiteStore(tmp_path / "s.db")
    s.connect()
    try:
        assert s.write_batch([StoreRecord("a\0b", b"v", 1)]) == ()
        assert s.read("a\0b") == StoreRecord("a\0b", b"v", 1)
    finally:
        s.close()
