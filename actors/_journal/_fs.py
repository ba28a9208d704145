"""The file layer: every byte the journal reads or writes goes through a :class:`FileSystem`.

:class:`OsFileSystem` is the real thing. :class:`SimulatedFileSystem` keeps files in memory,
tracks which bytes and directory entries are durable, and can lose power (:meth:`crash`),
fail fsync with EIO, run out of space, or flip a byte — deterministically.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import posixpath
import random
import stat
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol

import attrs

CrashMode = Literal["drop_unsynced", "tear_last_write", "zero_fill_tail"]
CRASH_MODES: tuple[CrashMode, ...] = ("drop_unsynced", "tear_last_write", "zero_fill_tail")


class FileSystem(Protocol):
    """What the journal needs from a file system. Paths are plain strings."""

    # True if calls block the OS thread: the journal then runs fsyncs in a worker thread.
    blocking: bool

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its parents if missing, durably (each new entry's parent
        directory is fsynced)."""

    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path``."""

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""

    def size(self, path: str) -> int:
        """The current length of file ``path``."""

    def read_file(self, path: str) -> bytes:
        """The whole content of file ``path``."""

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace ``path`` with ``data`` and fsync it (not its directory)."""

    def open_append(self, path: str, *, create: bool = False) -> int:
        """Open for appending; ``create`` makes a new file and fails if it exists."""

    def write(self, fd: int, data: bytes) -> int:
        """Append; returns how many bytes were written (may be fewer than asked)."""

    def reserve(self, fd: int, length: int) -> None:
        """Allocate disk space for the first ``length`` bytes of the file without changing its
        size, so appends up to there cannot fail with ENOSPC; raises ENOSPC if the space is
        not there. A file system that cannot reserve does nothing."""

    def fdatasync(self, fd: int) -> None:
        """Make everything written through ``fd`` durable."""

    def close(self, fd: int) -> None:
        """Close a handle from :meth:`open_append`."""

    def truncate(self, path: str, length: int) -> None:
        """Cut file ``path`` to ``length`` bytes and fsync it."""

    def unlink(self, path: str) -> None:
        """Remove a file (durable only after :meth:`fsync_dir`)."""

    def rename(self, src: str, dst: str) -> None:
        """Rename a file (durable only after :meth:`fsync_dir`)."""

    def fsync_dir(self, path: str) -> None:
        """Make creations, renames and unlinks in directory ``path`` durable."""

    def remove_dir(self, path: str) -> None:
        """Remove the empty directory ``path`` (durable after :meth:`fsync_dir` of its parent)."""

    def lock(self, path: str, pid: int) -> int:
        """Take an exclusive lock on ``path`` and write ``pid`` into it; returns a token.

        Raises :class:`BlockingIOError` if someone else holds it."""

    def unlock(self, token: int) -> None:
        """Release a lock from :meth:`lock`."""


