"""A store in its own worker process: the event loop only ships bytes (``_stores/_wire.py``).

A store actor whose factory says ``worker = "process"`` (SQLite's ``?worker=process``) drives
its store through a :class:`StoreProcess`: the store's per-row work and its GIL live in
another process, out of the event loop's way. Each worker process has two tasks in the store
actor's nursery: one writes queued request frames to its stdin, one reads answers from its
stdout and hands each to the oldest waiting call (the worker answers in order). A worker that
dies or a pipe that breaks fails every waiting call, and every later one, with
:class:`StoreUnavailable`: the store actor then reconnects, which starts a new worker.
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import outcome
import trio

from .._core._errors import StoreUnavailable
from .._core._messages import Fence, StoreRecord
from .._stores import _wire
from .._stores._protocol import StoreFactory, WriteOutcome

log = logging.getLogger("writebehind")

#: Seconds a closing worker gets to close its store and exit before it is killed.
CLOSE_GRACE = 2.0
#: Requests waiting for the pipe at most (a store actor has one or two in flight).
_QUEUED = 8
_READ_SIZE = 1 << 16
_PIPE_BYTES = 1 << 20


def runs_in_process(factory: StoreFactory) -> bool:
    """Does ``factory`` ask for its stores to run in a worker process?"""
    return getattr(factory, "worker", None) == "process"


#: The worker's entry: ``writebehind`` as a bare package of the parent's source folder, so
#: the worker imports its store modules alone (0.1 s of CPU) rather than the package's
#: ``__init__`` with the runtime, trio and the inspector (0.3 s) on every start.
_BOOT = (
    "import sys, types\n"
    "package = types.ModuleType('writebehind')\n"
    "package.__path__ = [sys.argv[1]]\n"
    "sys.modules['writebehind'] = package\n"
    "from writebehind._stores._worker import main\n"
    "sys.exit(main(sys.argv))\n"
)


def worker_command() -> list[str]:
    """``python -c BOOT PACKAGE_DIR PARENT_PID``."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(_wire.__file__)))
    return [sys.executable, "-c", _BOOT, package, str(os.getpid())]


def _widen(pipe: object) -> None:
    """Let a whole batch's frame fit in the pipe (Linux: 1 MiB rather than 64 KiB), so it
    goes in one write rather than a write per 64 KiB the worker drains."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    fileno = getattr(pipe, "fileno", None)
    if set_size is None or fileno is None:
        return
    try:
        fcntl.fcntl(fileno(), set_size, _PIPE_BYTES)
    except OSError:
        pass  # over the system's pipe-max-size: the default pipe works, a little slower


class Call:
    """One request's answer, once the worker gives it."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._outcome: outcome.Outcome[Any] | None = None

    def deliver(self, result: outcome.Outcome[Any]) -> None:
        if self._outcome is None:
            self._outcome = result
            self._done.set()

    async def result(self) -> Any:
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome.unwrap()

    async def settle(self) -> None:
        """Nothing to wait for: the worker process, not this one, holds the connection, and
        closing the worker kills it if it must."""


