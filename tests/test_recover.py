"""``writebehind recover``: replay journals into the store and exit."""

from pathlib import Path

import pytest
import trio

from writebehind import Config, SQLiteStore, serve_cache
from writebehind._cli import main


async def crash_with_unflushed_writes(config: Config, count: int) -> None:
    async with trio.open_nursery() as nursery:
        cache = await nursery.start(serve_cache, config)
        for i in range(count):
            await cache.put(f"k{i}", b"v%d" % i)
        await cache.delete("k0")
        nursery.cancel_scope.cancel()


def test_recover_replays_every_journal_into_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "writebehind.toml"
    toml.write_text('store = "sqlite:///store.db"\njournal_dir = "journal"\nflush_interval = 600\n')
    config = Config.from_toml(toml)
    trio.run(crash_with_unflushed_writes, config, 30)
    assert main(["recover", "--config", str(toml)]) == 0
    assert "recovered 31 records from 2 shard journals" in capsys.readouterr().out
    store = SQLiteStore(tmp_path / "store.db")
    store.connect()
    rows = store.read_all()
    store.close()
    assert rows["k0"].value is None and rows["k29"].value == b"v29"
    assert sum(r.value is not None for r in rows.values()) == 29
    # Idempotent: a second run finds nothing left to replay.
    assert main(["recover", "--config", str(toml)]) == 0
    assert "recovered 0 records" in capsys.readouterr().out


def test_recover_reports_a_bad_config_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recover", "--config", str(tmp_path / "missing.toml")]) == 1
    assert "does not exist" in capsys.readouterr().err
