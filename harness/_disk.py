"""The simulated journal disk, with one-shot I/O errors and byte flips the journal must detect."""

from __future__ import annotations

import errno
import os
import posixpath
import random
import struct

import attrs

from writebehind._journal import SimulatedFileSystem
from writebehind._journal._codec import FRAME_HEADER_SIZE, HEADER_SIZE


@attrs.frozen
class Flip:
    """A byte the harness corrupted (XOR ``mask`` at ``offset`` of ``path``)."""

    path: str
    offset: int
    mask: int


class FaultyDisk(SimulatedFileSystem):
    """A :class:`SimulatedFileSystem` whose EIO and ENOSPC faults fire once, then clear, as a
    flaky disk or a briefly full volume would (a sticky fault only tests a crash loop)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.fail_fsyncs = 0  # how many coming fdatasyncs fail with EIO
        self.flips: list[Flip] = []

    def fdatasync(self, fd: int) -> None:
        if self.fail_fsyncs > 0:
            self.fail_fsyncs -= 1
            self.ops += 1
            raise OSError(errno.EIO, "injected: " + os.strerror(errno.EIO))
        super().fdatasync(fd)

    def fill_after(self, nbytes: int) -> None:
        """ENOSPC once ``nbytes`` more bytes are written; the space comes back after that."""
        self.space_left = nbytes

    def write(self, fd: int, data: bytes) -> int:
        try:
            return super().write(fd, data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.space_left = None
            raise

    def clear_faults(self) -> None:
        self.fail_fsyncs = 0
        self.space_left = None

    def segments(self, root: str) -> list[str]:
        """Every journal segment under ``root`` (``shard-NNNN/*.wal``), sorted."""
        found = []
        if not self.exists(root):
            return found
        for shard in self.listdir(root):
            directory = posixpath.join(root, shard)
            if not shard.startswith("shard-") or not self.exists(directory):
                continue
            try:
                names = self.listdir(directory)
            except OSError:
                continue
            found += [posixpath.join(directory, n) for n in names if n.endswith(".wal")]
        return sorted(found)

    def flip_detectable(self, root: str, rng: random.Random) -> Flip | None:
        """Flip one byte of synced journal data where the journal promises to notice.

        The spec's limit of detection: damage confined to the final frame of a shard's last
        segment looks exactly like a torn write, so that frame is never a target.
        """
        candidates: list[tuple[str, int]] = []
        by_dir: dict[str, list[str]] = {}
        for path in self.segments(root):
            by_dir.setdefault(posixpath.dirname(path), []).append(path)
        for paths in by_dir.values():
            for path in paths:
                durable = self.size(path) - self.unsynced_bytes(path)
                limit = durable
                if path == paths[-1]:
                    limit = _last_frame_start(self.read_file(path)[:durable])
                if limit > 0:
                    candidates.append((path, limit))
        if not candidates:
            return None
        path, limit = rng.choice(candidates)
        flip = Flip(path, rng.randrange(limit), 1 << rng.randrange(8))
        self.flip_byte(flip.path, flip.offset, flip.mask)
        self.flips.append(flip)
        return flip

    def restore_flips(self) -> int:
        """Undo every flip (the operator restored the file from a replica); returns how many."""
        undone = 0
        for flip in reversed(self.flips):
            if self.exists(flip.path) and flip.offset < self.size(flip.path):
                self.flip_byte(flip.path, flip.offset, flip.mask)
                undone += 1
        self.flips.clear()
        return undone


def _last_frame_start(data: bytes) -> int:
    """Offset of the last whole frame of a segment, or of its header if it holds none."""
    offset = last = HEADER_SIZE
    if len(data) <= HEADER_SIZE:
        return HEADER_SIZE if len(data) == HEADER_SIZE else 0
    while offset + FRAME_HEADER_SIZE <= len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        end = offset + FRAME_HEADER_SIZE + length
        if end > len(data):
            break
        last, offset = offset, end
    return last
