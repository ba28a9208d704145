"""The pipe protocol between a store actor and its store worker process, pure (no I/O).

Each message is one *frame*: a header of the protocol version (one byte) and the payload's
length (four bytes, big-endian), then the payload, a pickle of plain tuples. The two ends are
the same installed writebehind started by the same interpreter, so pickle is safe here: no
other process writes to the pipe.

- The client opens with ``(HELLO, version, factory)``; the worker makes its stores from
  ``factory`` (which must pickle) and answers ``(OK, version)``.
- Then requests ``(method, args)``, answered in order: ``(OK, result)`` or
  ``(ERROR, module, qualname, message, traceback)``. ``write_batch``'s records travel as
  ``(key, value, version)`` tuples (a pickled attrs instance costs several times more) and
  reach the store as :class:`Row` values.

An error crosses as its type's name and its message, and is rebuilt on the client as the
same type when that type is one the stores raise (writebehind's errors, the built-in ones,
``sqlite3``'s); any other becomes a ``RuntimeError`` naming it, so nothing unknown is
unpickled. A broken frame (unknown version, a length over :data:`MAX_FRAME`) raises
:class:`WireError`: the pipe is then out of step and must be dropped.
"""

from __future__ import annotations

import builtins
import pickle
import sqlite3
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from .._core import _errors
from .._core._messages import Fence

PROTOCOL_VERSION = 1
HELLO = "hello"
OK = "ok"
ERROR = "error"
#: A frame's payload is at most this long (a batch is a few MiB at most).
MAX_FRAME = 1 << 30
#: The methods a client may call on the worker's store.
METHODS = frozenset({"connect", "write_batch", "write_batch_fenced", "close", "take_epoch",
                     "read", "read_all"})

_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size
#: Modules whose exception types are rebuilt as themselves on the client (writebehind's
#: errors name the public package as theirs).
_ERROR_MODULES = frozenset({"builtins", "sqlite3", "writebehind", _errors.__name__})


#: Requests that carry records (and, fenced, the batch's Fence as a tuple).
_WRITES = frozenset({"write_batch", "write_batch_fenced"})
#: Errors rebuilt with keyword arguments besides the message: their names.
_DETAILS: dict[str, tuple[str, ...]] = {"StoreFenced": ("partition", "epoch", "current")}


class Row(NamedTuple):
    """A record as the worker hands it to its store: read like a :class:`StoreRecord`
    (``key``, ``value``, ``version``, ``deleted``) at half the cost of making one."""

    key: str
    value: bytes | None
    version: int

    @property
    def deleted(self) -> bool:
        return self.value is None


class WireError(ValueError):
    """A frame this end cannot read: the pipe is out of step and must be dropped."""


def frame(message: object) -> bytes:
    """``message`` as one frame."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > MAX_FRAME:
        raise WireError(f"a store message of {len(payload)} bytes is over {MAX_FRAME}")
    return _HEADER.pack(PROTOCOL_VERSION, len(payload)) + payload


def payload_length(header: bytes) -> int:
    """The payload length a frame's header announces (checking its version)."""
    version, length = _HEADER.unpack(header)
    assert isinstance(length, int)
    if version != PROTOCOL_VERSION:
        raise WireError(
            f"store worker frame has protocol version {version}, this end speaks "
            f"{PROTOCOL_VERSION} (two writebehind installs on one pipe?)"
        )
    if length > MAX_FRAME:
        raise WireError(f"store worker frame announces {length} bytes, over {MAX_FRAME}")
    return length


def load(payload: bytes) -> Any:
    """A payload's message; :class:`WireError` if it does not unpickle."""
    try:
        return pickle.loads(payload)
    except Exception as exc:
        raise WireError(f"a store worker frame does not unpickle: {exc!r}") from exc


