"""What the simulated file system shows a fault-injection harness: the power, and every file
as it is now and as a power loss would leave it."""

from __future__ import annotations

import pytest

from writebehind._journal import SimulatedCrash, SimulatedFileSystem


def _fs_with_file(data: bytes) -> SimulatedFileSystem:
    fs = SimulatedFileSystem()
    fs.makedirs("/d")
    fd = fs.open_append("/d/a", create=True)
    fs.write(fd, data)
    fs.fdatasync(fd)
    fs.fsync_dir("/d")
    return fs


def test_power_cut_fails_every_mutation_until_the_crash() -> None:
    fs = _fs_with_file(b"abc")
    assert not fs.powered_off
    fs.cut_power()
    assert fs.powered_off
    with pytest.raises(SimulatedCrash):
        fs.write_file("/d/b", b"y")
    fs.crash("drop_unsynced")
    assert not fs.powered_off
    fs.write_file("/d/b", b"y")


def test_files_show_names_and_bytes_now_and_after_a_power_loss() -> None:
    fs = _fs_with_file(b"abc")
    fd = fs.open_append("d//b", create=True)
    fs.write(fd, b"xy")
    assert fs.normpath("d//b") == "/d/b"
    now, durable = fs.files(), fs.files(durable_names=True)
    assert bytes(now["/d/b"].data) == b"xy" and now["/d/b"].durable == b""
    assert "/d/b" not in durable  # its directory is not synced yet
    assert durable["/d/a"].durable == b"abc"
    with pytest.raises(TypeError):
        now["/d/c"] = now["/d/a"]  # type: ignore[index]  # a view: the test is that it refuses
    fs.fdatasync(fd)
    fs.fsync_dir("/d")
    assert fs.files(durable_names=True)["/d/b"].durable == b"xy"
    assert fs.model_dirents and not SimulatedFileSystem(model_dirents=False).model_dirents


def test_set_content_is_not_an_operation() -> None:
    fs = _fs_with_file(b"abc")
    ops = fs.ops
    fs.crash_after_ops = ops  # the next operation would lose the power
    fs.set_content("/d/a", b"xyz", b"x")
    assert fs.ops == ops and not fs.powered_off
    assert fs.read_file("/d/a") == b"xyz" and fs.unsynced_bytes("/d/a") == 2
    fs.crash("drop_unsynced")
    assert fs.read_file("/d/a") == b"x"
