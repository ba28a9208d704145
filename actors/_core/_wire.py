"""The routing wire format, pure: a call on a partition hosted by another member, and its answer.

A caller that does not host a key's partition sends a :class:`Request` on the partition's
subject (``wbrpc.<cluster>.<partition>``); the member hosting it answers with a
:class:`Reply` through its own shard, under the same contract as a local call. Both are
binary and versioned; anything else (another version, a truncated or padded message, a
field out of range) is refused with :class:`WireError` and never half-read.

    request = magic "WBQ" | version u8 | op u8 | partition u32
              | count u32 | count × (key: bytes) | values: u8 present? count × (value: opt bytes)
              | version i64 | seq u64 | expires f64 | call: bytes
    reply   = magic "WBA" | version u8 | status u8
              | count u32 | count × receipt | count' u32 | count' × (value: opt bytes)
              | error: str | message: str
    receipt = u8 0 | version i64 | seq u64      (acknowledged)
            | u8 1 | message: str               (refused for good by the store)
    bytes   = length u32 | data;  opt bytes = length u32 (0xFFFFFFFF: None) | data
    str     = bytes holding UTF-8

Integers are big-endian. A key is a ``str`` (UTF-8 on the wire). ``expires`` is the
caller's wall-clock time after which it no longer waits for the answer (0: none): the owner
drops a request found past it (plus the clock-drift margin), one that sat in a paused
owner's buffer, say, rather than apply it late. ``call`` names a write (empty for a read):
the caller sends the same name again when it asks again, and a member that already applied
that call answers with the first answer instead of applying it twice.

Version 2 added ``call``; members of one cluster must run the same version (a request of
another is refused as a :class:`WireError`, and its caller hears of it).
"""

from __future__ import annotations

import enum
import math
import struct
from typing import Any

import attrs

from ._errors import (
    CacheClosed,
    ConfigError,
    JournalFailed,
    JournalFull,
    Overloaded,
    ShardCrashed,
    StoreRejected,
    StoreUnavailable,
    TooManyRestarts,
    Unstorable,
    WritebehindError,
)

VERSION = 2
REQUEST_MAGIC = b"WBQ"
REPLY_MAGIC = b"WBA"
_NONE = 0xFFFFFFFF
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_HEAD = struct.Struct(">3sBBI")  # magic, version, op, partition
_REPLY_HEAD = struct.Struct(">3sBB")  # magic, version, status


class WireError(WritebehindError):
    """A routing message that is not one this version can read (truncated, garbage, from
    another version)."""


class RemoteError(WritebehindError):
    """The owner of a partition failed a routed call with an error this side does not know
    (a bug there, or a newer version): its type and message are in the text."""


class Op(enum.IntEnum):
    WRITE = 1  # one key: a put, or a delete when its value is None
    WRITE_MANY = 2
    GET = 3
    GET_MANY = 4
    FLUSH = 5
    WAIT_PERSISTED = 6


class ReplyStatus(enum.IntEnum):
    OK = 0
    NOT_SERVING = 1  # this member does not (or no longer) host the partition: ask again
    ERROR = 2


#: The errors a routed call carries back as themselves (by name); any other arrives as a
#: :class:`RemoteError`. Each is raised on the caller exactly as a local call raises it.
KNOWN_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (ValueError, TypeError, Unstorable, ConfigError, Overloaded, JournalFull,
                JournalFailed, ShardCrashed, CacheClosed, StoreUnavailable, StoreRejected,
                TooManyRestarts, WireError)
}


@attrs.frozen
class Request:
    """A call on one partition: ``keys`` (and ``values`` for writes, None meaning a
    delete), or the receipt fields for WAIT_PERSISTED."""

    op: Op
    partition: int
    keys: tuple[str, ...] = ()
    values: tuple[bytes | None, ...] = ()
    version: int = 0
    seq: int = 0
    expires: float = 0.0
    call: bytes = b""  # a write's name, the same on every attempt (see the module docstring)

    def encode(self) -> bytes:
        if self.values and len(self.values) != len(self.keys):
            raise ValueError(f"{len(self.keys)} keys and {len(self.values)} values")
        parts = [_HEAD.pack(REQUEST_MAGIC, VERSION, self.op, self.partition),
                 _U32.pack(len(self.keys))]
        parts.extend(_bytes(key.encode("utf-8")) for key in self.keys)
        parts.append(_U8.pack(1 if self.values else 0))
        parts.extend(_opt_bytes(value) for value in self.values)
        parts.append(_I64.pack(self.version))
        parts.append(_U64.pack(self.seq))
        parts.append(_F64.pack(self.expires))
        parts.append(_bytes(self.call))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Request:
        reader = _Reader(data, "request")
        magic, version, op, partition = reader.unpack(_HEAD)
        if magic != REQUEST_MAGIC:
            raise WireError(f"not a writebehind routing request (starts {magic!r})")
        _check_version(version, "request")
        try:
            kind = Op(op)
        except ValueError:
            raise WireError(f"routing request: unknown op {op}") from None
        count = reader.u32()
        keys = tuple(reader.text() for _ in range(count))
        values: tuple[bytes | None, ...] = ()
        if reader.u8():
            values = tuple(reader.opt_bytes() for _ in range(count))
        (version_field,) = reader.unpack(_I64)
        (seq,) = reader.unpack(_U64)
        (expires,) = reader.unpack(_F64)
        if not math.isfinite(expires):
            raise WireError(f"routing request: expires is {expires}")
        call = reader.opt_bytes()
        if call is None:
            raise WireError("routing request: its call name is marked absent")
        reader.end()
        return cls(kind, partition, keys, values, version_field, seq, expires, call)