class FrameBuffer:
    """Bytes as they arrive, cut into payloads: a partly arrived frame stays buffered."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._need: int | None = None  # the current frame's payload length, once known

    def feed(self, data: bytes | bytearray) -> None:
        self._data += data

    def next_payload(self) -> bytes | None:
        """The next complete payload, or None until more bytes arrive."""
        if self._need is None:
            if len(self._data) < HEADER_SIZE:
                return None
            self._need = payload_length(bytes(self._data[:HEADER_SIZE]))
            del self._data[:HEADER_SIZE]
        if len(self._data) < self._need:
            return None
        payload = bytes(self._data[:self._need])
        del self._data[:self._need]
        self._need = None
        return payload

    @property
    def pending(self) -> int:
        """Bytes held that are not a complete frame yet."""
        return len(self._data) + (HEADER_SIZE if self._need is not None else 0)


# -- requests ---------------------------------------------------------------------------------

def hello(factory: object) -> bytes:
    return frame((HELLO, PROTOCOL_VERSION, factory))


def request(method: str, *args: Any) -> bytes:
    """A call of ``method`` on the worker's store (``write_batch`` takes records)."""
    if method not in METHODS:
        raise ValueError(f"the store worker has no method {method!r}: one of {sorted(METHODS)}")
    if method in _WRITES:
        records, *fence = args
        rows = tuple((r.key, r.value, r.version) for r in records)
        return frame((method, (rows, *((f.partition, f.epoch) for f in fence))))
    return frame((method, args))


def parse_request(message: Any) -> tuple[str, tuple[Any, ...]]:
    """(method, args) of a request payload, records rebuilt; :class:`WireError` if it is
    none."""
    try:
        method, args = message
    except (TypeError, ValueError):
        raise WireError(f"not a store worker request: {message!r:.200}") from None
    if method not in METHODS or not isinstance(args, tuple):
        raise WireError(f"not a store worker request: {message!r:.200}")
    if method in _WRITES:
        rows, *fence = args
        return method, (tuple(map(Row._make, rows)), *(Fence(*f) for f in fence))
    return method, args


def parse_hello(message: Any) -> object:
    """The factory of a hello, or :class:`WireError`."""
    if not (isinstance(message, tuple) and len(message) == 3 and message[0] == HELLO):
        raise WireError(f"the store worker expected a hello, got {message!r:.200}")
    if message[1] != PROTOCOL_VERSION:
        raise WireError(
            f"the store worker speaks protocol {PROTOCOL_VERSION}, the client {message[1]!r}"
        )
    return message[2]


# -- replies ----------------------------------------------------------------------------------

def ok(result: object) -> bytes:
    return frame((OK, result))


def error(exc: BaseException, traceback: str = "") -> bytes:
    cls = type(exc)
    # The details an error's constructor needs besides its message (a fenced batch's).
    details = {name: getattr(exc, name) for name in _DETAILS.get(cls.__qualname__, ())}
    return frame((ERROR, cls.__module__, cls.__qualname__, str(exc), traceback, details))


Resolver = Callable[[str, str], "type[BaseException] | None"]


def known_error(module: str, qualname: str) -> type[BaseException] | None:
    """The exception type ``module.qualname`` if it is one the stores raise, else None."""
    if module not in _ERROR_MODULES or "." in qualname:
        return None
    source: Any = {"builtins": builtins, "sqlite3": sqlite3}.get(module, _errors)
    found = getattr(source, qualname, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def parse_reply(message: Any, resolve: Resolver = known_error) -> tuple[bool, Any]:
    """``(True, result)`` for an answer, ``(False, error)`` for an error the worker raised
    (rebuilt: see :func:`rebuild_error`); :class:`WireError` if it is neither."""
    if isinstance(message, tuple) and len(message) == 2 and message[0] == OK:
        return True, message[1]
    if not (isinstance(message, tuple) and len(message) == 6 and message[0] == ERROR
            and isinstance(message[5], dict)):
        raise WireError(f"not a store worker reply: {message!r:.200}")
    _, module, qualname, text, traceback, details = message
    return False, rebuild_error(module, qualname, text, traceback, resolve, details)


def rebuild_error(module: str, qualname: str, message: str, traceback: str,
                  resolve: Resolver = known_error,
                  details: dict[str, Any] | None = None) -> BaseException:
    """The client's copy of an error the worker raised: the same type and message (and
    ``details``, the keyword arguments it was sent with) when the type is known, else a
    ``RuntimeError`` naming it."""
    cls = resolve(module, qualname)
    exc: BaseException | None = None
    if cls is not None:
        try:
            exc = cls(message, **(details or {}))
        except TypeError:  # keyword-only details (LeaseHeld's holder): not rebuilt
            exc = None
    if exc is None:
        exc = RuntimeError(f"store worker raised {module}.{qualname}: {message}")
    if traceback:
        exc.add_note("in the store worker process:\n" + traceback.rstrip())
    return exc

