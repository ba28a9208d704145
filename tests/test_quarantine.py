"""Issue 12, item 3: a record the store refuses for good never blocks a shard.

Run on SQLite with its length limit lowered, so a value over it is refused the way a
PostgreSQL program limit refuses one (``tests/postgres/test_postgres_refusals.py`` does it on
PostgreSQL itself): it is quarantined, not retried forever; ``flush()`` returns; an operator
can discard or retry it (``Cache.discard_quarantined``, ``writebehind quarantine``), and the
journal's checkpoint then moves.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import Config, Seams, SQLiteStore, StoreRecord, Unstorable, serve_cache
from writebehind._cli import main
from writebehind._cli._recover import recover_with_config
from writebehind._core._limits import StoreLimits

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI

LIMIT = 200  # bytes of one SQLite row or value; a 300-byte value is refused for good


class TinySQLite(SQLiteStore):
    """SQLite with a 200-byte length limit: a bigger value raises ``sqlite3.DataError``."""

    def connect(self) -> None:
        super().connect()
        self._conn().setlimit(sqlite3.SQLITE_LIMIT_LENGTH, LIMIT)


def config(tmp_path: Path, **kw: Any) -> Config:
    kw.setdefault("store", f"sqlite:///{tmp_path}/store.db")
    kw.setdefault("journal_dir", tmp_path / "journal")
    kw.setdefault("shards", 1)
    kw.setdefault("flush_interval", 0.01)
    kw.setdefault("retry_max", 0.05)
    kw.setdefault("retry_initial", 0.01)
    return Config(**kw)


def tiny_seams(tmp_path: Path) -> Seams:
    return Seams(store_factory=lambda: TinySQLite(tmp_path / "store.db"))


def store_view(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    return store


async def start(nursery: trio.Nursery, cfg: Config, seams: Seams) -> Any:
    return await nursery.start(functools.partial(serve_cache, cfg, seams=seams))


async def test_a_refused_record_is_quarantined_then_discarded_and_the_checkpoint_moves(
    tmp_path: Path,
) -> None:
    cfg, seams = config(tmp_path), tiny_seams(tmp_path)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            cache = await start(nursery, cfg, seams)
            await cache.put("big", b"old")
            await cache.flush()
            receipt = await cache.put("big", b"v" * 300)
            await cache.put("small", b"s")
            await cache.flush()  # returns: the refusal is quarantined, not retried forever
            assert [(k, v) for k, v, _r in cache.quarantined()] == [("big", receipt.version)]
            shard = cache.statistics().shards[0]
            assert shard.persisted_seq < receipt.seq  # the refused record pins the journal
            assert await cache.discard_quarantined(["big"]) == 1
            assert cache.quarantined() == []
            assert await cache.get("big") == b"old"  # what the store holds
            with trio.fail_after(5):
                while cache.statistics().shards[0].persisted_seq < receipt.seq + 1:
                    await trio.sleep(0.01)  # the checkpoint passes it now
            await cache.aclose()
    store = store_view(tmp_path)
    try:
        rows = store.quarantine_rows()
        assert [(r.key, r.resolution) for r in rows] == [("big", "discard")]
        assert store.read("small") == StoreRecord("small", b"s", store.read("small").version)  # type: ignore[union-attr]
    finally:
        store.close()


async def test_a_retried_quarantine_record_lands_once_the_cause_is_fixed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    stores: list[TinySQLite] = []
    roomy = {"on": False}

    def factory() -> SQLiteStore:
        store = SQLiteStore(tmp_path / "store.db") if roomy["on"] else TinySQLite(
            tmp_path / "store.db"
        )
        stores.append(store)  # type: ignore[arg-type]
        return store

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            cache = await start(nursery, cfg, Seams(store_factory=factory))
            await cache.put("big", b"v" * 300)
            await cache.flush()
            assert len(cache.quarantined()) == 1
            roomy["on"] = True  # the operator lifts the limit (new connections see it)
            for store in stores:
                store.close()  # the store actor reconnects through the factory
            await cache.retry_quarantined()
            await cache.flush()
            await cache.aclose()
    store = store_view(tmp_path)
    try:
        assert store.read("big") is not None
    finally:
        store.close()


async def test_recover_quarantines_a_refused_record_and_a_discard_lets_it_pass(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        cfg, seams = config(tmp_path, flush_interval=3600.0), tiny_seams(tmp_path)
        async with trio.open_nursery() as nursery:
            cache = await start(nursery, cfg, seams)
            await cache.put("big", b"v" * 300)
            await cache.put("after", b"a")
            nursery.cancel_scope.cancel()  # killed: both stay journaled
        report = await recover_with_config(cfg, seams=seams)
        assert [(q.key, "too big" in q.reason) for q in report.quarantined] == [("big", True)]
        store = store_view(tmp_path)
        try:
            assert store.read("after") is not None  # the rest landed
            assert store.resolve_quarantine("discard", ["big"]) == 1
        finally:
            store.close()
        again = await recover_with_config(cfg, seams=seams)
        assert again.quarantined == () and again.records == 2
        third = await recover_with_config(cfg, seams=seams)
        assert third.records == 0  # the checkpoint passed the discarded record


def test_quarantine_cli_lists_discards_and_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "writebehind.toml"
    toml.write_text('store = "sqlite:///store.db"\njournal_dir = "journal"\n')
    store = TinySQLite(tmp_path / "store.db")
    store.connect()
    store.write_batch([StoreRecord("big", b"v" * 300, 5), StoreRecord("huge", b"h" * 400, 6)])
    store.close()
    assert main(["quarantine", "list", "--config", str(toml)]) == 0
    out = capsys.readouterr().out
    assert "'big' version 5 [pending]" in out and "'huge' version 6 [pending]" in out
    assert main(["quarantine", "discard", "--config", str(toml)]) == 2  # which ones?
    assert "--key KEY" in capsys.readouterr().err
    assert main(["quarantine", "discard", "--config", str(toml), "--key", "big"]) == 0
    assert "1 quarantined records discarded" in capsys.readouterr().out
    assert main(["quarantine", "list", "--config", str(toml)]) == 0
    assert "'big' version 5 [discarded]" in capsys.readouterr().out
    assert main(["quarantine", "retry", "--config", str(toml), "--all"]) == 0
    assert "2 quarantined records put back in line" in capsys.readouterr().out
    assert main(["quarantine", "list", "--config", str(toml)]) == 0
    assert "the quarantine is empty" in capsys.readouterr().out


async def test_a_store_that_cannot_hold_nul_refuses_such_a_key_before_acknowledging(
    tmp_path: Path,
) -> None:
    class NoNul(SQLiteStore):
        limits = StoreLimits("NoNul", max_key_bytes=10, nul_in_keys=False)

    seams = Seams(store_factory=lambda: NoNul(tmp_path / "store.db"))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            cache = await start(nursery, config(tmp_path), seams)
            with pytest.raises(Unstorable, match="holds a NUL character"):
                await cache.put("a\0b", b"v")
            with pytest.raises(ValueError, match="holds a NUL character"):  # a ValueError too
                await cache.delete("a\0b")
            assert await cache.get("a\0b") is None  # a read of such a key is a miss
            with pytest.raises(Unstorable, match="over the NoNul store's limit of 10"):
                await cache.put("k" * 11, b"v")
            await cache.put("k" * 10, b"v")
            await cache.flush()
            assert cache.statistics().shards[0].acked_seq == 1  # nothing else was journaled
            await cache.aclose()


async def test_a_start_that_replays_journals_into_the_store_reports_a_refusal_and_goes_on(
    tmp_path: Path,
) -> None:
    # ack='store' replays whatever journals hold into the store before it starts: a record
    # the store refuses is quarantined and alerted, not a failed start.
    seams = tiny_seams(tmp_path)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            cache = await start(nursery, config(tmp_path, flush_interval=3600.0), seams)
            await cache.put("big", b"v" * 300)
            await cache.put("ok", b"1")
            nursery.cancel_scope.cancel()
        alerts: list[str] = []
        cfg = config(tmp_path, ack="store", on_alert=alerts.append)
        async with trio.open_nursery() as nursery:
            cache = await start(nursery, cfg, seams)
            assert await cache.get("ok") == b"1"
            await cache.aclose()
    assert any("refused 1 journal records for good (first: 'big'" in a for a in alerts)
