"""A segment that is not a regular file is a journal error naming it, never a hang or a crash.

Issue 12, item 8: a directory in a segment's place made `journal check`/`dump` and the cache
die with a traceback; a FIFO hung them, deaf to Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from writebehind import Config, JournalCorruption, open_cache
from writebehind._cli import main
from writebehind._journal import Journal, OsFileSystem, RecordKind

CAP = 30  # seconds: a hung test fails, naming itself, instead of blocking CI


def _journal(directory: Path, count: int = 60) -> list[Path]:
    async def fill() -> None:
        journal = await Journal.open(directory, shard_id=0, segment_bytes=4096)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            for i in range(count):
                await journal.wait_synced(
                    journal.append_nowait(RecordKind.PUT, f"k{i}", b"x" * 200, i + 1)
                )
            journal.close()

    trio.run(fill)
    return sorted(directory.glob("*.wal"))


def _replace(segment: Path, kind: str) -> None:
    segment.unlink()
    if kind == "directory":
        segment.mkdir()
    else:
        os.mkfifo(segment)


def test_read_file_refuses_what_is_not_a_regular_file_without_blocking(tmp_path: Path) -> None:
    fifo, directory = tmp_path / "fifo", tmp_path / "dir"
    os.mkfifo(fifo)
    directory.mkdir()
    with pytest.raises(OSError, match=r"not a regular file \(a FIFO\)"):
        OsFileSystem().read_file(str(fifo))
    with pytest.raises(OSError, match=r"not a regular file \(a directory\)"):
        OsFileSystem().read_file(str(directory))


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink"])
def test_write_file_refuses_what_is_not_a_regular_file_without_blocking(
    tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "MANIFEST.tmp"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)  # no reader: a blocking open for writing would wait for one forever
    else:
        (tmp_path / "elsewhere").write_bytes(b"keep")
        target.symlink_to(tmp_path / "elsewhere")
    expected = {"directory": "a directory", "fifo": "a FIFO", "symlink": "a symbolic link"}
    with pytest.raises(OSError, match=rf"not a regular file \({expected[kind]}\)"):
        OsFileSystem().write_file(str(target), b"data")
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_bytes() == b"keep"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
@pytest.mark.parametrize("which", [0, -1], ids=["oldest", "newest"])
async def test_open_refuses_a_segment_that_is_not_a_file_naming_it(
    tmp_path: Path, kind: str, which: int
) -> None:
    with trio.fail_after(CAP):
        segment = (await trio.to_thread.run_sync(_journal, tmp_path))[which]
        _replace(segment, kind)
        with trio.fail_after(10):
            with pytest.raises(JournalCorruption, match="not a regular file") as info:
                await Journal.open(tmp_path, shard_id=0)
        assert info.value.path == str(segment)
        assert str(info.value).startswith(f"{segment}: offset 0: cannot read this journal file")


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_check_and_dump_report_it_and_exit_1_without_hanging(tmp_path: Path, kind: str) -> None:
    # In a child process: before the fix a FIFO hung the command for good.
    _replace(_journal(tmp_path)[-1], kind)
    for command in ("check", "dump"):
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from writebehind._cli import main; "
             f"sys.exit(main(['journal', '{command}', sys.argv[1]]))", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr, done.stderr
        assert "cannot read this journal file: not a regular file" in done.stdout


async def test_repair_moves_it_aside(tmp_path: Path) -> None:
    with trio.fail_after(CAP):
        segments = await trio.to_thread.run_sync(_journal, tmp_path)
        _replace(segments[-1], "directory")
        journal = await Journal.open(tmp_path, shard_id=0, repair=True)
        journal.close()
        (repair,) = journal.recovery.repairs
        assert f"{segments[-1]}.corrupt-0" in repair.side_files
        assert Path(f"{segments[-1]}.corrupt-0").is_dir()
        assert main(["journal", "check", str(tmp_path)]) == 0


async def test_the_cache_refuses_to_start_with_a_journal_error(
    tmp_path: Path,
) -> None:
    with trio.fail_after(CAP):
        config = Config(store=f"sqlite:///{tmp_path}/db.sqlite", journal_dir=tmp_path / "j",
                        shards=1, flush_interval=3600, max_restarts=1)
        async with open_cache(config) as cache:
            await cache.put("k", b"v")
        segment = sorted((tmp_path / "j" / "shard-0000").glob("*.wal"))[-1]
        _replace(segment, "fifo")
        with pytest.raises(BaseException) as info:
            async with open_cache(config):
                pass
        leaves = _leaves(info.value)
        assert leaves and all(isinstance(x, JournalCorruption) for x in leaves), leaves
        assert str(segment) in str(leaves[0])


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
