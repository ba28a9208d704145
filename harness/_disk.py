"""The simulated journal disk, with one-shot I/O errors, byte flips the journal must detect,
and power cuts placed exactly at the journal's durability steps.

A power cut from a tick of the chaos task lands wherever the journal happens to be; the bugs
that break ``ack="fsync"`` live at the edges of a sync (records appended while it runs, a
segment rotated without syncing its tail or its directory). So the disk also cuts the power
*at* those edges, as fault kinds of their own: right before an ``fdatasync``
(``power_loss.before_sync``), right after one (``power_loss.after_sync``), and before or after
a step of a rotation or checkpoint (``power_loss.rotation``: a segment created, renamed or
unlinked, a directory synced). From the cut on, every disk operation fails (the machine is
off) until the harness applies the crash and restarts the process.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import struct
from collections.abc import Callable

import attrs

from writebehind._journal import SimulatedFileSystem
from writebehind._journal._codec import FRAME_HEADER_SIZE, HEADER_SIZE
from writebehind._journal._fs import CRASH_MODES, CrashMode, SimulatedCrash

from ._plan import FaultInjector


@attrs.frozen
class Flip:
    """A byte the harness corrupted (XOR ``mask`` at ``offset`` of ``path``)."""

    path: str
    offset: int
    mask: int


class FaultyDisk(SimulatedFileSystem):
    """A :class:`SimulatedFileSystem` whose EIO and ENOSPC faults fire once, then clear, as a
    flaky disk or a briefly full volume would (a sticky fault only tests a crash loop)."""

    def __init__(
        self,
        seed: int = 0,
        *,
        injector: FaultInjector | None = None,
        on_power_cut: Callable[[CrashMode], None] | None = None,
    ) -> None:
        super().__init__(seed)
        self.fail_fsyncs = 0  # how many coming fdatasyncs fail with EIO
        self.flips: list[Flip] = []
        # Power cuts at durability steps: drawn from ``injector`` (CUT_KINDS); the owner
        # learns of each through ``on_power_cut(mode)`` and must apply ``crash(mode)``.
        self.injector = injector
        self.on_power_cut = on_power_cut
        self._cut_rng = random.Random(f"{seed}/power-cut")

    def _cut(self, kind: str) -> bool:
        """Cut the power here if ``kind`` fires: from now on every operation fails."""
        if self.injector is None or self._frozen or not self.injector.fire(kind):
            return False
        mode = self._cut_rng.choice(CRASH_MODES)
        self.injector.count(f"{kind}:{mode}")
        self._frozen = True
        if self.on_power_cut is not None:
            self.on_power_cut(mode)
        return True

    def _off(self, what: str) -> SimulatedCrash:
        return SimulatedCrash(f"the power was cut at {what}")

    def fdatasync(self, fd: int) -> None:
        if self._cut("power_loss.before_sync"):
            raise self._off("an fdatasync, before it ran")
        if self.fail_fsyncs > 0:
            self.fail_fsyncs -= 1
            self.ops += 1
            raise OSError(errno.EIO, "injected: " + os.strerror(errno.EIO))
        super().fdatasync(fd)
        self._cut("power_loss.after_sync")  # the sync completed; nothing after it will

    def _rotation_step(self, what: str, step: Callable[[], object]) -> object:
        if not self._cut("power_loss.rotation"):
            return step()
        if self._cut_rng.random() < 0.5:
            raise self._off(f"{what}, before it ran")
        self._frozen = False  # a cut *after* the step: it happens, then the machine is off
        try:
            return step()
        finally:
            self._frozen = True

    def open_append(self, path: str, *, create: bool = False) -> int:
        if not create:
            return super().open_append(path)
        fd = self._rotation_step(f"the creation of {path}",
                                 lambda: super(FaultyDisk, self).open_append(path, create=True))
        assert isinstance(fd, int)
        return fd

    def unlink(self, path: str) -> None:
        self._rotation_step(f"the unlink of {path}", lambda: super(FaultyDisk, self).unlink(path))

    def rename(self, src: str, dst: str) -> None:
        self._rotation_step(f"the rename of {src}",
                            lambda: super(FaultyDisk, self).rename(src, dst))

    def fsync_dir(self, path: str) -> None:
        self._rotation_step(f"an fsync of {path}",
                            lambda: super(FaultyDisk, self).fsync_dir(path))

    def holds(self, root: str, needle: bytes, *, durable: bool) -> bool:
        """Whether some file under ``root`` holds ``needle``: in what survives a power loss
        (``durable``: synced bytes under synced names) or a process crash (what was written)."""
        prefix = self._norm(root) + "/"
        names = self._durable_names if durable and self._model_dirents else self._names
        for path, inode in names.items():
            if path.startswith(prefix) and needle in (inode.durable if durable else inode.data):
                return True
        return False

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