def write_file_atomic(fs: FileSystem, path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a power loss leaves the old content or the new,
    never an empty or partial file: write and fsync a temporary file, rename it over ``path``,
    fsync the directory."""
    temporary = f"{path}.tmp"
    fs.write_file(temporary, data)
    fs.rename(temporary, path)
    fs.fsync_dir(os.path.dirname(path) or ".")


_FALLOC_FL_KEEP_SIZE = 1


def _find_fallocate() -> Any:
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (AttributeError, OSError):
        return None  # not Linux: no reservation, an append may then meet ENOSPC
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate.restype = ctypes.c_int
    return fallocate


_fallocate = _find_fallocate()


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), f"file type {stat.S_IFMT(mode):o}")


class OsFileSystem:
    """The real file system, through ``os`` calls."""

    blocking = True

    def makedirs(self, path: str) -> None:
        missing = []
        probe = os.path.abspath(path)
        while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
            missing.append(probe)
            probe = os.path.dirname(probe)
        os.makedirs(path, exist_ok=True)
        # A new directory's name lives in its parent: without this fsync a power loss can
        # take the directory, and every synced segment in it, away.
        for created in reversed(missing):
            self.fsync_dir(os.path.dirname(created))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def read_file(self, path: str) -> bytes:
        # O_NONBLOCK: a FIFO put where a segment was must not hang the open (and a blocked
        # open(2) in a thread cannot be interrupted by Ctrl-C); fstat then refuses anything
        # but a regular file before a read could block or fail obscurely.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(
                    errno.EINVAL, f"not a regular file ({_file_kind(info.st_mode)})", path
                )
            # One read of the whole file: reading 1 MiB chunks and joining them copied every
            # byte twice (and faulted in twice the memory) when recovery reads a segment.
            chunks = [os.read(fd, info.st_size + 1)]
            while chunk := os.read(fd, 1 << 20):  # it grew since the fstat
                chunks.append(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes) -> None:
        # As read_file: a FIFO (or anything but a file) left at our path must neither hang
        # the open nor be written through; O_NOFOLLOW keeps a planted link from redirecting it.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.EISDIR, errno.ELOOP):
                raise
            kind = "a symbolic link" if exc.errno == errno.ELOOP else _file_kind(
                os.lstat(path).st_mode
            )
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", path) from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise OSError(errno.EINVAL, f"not a regular file ({_file_kind(mode)})", path)
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def open_append(self, path: str, *, create: bool = False) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        return os.open(path, flags, 0o644)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def reserve(self, fd: int, length: int) -> None:
        # fallocate(FALLOC_FL_KEEP_SIZE): blocks past the end, the size unchanged, so appends
        # (O_APPEND) land in them and a scan never sees preallocated zeros.
        if _fallocate is None or _fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, length) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # this file system cannot reserve: appends may meet ENOSPC instead
        raise OSError(code, os.strerror(code))

    def fdatasync(self, fd: int) -> None:
        sync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
        sync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def truncate(self, path: str, length: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_dir(self, path: str) -> None:
        os.rmdir(path)

    def lock(self, path: str, pid: int) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            # flock is per open file description: a second open in this process conflicts too.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{pid}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def unlock(self, token: int) -> None:
        os.close(token)  # closing the description releases the flock


class SimulatedCrash(Exception):
    """The simulated machine lost power at this operation (see ``crash_after_ops``)."""


@attrs.define
class _Inode:
    data: bytearray = attrs.Factory(bytearray)
    durable: bytes = b""
    reserved: int = 0  # bytes from the start with space allocated (see reserve)


class SimulatedFile(Protocol):
    """A file of a :class:`SimulatedFileSystem`, as :meth:`SimulatedFileSystem.files` shows
    it (read-only: :meth:`SimulatedFileSystem.set_content` changes it)."""

    @property
    def data(self) -> bytearray: ...  # the content now

    @property
    def durable(self) -> bytes: ...  # what a power loss keeps (at least)


def _oserror(code: int, path: str = "") -> OSError:
    return OSError(code, os.strerror(code), path or None)


class SimulatedFileSystem:
    """An in-memory file system that can lose power.

    * File contents: bytes become durable on ``fdatasync``/``truncate``/``write_file``.
    * Directory entries: creations, renames and unlinks become durable on ``fsync_dir``;
      a crash reverts the names of each directory to its last fsync (``model_dirents``).
    * Faults: ``fsync_error``/``write_error`` (an errno raised on every such call while set),
      ``space_left`` (bytes until ENOSPC; space a file reserved is taken from it at
      :meth:`reserve`, not again when written), ``crash_after_ops`` (the next mutating operation
      after that many raises :class:`SimulatedCrash` and every later one too, until
      :meth:`crash`), :meth:`flip_byte`.
    """

    blocking = False

    def __init__(self, seed: int = 0, *, model_dirents: bool = True) -> None:
        self._rng = random.Random(seed)
        self._model_dirents = model_dirents
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/"}
        self._fds: dict[int, _Inode] = {}
        self._next_fd = 3
        self._locks: dict[str, int] = {}
        self.fsync_error: int | None = None
        self.write_error: int | None = None
        self.space_left: int | None = None
        self.crash_after_ops: int | None = None
        self.ops = 0  # mutating operations so far
        self.fdatasyncs = 0
        self._frozen = False

    # -- fault control ------------------------------------------------------------------

    def _op(self, what: str) -> None:
        if self._frozen:
            raise SimulatedCrash(f"the machine is off ({what} after a crash)")
        if self.crash_after_ops is not None and self.ops >= self.crash_after_ops:
            self._frozen = True
            raise SimulatedCrash(f"power lost before operation {self.ops + 1} ({what})")
        self.ops += 1

    def crash(self, mode: CrashMode) -> None:
        """Lose power: each file keeps its durable bytes plus, depending on ``mode``, none
        (``drop_unsynced``), a random prefix (``tear_last_write``), or a random prefix then
        zeros up to the old length (``zero_fill_tail``) of what was not synced."""
        if mode not in CRASH_MODES:
            raise ValueError(f"crash mode must be one of {CRASH_MODES}, got {mode!r}")
        if self._model_dirents:
            self._names = dict(self._durable_names)
        seen: set[int] = set()
        for inode in list(self._names.values()) + list(self._durable_names.values()):
            if id(inode) in seen:
                continue
            seen.add(id(inode))
            durable, data = inode.durable, bytes(inode.data)
            if mode == "drop_unsynced" or len(data) <= len(durable) or not data.startswith(
                durable
            ):
                inode.data = bytearray(durable)
                continue
            extra = len(data) - len(durable)
            keep = self._rng.randint(0, extra)
            if mode == "tear_last_write":
                inode.data = bytearray(data[: len(durable) + keep])
            else:
                inode.data = bytearray(data[: len(durable) + keep] + b"\0" * (extra - keep))
        self._fds.clear()
        self._locks.clear()
        self._frozen = False
        self.crash_after_ops = None

    def flip_byte(self, path: str, offset: int, xor: int = 0xFF) -> None:
        """Corrupt one byte of ``path`` (durable and current content alike)."""
        inode = self._inode(path)
        inode.data[offset] ^= xor
        if offset < len(inode.durable):
            durable = bytearray(inode.durable)
            durable[offset] ^= xor
            inode.durable = bytes(durable)

    def unsynced_bytes(self, path: str) -> int:
        """How many bytes of ``path`` a crash could lose."""
        inode = self._inode(path)
        return len(inode.data) - len(inode.durable)

    # -- for a fault-injection harness: the power, and every file as a power loss sees it --

    @property
    def powered_off(self) -> bool:
        """Whether the power is cut: every mutating operation fails until :meth:`crash`."""
        return self._frozen

    def cut_power(self) -> None:
        """Cut the power now (at a step the harness chose): every mutating operation fails
        until :meth:`crash`."""
        self._frozen = True

    @property
    def model_dirents(self) -> bool:
        """Whether a directory entry is durable only once its directory is synced."""
        return self._model_dirents

    def normpath(self, path: str) -> str:
        """``path`` as the keys of :meth:`files` name it: absolute and normalised."""
        return self._norm(path)

    def files(self, *, durable_names: bool = False) -> Mapping[str, SimulatedFile]:
        """Every file by its path (:meth:`normpath`): under the names it has now, or with
        ``durable_names``, under those a power loss would leave. A read-only view."""
        return MappingProxyType(self._durable_names if durable_names else self._names)

    def set_content(self, path: str, data: bytes, durable: bytes) -> None:
        """Replace what ``path`` holds now and what a power loss keeps of it (a harness
        damaging or restoring a file): not an operation, so it neither counts nor crashes."""
        inode = self._inode(path)
        inode.data, inode.durable = bytearray(data), durable

    # -- FileSystem ---------------------------------------------------------------------

    def _norm(self, path: str) -> str:
        return posixpath.normpath(posixpath.join("/", path))

    def _inode(self, path: str) -> _Inode:
        try:
            return self._names[self._norm(path)]
        except KeyError:
            raise _oserror(errno.ENOENT, path) from None

    def makedirs(self, path: str) -> None:
        # Directories are durable on creation, as OsFileSystem.makedirs makes them.
        path = self._norm(path)
        while path not in self._dirs:
            self._dirs.add(path)
            path = posixpath.dirname(path)

    def listdir(self, path: str) -> list[str]:
        path = self._norm(path)
        if path not in self._dirs:
            raise _oserror(errno.ENOENT, path)
        names = [posixpath.basename(p) for p in self._names if posixpath.dirname(p) == path]
        names += [posixpath.basename(d) for d in self._dirs if d != path and
                  posixpath.dirname(d) == path]
        return sorted(names)

    def exists(self, path: str) -> bool:
        path = self._norm(path)
        return path in self._names or path in self._dirs

    def size(self, path: str) -> int:
        return len(self._inode(path).data)

    def read_file(self, path: str) -> bytes:
        return bytes(self._inode(path).data)

    def _create(self, path: str) -> _Inode:
        path = self._norm(path)
        if posixpath.dirname(path) not in self._dirs:
            raise _oserror(errno.ENOENT, path)
        inode = _Inode()
        self._names[path] = inode
        return inode

    def write_file(self, path: str, data: bytes) -> None:
        self._op(f"write_file {path}")
        inode = self._names.get(self._norm(path)) or self._create(path)
        inode.data = bytearray(data)
        inode.durable = bytes(data)

    def open_append(self, path: str, *, create: bool = False) -> int:
        if create:
            self._op(f"create {path}")
            if self._norm(path) in self._names:
                raise _oserror(errno.EEXIST, path)
            inode = self._create(path)
        else:
            inode = self._inode(path)
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = inode
        return fd

    def _fd(self, fd: int) -> _Inode:
        try:
            return self._fds[fd]
        except KeyError:
            raise _oserror(errno.EBADF) from None

    def write(self, fd: int, data: bytes) -> int:
        self._op("write")
        inode = self._fd(fd)
        if self.write_error is not None:
            raise _oserror(self.write_error)
        count = len(data)
        if self.space_left is not None:
            covered = max(0, inode.reserved - len(inode.data))  # reserved, not yet written
            count = min(count, covered + self.space_left)
            if count == 0 and data:
                raise _oserror(errno.ENOSPC)
            self.space_left -= max(0, count - covered)
        inode.data += data[:count]
        return count

    def reserve(self, fd: int, length: int) -> None:
        self._op("reserve")
        inode = self._fd(fd)
        extra = max(0, length - max(len(inode.data), inode.reserved))
        if self.space_left is not None:
            if extra > self.space_left:
                raise _oserror(errno.ENOSPC)
            self.space_left -= extra
        inode.reserved = max(inode.reserved, length)

    def fdatasync(self, fd: int) -> None:
        self._op("fdatasync")
        inode = self._fd(fd)
        if self.fsync_error is not None:
            raise _oserror(self.fsync_error)
        self.fdatasyncs += 1
        inode.durable = bytes(inode.data)

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)

    def truncate(self, path: str, length: int) -> None:
        self._op(f"truncate {path}")
        inode = self._inode(path)
        del inode.data[length:]
        inode.durable = bytes(inode.data)
        inode.reserved = min(inode.reserved, length)  # ftruncate frees blocks past the end

    def unlink(self, path: str) -> None:
        self._op(f"unlink {path}")
        self._inode(path)
        del self._names[self._norm(path)]

    def rename(self, src: str, dst: str) -> None:
        self._op(f"rename {src}")
        inode = self._inode(src)
        del self._names[self._norm(src)]
        self._names[self._norm(dst)] = inode

    def fsync_dir(self, path: str) -> None:
        self._op(f"fsync_dir {path}")
        if self.fsync_error is not None:
            raise _oserror(self.fsync_error)
        path = self._norm(path)
        for name in [n for n in self._durable_names if posixpath.dirname(n) == path]:
            del self._durable_names[name]
        for name, inode in self._names.items():
            if posixpath.dirname(name) == path:
                self._durable_names[name] = inode

    def remove_dir(self, path: str) -> None:
        self._op(f"remove_dir {path}")
        path = self._norm(path)
        if path not in self._dirs:
            raise _oserror(errno.ENOENT, path)
        if self.listdir(path):
            raise _oserror(errno.ENOTEMPTY, path)
        self._dirs.discard(path)

    def lock(self, path: str, pid: int) -> int:
        path = self._norm(path)
        if path in self._locks:
            raise BlockingIOError(errno.EWOULDBLOCK, "lock held", path)
        inode = self._names.get(path) or self._create(path)
        inode.data = bytearray(f"{pid}\n".encode())
        token = self._next_fd
        self._next_fd += 1
        self._locks[path] = token
        return token

    def unlock(self, token: int) -> None:
        for path, held in list(self._locks.items()):
            if held == token:
                del self._locks[path]
