"""Power loss around the journal's metadata: the layout file and directory entries."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from writebehind import Config, Seams, open_cache
from writebehind._journal import OsFileSystem, SimulatedFileSystem
from writebehind.harness import MemoryStore

CRASH_MODES = ("drop_unsynced", "tear_last_write", "zero_fill_tail")


def _config(journal_dir: Path, **kw: Any) -> Config:
    return Config(store="sqlite:///unused.db", journal_dir=journal_dir, ack="fsync",
                  flush_interval=0.05, **kw)


async def _start(fs: SimulatedFileSystem, db: MemoryStore, config: Config) -> None:
    seams = Seams(store_factory=db.factory, filesystem=fs)
    async with open_cache(config, seams=seams) as cache:
        await cache.put("k", b"v")


def _layout(fs: SimulatedFileSystem, journal_dir: Path) -> Any:
    return json.loads(fs.read_file(str(journal_dir / "writebehind.json")))


@pytest.mark.parametrize("mode", CRASH_MODES)
async def test_power_loss_right_after_a_fresh_start_leaves_a_startable_journal(
    tmp_path: Path, mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The layout file used to be a plain write outside the journal's file layer: a power loss
    # in the writeback window left it empty, and every later start failed with ConfigError.
    journal_dir = tmp_path / "journal"
    fs, db = SimulatedFileSystem(seed=1), MemoryStore()
    await _start(fs, db, _config(journal_dir))
    fs.crash(mode)  # type: ignore[arg-type]
    assert _layout(fs, journal_dir) == {"shards": 2}
    await _start(fs, db, _config(journal_dir))
    assert db.values() == {"k": b"v"}
    assert not journal_dir.exists(), "a cache on a simulated disk wrote to the real one"


async def test_power_loss_at_any_step_of_a_first_start_or_a_reshard_leaves_it_startable(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal_dir = tmp_path / "journal"
    for shards_before, shards_after in ((None, 2), (2, 3)):
        for point in range(200):
            fs, db = SimulatedFileSystem(seed=point), MemoryStore()
            if shards_before is not None:
                await _start(fs, db, _config(journal_dir, shards=shards_before))
            fs.crash_after_ops = fs.ops + point
            try:
                await _start(fs, db, _config(journal_dir, shards=shards_after))
                finished = True
            except Exception:  # the simulated power loss, wherever it struck
                finished = False
            fs.crash("drop_unsynced")
            layout = str(journal_dir / "writebehind.json")
            if fs.exists(layout):
                assert _layout(fs, journal_dir)["shards"] in (shards_before, shards_after)
            await _start(fs, db, _config(journal_dir, shards=shards_after))
            assert _layout(fs, journal_dir) == {"shards": shards_after}
            if finished:
                break
        else:
            pytest.fail("a start took more than 200 file operations")


@pytest.mark.parametrize("mode", CRASH_MODES)
def test_an_atomic_write_leaves_the_old_content_or_the_new(mode: str) -> None:
    from writebehind._journal._fs import write_file_atomic

    for point in range(4):
        fs = SimulatedFileSystem(seed=point)
        fs.makedirs("/d")
        write_file_atomic(fs, "/d/meta.json", b"old")
        fs.crash_after_ops = fs.ops + point
        try:
            write_file_atomic(fs, "/d/meta.json", b"new, and longer")
        except Exception:
            pass
        fs.crash(mode)  # type: ignore[arg-type]
        assert fs.read_file("/d/meta.json") in (b"old", b"new, and longer")


def test_new_directories_are_made_durable_in_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = OsFileSystem.fsync_dir
    monkeypatch.setattr(OsFileSystem, "fsync_dir",
                        lambda self, path: (synced.append(path), real(self, path))[1])
    fs = OsFileSystem()
    fs.makedirs(str(tmp_path / "a" / "b"))
    assert synced == [str(tmp_path), str(tmp_path / "a")]
    synced.clear()
    fs.makedirs(str(tmp_path / "a" / "b"))  # already there: nothing to sync
    assert synced == []
    assert os.path.isdir(tmp_path / "a" / "b")
