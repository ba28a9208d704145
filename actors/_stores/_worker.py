"""The store worker process: runs one store's blocking calls for a store actor, over a pipe.

Started by ``_runtime/_store_process.py`` as ``python -c BOOT PACKAGE_DIR PARENT_PID`` (or
``python -m writebehind._stores._worker PACKAGE_DIR PARENT_PID``: the same ``sys.argv``) with
its stdin and stdout piped to the store actor (the frames of :mod:`._wire`); stderr is the
parent's. It serves requests one at a time, in order, and exits when its stdin closes (the
store closed first).
On Linux it dies with its parent (``PR_SET_PDEATHSIG``): a cache killed outright must not
leave a worker committing behind it. It ignores SIGINT: a Ctrl-C reaches the whole process
group, and the cache, not the worker, decides when the store closes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any

from .._core._errors import StoreUnavailable
from . import _wire

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # then stdin's end is what stops the worker
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None  # the client closed the pipe
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise _wire.WireError(f"the store pipe closed inside a frame ({len(data)}/{size})")
        data += more
    return data


def read_message(stream: IO[bytes]) -> Any:
    """The next message from ``stream``, or None at its end."""
    header = _read_exactly(stream, _wire.HEADER_SIZE)
    if header is None:
        return None
    length = _wire.payload_length(header)
    payload = _read_exactly(stream, length) if length else b""
    if payload is None:
        raise _wire.WireError("the store pipe closed between a frame's header and payload")
    return _wire.load(payload)


def serve(reader: IO[bytes], writer: IO[bytes]) -> None:
    """Answer requests from ``reader`` on ``writer`` until ``reader`` ends."""
    first = read_message(reader)
    if first is None:
        return
    factory: Callable[[], Any] = _wire.parse_hello(first)  # type: ignore[assignment]
    writer.write(_wire.ok(_wire.PROTOCOL_VERSION))
    writer.flush()
    store: Any = None
    try:
        while True:
            message = read_message(reader)
            if message is None:
                return
            method, args = _wire.parse_request(message)
            try:
                if method == "connect":  # a fresh store each time, as a threaded actor's
                    if store is not None:
                        store.close()
                    store = factory()
                    result = store.connect()
                elif store is None:
                    if method != "close":
                        raise StoreUnavailable("the store worker's store is not connected")
                    result = None
                else:
                    result = getattr(store, method)(*args)
                reply = _wire.ok(result)
            except Exception as exc:  # it crosses the pipe to the actor
                reply = _wire.error(exc, traceback.format_exc())
            writer.write(reply)
            writer.flush()
    finally:
        if store is not None:
            store.close()


def main(argv: list[str]) -> int:
    """``argv``: ``[program, package_dir, parent_pid]`` (the parent's pid is optional)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) > 2:
        _die_with_parent(int(argv[2]))
    # The pipe is the protocol's alone: a stray print goes to stderr.
    pipe, sys.stdout = sys.stdout.buffer, sys.stderr
    try:
        serve(sys.stdin.buffer, pipe)
    except BrokenPipeError:
        return 1  # the client went away mid-answer
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