@attrs.frozen
class Reply:
    """The answer to a :class:`Request`. ``receipts``: per written key, ``(version, seq)``
    or the message of the store's refusal for good; ``values``: per key read. An ERROR
    names the error type (``error``) and carries its ``message``; NOT_SERVING its reason."""

    status: ReplyStatus
    receipts: tuple[tuple[int, int] | str, ...] = ()
    values: tuple[bytes | None, ...] = ()
    error: str = ""
    message: str = ""

    @classmethod
    def not_serving(cls, reason: str) -> Reply:
        return cls(ReplyStatus.NOT_SERVING, message=reason)

    @classmethod
    def failed(cls, exc: BaseException) -> Reply:
        return cls(ReplyStatus.ERROR, error=type(exc).__name__, message=str(exc))

    def exception(self) -> Exception:
        """The error an ERROR reply stands for, as the caller raises it."""
        cls = KNOWN_ERRORS.get(self.error)
        if cls is None:
            return RemoteError(f"the partition's owner failed the call: {self.error}: "
                               f"{self.message}")
        return cls(self.message)

    def encode(self) -> bytes:
        parts = [_REPLY_HEAD.pack(REPLY_MAGIC, VERSION, self.status),
                 _U32.pack(len(self.receipts))]
        for receipt in self.receipts:
            if isinstance(receipt, str):
                parts.append(_U8.pack(1))
                parts.append(_bytes(receipt.encode("utf-8")))
            else:
                parts.append(_U8.pack(0))
                parts.append(_I64.pack(receipt[0]))
                parts.append(_U64.pack(receipt[1]))
        parts.append(_U32.pack(len(self.values)))
        parts.extend(_opt_bytes(value) for value in self.values)
        parts.append(_bytes(self.error.encode("utf-8")))
        parts.append(_bytes(self.message.encode("utf-8")))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        reader = _Reader(data, "reply")
        magic, version, status = reader.unpack(_REPLY_HEAD)
        if magic != REPLY_MAGIC:
            raise WireError(f"not a writebehind routing reply (starts {magic!r})")
        _check_version(version, "reply")
        try:
            kind = ReplyStatus(status)
        except ValueError:
            raise WireError(f"routing reply: unknown status {status}") from None
        receipts: list[tuple[int, int] | str] = []
        for _ in range(reader.u32()):
            tag = reader.u8()
            if tag == 0:
                (version_field,) = reader.unpack(_I64)
                (seq,) = reader.unpack(_U64)
                receipts.append((version_field, seq))
            elif tag == 1:
                receipts.append(reader.text())
            else:
                raise WireError(f"routing reply: unknown receipt tag {tag}")
        values = tuple(reader.opt_bytes() for _ in range(reader.u32()))
        error, message = reader.text(), reader.text()
        reader.end()
        return cls(kind, tuple(receipts), values, error, message)


def _bytes(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _opt_bytes(data: bytes | None) -> bytes:
    return _U32.pack(_NONE) if data is None else _bytes(data)


def _check_version(version: int, what: str) -> None:
    if version != VERSION:
        raise WireError(f"routing {what} of version {version}; this writebehind reads version "
                        f"{VERSION} (run one version across the cluster)")


class _Reader:
    """Reads fields off a message, refusing to read past its end."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._at = 0
        self._what = what

    def _take(self, size: int) -> memoryview:
        end = self._at + size
        if end > len(self._data):
            raise WireError(f"routing {self._what} truncated: {len(self._data)} bytes, a field "
                            f"needs {end}")
        chunk = self._data[self._at:end]
        self._at = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self._take(fmt.size))

    def u8(self) -> int:
        return int(_U8.unpack(self._take(1))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def opt_bytes(self) -> bytes | None:
        size = self.u32()
        return None if size == _NONE else bytes(self._take(size))

    def text(self) -> str:
        size = self.u32()
        if size == _NONE:
            raise WireError(f"routing {self._what}: a text field is marked absent")
        try:
            return str(self._take(size), "utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"routing {self._what}: a text field is not UTF-8 ({exc})") from None

    def end(self) -> None:
        if self._at != len(self._data):
            raise WireError(f"routing {self._what}: {len(self._data) - self._at} bytes after "
                            "its end")
