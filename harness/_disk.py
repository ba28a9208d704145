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

from writebehind import JournalCorruption
from writebehind._journal import SimulatedFileSystem
from writebehind._journal._codec import FRAME_HEADER_SIZE, HEADER_SIZE, MIN_PAYLOAD
from writebehind._journal._fs import CRASH_MODES, CrashMode, SimulatedCrash
from writebehind._journal._scan import MANIFEST_NAME, SEGMENT_RE, scan_journal

from ._plan import FaultInjector


class InjectedDiskError(OSError):
    """An I/O error the plan injected (``disk.fsync_error``): a real ``OSError`` to the
    runtime, and one the simulation can tell from an error of the runtime's own making."""


@attrs.frozen
class Flip:
    """Damage the harness did: a byte XORed with ``mask`` at ``offset`` of ``path``, or, with
    ``length``, that many bytes (one whole frame) removed at ``offset``."""

    path: str
    offset: int
    mask: int
    length: int = 0


class FaultyDisk(SimulatedFileSystem):
    """A :class:`SimulatedFileSystem` whose EIO and ENOSPC faults fire once, then clear, as a
    flaky disk or a briefly full volume would (a sticky fault only tests a crash loop)."""

    def __init__(
        self,
        seed: int = 0,
        *,
        injector: FaultInjector | None = None,
        on_power_cut: Callable[[CrashMode], None] | None = None,
        sync_pause: Callable[[], None] | None = None,
        on_inconsistent: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(seed)
        self.fail_fsyncs = 0  # how many coming fdatasyncs fail with EIO
        self.flips: list[Flip] = []
        self._originals: dict[str, tuple[bytes, bytes]] = {}  # before a frame was dropped
        # Power cuts at durability steps: drawn from ``injector`` (CUT_KINDS); the owner
        # learns of each through ``on_power_cut(mode)`` and must apply ``crash(mode)``.
        self.injector = injector
        self.on_power_cut = on_power_cut
        self.sync_pause = sync_pause  # called as each fdatasync runs: time passes during it
        self.on_inconsistent = on_inconsistent  # told when the durable journal is unreadable
        self._cut_rng = random.Random(f"{seed}/power-cut")

    def _cut(self, kind: str) -> bool:
        """Cut the power here if ``kind`` fires: from now on every operation fails."""
        mode = self._fires(kind)
        if mode is not None:
            self._power_cut(mode)
        return mode is not None

    def _fires(self, kind: str) -> CrashMode | None:
        """How the power is lost if a cut of ``kind`` fires here; None if none does."""
        if self.injector is None or self.powered_off or not self.injector.fire(kind):
            return None
        mode = self._cut_rng.choice(CRASH_MODES)
        self.injector.count(f"{kind}:{mode}")
        return mode

    def _power_cut(self, mode: CrashMode) -> None:
        self.cut_power()
        if self.on_power_cut is not None:
            self.on_power_cut(mode)

    def _off(self, what: str) -> SimulatedCrash:
        return SimulatedCrash(f"the power was cut at {what}")

    def fdatasync(self, fd: int) -> None:
        if self._cut("power_loss.before_sync"):
            raise self._off("an fdatasync, before it ran")
        if self.fail_fsyncs > 0:
            self.fail_fsyncs -= 1
            self.ops += 1
            raise InjectedDiskError(errno.EIO, "injected: " + os.strerror(errno.EIO))
        if self.sync_pause is not None:
            self.sync_pause()
        super().fdatasync(fd)
        self._cut("power_loss.after_sync")  # the sync completed; nothing after it will

    def _rotation_step(self, what: str, step: Callable[[], object]) -> object:
        mode = self._fires("power_loss.rotation")
        if mode is None:
            return step()
        if self._cut_rng.random() < 0.5:
            self._power_cut(mode)
            raise self._off(f"{what}, before it ran")
        try:
            return step()  # a cut *after* the step: it happens, then the machine is off
        finally:
            self._power_cut(mode)

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
        self._check_durable_journal(self.normpath(path))

    def _check_durable_journal(self, directory: str) -> None:
        """Crash consistency: the journal a power loss would leave *now* (synced bytes under
        synced names) must be readable. Run at each directory sync of a shard's journal,
        where segments are created and deleted."""
        name = posixpath.basename(directory)
        if self.on_inconsistent is None or self.flips or not name.startswith("shard-"):
            return
        durable_names = self.files(durable_names=True)
        files = sorted(
            (path, inode.durable)
            for path, inode in durable_names.items()
            if posixpath.dirname(path) == directory and SEGMENT_RE.match(posixpath.basename(path))
        )
        manifest_path = posixpath.join(directory, MANIFEST_NAME)
        manifest_inode = durable_names.get(manifest_path)
        manifest = None if manifest_inode is None else (manifest_path, manifest_inode.durable)
        try:
            scan_journal(files, shard_id=int(name.removeprefix("shard-")), manifest=manifest)
        except JournalCorruption as exc:
            self.on_inconsistent(f"a power loss now would leave an unreadable journal: {exc}")
        except ValueError:
            pass  # not a shard directory after all

    def holds(self, root: str, needle: bytes, *, durable: bool) -> bool:
        """Whether some file under ``root`` holds ``needle``: in what survives a power loss
        (``durable``: synced bytes under synced names) or a process crash (what was written)."""
        prefix = self.normpath(root) + "/"
        names = self.files(durable_names=durable and self.model_dirents)
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

    def reserve(self, fd: int, length: int) -> None:
        try:
            super().reserve(fd, length)
        except OSError as exc:  # the journal reserves a segment's space as it creates it
            if exc.errno == errno.ENOSPC:
                self.space_left = None
            raise

    def clear_faults(self) -> None:
        self.fail_fsyncs = 0
        self.space_left = None

    def segments(self, root: str) -> list[str]:
        """Every journal segment under ``root`` (``shard-NNNN/*.wal``), sorted."""
        found: list[str] = []
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

    def sizes(self, root: str) -> dict[str, int]:
        """The length of every file under ``root`` now."""
        prefix = self.normpath(root) + "/"
        return {p: len(inode.data) for p, inode in self.files().items() if p.startswith(prefix)}

    def torn_copies(self, root: str) -> dict[str, bytes]:
        """The content of every ``.torn-<offset>`` side file under ``root`` now."""
        prefix = self.normpath(root) + "/"
        return {
            p: bytes(inode.data) for p, inode in self.files().items()
            if p.startswith(prefix) and ".torn-" in posixpath.basename(p)
        }

    def unsynced(
        self, root: str, found_at: dict[str, int], torn_before: dict[str, bytes] | None = None
    ) -> list[str]:
        """What under ``root`` a power loss would take away now of what was there at
        ``found_at`` (:meth:`sizes`; bytes appended since may still be unsynced), and files
        created since their directory's last fsync. ``torn_before`` (:meth:`torn_copies`,
        taken with ``found_at``) tells a side file recovery rewrote (a second tear at the
        same offset) from one it left alone."""
        torn_before = torn_before or {}
        prefix = self.normpath(root) + "/"
        files = self.files()

        def ours(path: str) -> bool:  # a lock file's content is the holder's pid: not data
            return path.startswith(prefix) and posixpath.basename(path) != "LOCK"

        # Recovery cuts a torn tail (keeping it in ``<segment>.torn-<offset>``) and may then
        # append over the cut: only what is left of what it found must be durable.
        cut: dict[str, int] = {}
        for path in files:
            head, sep, suffix = path.rpartition(".torn-")
            offset = suffix.partition(".")[0]  # "<offset>" or "<offset>.<n>" (a later tear)
            fresh = path not in found_at or torn_before.get(path) != bytes(files[path].data)
            if sep and fresh and offset.isdigit():
                cut[head] = min(cut.get(head, int(offset)), int(offset))
        found = []
        for path, inode in files.items():
            if ours(path) and path in found_at:
                n = min(found_at[path], cut.get(path, found_at[path]), len(inode.data))
                if inode.durable[:n] != bytes(inode.data[:n]):
                    lost = n - min(n, len(inode.durable))
                    found.append(f"{path}: {lost or 'some'} of its first {n} bytes unsynced")
        if self.model_dirents:
            names = {p for p in files if ours(p)}
            durable = {p for p in self.files(durable_names=True) if ours(p)}
            # (A removal not yet durable is harmless: what comes back was already persisted.)
            found += [f"{p}: created, its directory not synced" for p in sorted(names - durable)]
        return found

    def _by_shard(self, root: str) -> list[list[str]]:
        by_dir: dict[str, list[str]] = {}
        for path in self.segments(root):
            by_dir.setdefault(posixpath.dirname(path), []).append(path)
        return list(by_dir.values())

    def _synced(self, path: str) -> bytes:
        return self.read_file(path)[: self.size(path) - self.unsynced_bytes(path)]

    def flip_detectable(self, root: str, rng: random.Random) -> Flip | None:
        """Flip one byte of synced journal data where the journal promises to notice.

        The spec's limit of detection: damage confined to the final frame of a shard's last
        segment looks exactly like a torn write, so that frame is never a target. Half the
        time the flip lands in the frame right before that final frame: damage followed by
        one small valid frame is where a recovery scan is most easily fooled.
        """
        candidates: list[tuple[str, int, int]] = []  # path, first and last+1 offset to hit
        edge: list[tuple[str, int, int]] = []
        small_edge: list[tuple[str, int, int]] = []  # ... before a minimal final frame
        for paths in self._by_shard(root):
            for path in paths:
                data = self._synced(path)
                frames = _frames(data)
                if path == paths[-1]:
                    if len(frames) >= 2:
                        edge.append((path, *frames[-2]))
                        start, end = frames[-1]
                        if end - start == FRAME_HEADER_SIZE + MIN_PAYLOAD:  # a checkpoint
                            small_edge.append((path, *frames[-2]))
                    limit = frames[-1][0] if frames else (HEADER_SIZE if data else 0)
                else:
                    limit = len(data)
                if limit > 0:
                    candidates.append((path, 0, limit))
        if edge and rng.random() < 0.5:
            candidates = small_edge if small_edge and rng.random() < 0.5 else edge
        if not candidates:
            return None
        path, start, end = rng.choice(candidates)
        flip = Flip(path, rng.randrange(start, end), 1 << rng.randrange(8))
        self.flip_byte(flip.path, flip.offset, flip.mask)
        self.flips.append(flip)
        return flip

    def drop_frame_detectable(self, root: str, rng: random.Random) -> Flip | None:
        """Remove one whole frame from synced journal data (a lost write in the middle of a
        log: every byte left is valid, only a sequence number is missing). Never the final
        frame of a shard's last segment: its loss is indistinguishable from a clean end."""
        candidates: list[tuple[str, int, int]] = []
        for paths in self._by_shard(root):
            for path in paths:
                frames = _frames(self._synced(path))
                if path == paths[-1]:
                    frames = frames[:-1]
                candidates += [(path, start, end) for start, end in frames]
        if not candidates:
            return None
        path, start, end = rng.choice(candidates)
        inode = self.files()[self.normpath(path)]
        data, durable = bytes(inode.data), inode.durable
        self._originals.setdefault(path, (data, durable))
        self.set_content(path, data[:start] + data[end:], durable[:start] + durable[end:])
        flip = Flip(path, start, 0, length=end - start)
        self.flips.append(flip)
        return flip

    def restore_flips(self) -> int:
        """Undo every flip and dropped frame (the operator restored the file from a
        replica); returns how many."""
        undone = 0
        for flip in reversed(self.flips):
            if not self.exists(flip.path):
                continue
            if flip.length:
                # The file's content from before its first dropped frame (later damage to it
                # included nothing else): restored once, for every drop in it.
                original = self._originals.pop(flip.path, None)
                if original is not None:
                    self.set_content(flip.path, *original)
                undone += 1
            elif flip.offset < self.size(flip.path):
                self.flip_byte(flip.path, flip.offset, flip.mask)
                undone += 1
        self.flips.clear()
        self._originals.clear()
        return undone


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every whole frame of a segment's bytes, in order."""
    frames = []
    offset = HEADER_SIZE
    while offset + FRAME_HEADER_SIZE <= len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        end = offset + FRAME_HEADER_SIZE + length
        if end > len(data):
            break
        frames.append((offset, end))
        offset = end
    return frames