class _Worker:
    """One worker process and its two pipe tasks."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.broken: StoreUnavailable | None = None
        self._waiting: collections.deque[Call] = collections.deque()
        # Bytes the pipe did not take at once, in order, for the writer task to send.
        self._backlog: collections.deque[bytes] = collections.deque()
        self._sending = False  # the writer task is in a send: new bytes must queue behind
        self._more = trio.Event()
        self._scope = trio.CancelScope()

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._pipe_tasks)

    async def _pipe_tasks(self) -> None:
        with self._scope:  # cancelled by aclose
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_requests)
                nursery.start_soon(self._read_answers)

    def submit(self, frame: bytes) -> Call:
        call = Call()
        if self.broken is not None:
            call.deliver(outcome.Error(StoreUnavailable(str(self.broken))))
            return call
        if len(self._backlog) >= _QUEUED:
            raise RuntimeError(
                f"{self.name}: more than {_QUEUED} store requests queued; a store actor "
                "has at most two in flight"
            )
        self._waiting.append(call)
        if not self._backlog and not self._sending:
            frame = self._write_now(frame)
        if frame:
            self._backlog.append(frame)
            self._more.set()
        return call

    def _write_now(self, frame: bytes) -> bytes:
        """Write what the pipe takes at once; the rest. The request reaches the worker
        before this task yields, as a worker thread starts at once: otherwise whatever the
        caller wakes next (a shard taking its next batch) would run first, the store idle."""
        stdin = self.process.stdin
        assert isinstance(stdin, trio.lowlevel.FdStream)  # a pipe: non-blocking
        try:
            written = os.write(stdin.fileno(), frame)
        except (BlockingIOError, InterruptedError):
            return frame
        except OSError:
            return frame  # the writer task meets the same error and reports it
        return frame[written:]

    def _fail(self, reason: str, *, quiet: bool = False) -> None:
        if self.broken is None:
            self.broken = StoreUnavailable(reason)
            if not quiet:
                log.warning("%s: %s", self.name, reason)
        while self._waiting:
            self._waiting.popleft().deliver(outcome.Error(StoreUnavailable(reason)))

    async def _write_requests(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while True:
                await self._more.wait()
                self._more = trio.Event()
                while self._backlog:
                    self._sending = True
                    await stdin.send_all(self._backlog[0])
                    self._backlog.popleft()
                    self._sending = False
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            await self._lost(f"its pipe broke: {exc!r}")

    async def _lost(self, why: str) -> None:
        """The worker is gone or cut off: fail every call, saying how it exited if it did."""
        with trio.move_on_after(CLOSE_GRACE):
            await self.process.wait()
        code = self.process.returncode
        self._fail(
            f"the store worker process (pid {self.process.pid}) "
            + (f"exited with code {code}" if code is not None else f"stopped: {why}")
        )

    async def _read_answers(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        frames = _wire.FrameBuffer()
        try:
            while True:
                data = await stdout.receive_some(_READ_SIZE)
                if not data:
                    break
                frames.feed(data)
                while (payload := frames.next_payload()) is not None:
                    if not self._waiting:
                        raise _wire.WireError("the store worker answered an unasked call")
                    ok, value = _wire.parse_reply(_wire.load(payload))
                    answer = outcome.Value(value) if ok else outcome.Error(value)
                    self._waiting.popleft().deliver(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            await self._lost(f"its pipe broke: {exc!r}")
            return
        except _wire.WireError as exc:
            self._fail(f"the store worker process's answer is unreadable: {exc}")
            self.process.kill()
            return
        await self._lost("it closed its end of the pipe")

    async def aclose(self) -> None:
        """Close the pipe (the worker closes its store and exits), kill it if it has not
        within :data:`CLOSE_GRACE`, and wait for it: never a zombie. Shielded."""
        with trio.CancelScope(shield=True):
            self._fail("the store worker process was closed", quiet=True)
            self._scope.cancel()
            stdin = self.process.stdin
            if stdin is not None:
                try:
                    await stdin.aclose()
                except (trio.BrokenResourceError, OSError):
                    pass
            with trio.move_on_after(CLOSE_GRACE):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            if self.process.stdout is not None:
                await self.process.stdout.aclose()


class StoreProcess:
    """The store of ``factory``, run by a worker process the store actor's ``nursery`` owns.

    The calls a store actor makes: :meth:`connect`, :meth:`start_write`, :meth:`close` (the
    store connection; the worker stays) and :meth:`aclose` (the worker too). A worker that is
    gone is replaced on the next :meth:`connect`.
    """

    def __init__(self, factory: StoreFactory, nursery: trio.Nursery, *, name: str) -> None:
        self._factory = factory
        self._nursery = nursery
        self._name = name
        self._worker: _Worker | None = None

    @property
    def pid(self) -> int | None:
        """The live worker process's id (None between workers)."""
        return None if self._worker is None else self._worker.process.pid

    async def _spawn(self) -> _Worker:
        try:
            process = await trio.lowlevel.open_process(
                worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as exc:
            raise StoreUnavailable(f"cannot start a store worker process: {exc}") from exc
        _widen(process.stdin)
        worker = _Worker(process, f"{self._name} (worker pid {process.pid})")
        worker.start(self._nursery)
        try:
            await worker.submit(_wire.hello(self._factory)).result()
        except BaseException:
            await worker.aclose()
            raise
        return worker

    async def _call(self, method: str, *args: Any) -> Any:
        if self._worker is None or self._worker.broken is not None:
            if self._worker is not None:
                await self._worker.aclose()
                self._worker = None
            self._worker = await self._spawn()
        return await self._worker.submit(_wire.request(method, *args)).result()

    async def connect(self) -> None:
        """Open the store in the worker (starting a worker first if there is none)."""
        await self._call("connect")

    def start_write(self, records: Sequence[StoreRecord], fence: Fence | None = None) -> Call:
        """Send ``write_batch(records)`` (``write_batch_fenced`` with a ``fence``) now; the
        answer comes with ``result()``."""
        if self._worker is None:
            call = Call()
            call.deliver(outcome.Error(StoreUnavailable(f"{self._name} is not connected")))
            return call
        if fence is not None:
            return self._worker.submit(_wire.request("write_batch_fenced", records, fence))
        return self._worker.submit(_wire.request("write_batch", records))

    async def write_batch(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        answer: WriteOutcome = await self.start_write(records).result()
        return answer

    async def close(self) -> None:
        """Close the store connection; the worker stays for the next :meth:`connect` (one
        that broke is stopped)."""
        worker = self._worker
        if worker is None:
            return
        if worker.broken is None:
            try:
                await worker.submit(_wire.request("close")).result()
                return
            except StoreUnavailable:
                pass
        self._worker = None
        await worker.aclose()

    async def aclose(self) -> None:
        """Stop the worker (it closes the store first): shielded, never leaves a zombie."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.aclose()
