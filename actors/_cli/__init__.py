"""writebehind: a write-behind cache for trio that proves its durability contract."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from .._core._errors import leaves

#: The entry-point group through which installed packages add ``writebehind`` subcommands:
#: each entry is a ``register(subparsers)`` function.
COMMANDS_GROUP = "writebehind.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="writebehind", description=__doc__)
    parser.add_argument("--version", action="version", version=f"writebehind {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    from . import _cluster as _cluster_tool
    from . import _inspect as _inspect_tool
    from . import _journal as _tool
    from . import _quarantine as _quarantine_tool
    from . import _recover as _recover_tool

    _tool.register(sub)
    _recover_tool.register(sub)
    _quarantine_tool.register(sub)
    _inspect_tool.register(sub)
    _cluster_tool.register(sub)
    from .._bench import register as register_bench  # light: measuring modules load on use

    register_bench(sub)
    # Commands of the packages built on this one (``chaos``) come through their entry points:
    # the command line sits below them and never imports them by name.
    for command in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        command.load()(sub)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("writebehind")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with sigterm_as_sigint() as received:
        try:
            result: int = args.func(args)
        except BaseException as exc:
            if not is_interrupt(exc):
                raise
            # One line, not the exception-group traceback trio's nurseries wrap Ctrl-C in.
            signum = received[-1] if received else signal.SIGINT
            print(f"writebehind: stopped by {signal.Signals(signum).name}", file=sys.stderr)
            return 128 + signum
    if result == 128 + signal.SIGINT and received:
        return 128 + received[-1]  # a command that handled the interrupt itself (chaos run)
    return result


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[list[int]]:
    """Within the block, SIGTERM (systemd, Docker, Kubernetes) does what Ctrl-C does: under
    trio, a KeyboardInterrupt in the main task, so ``open_cache`` drains on the way out.
    Yields the list of stop signals received. Only the main thread can set handlers: from
    another thread this does nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        # Whatever handles SIGINT right now (trio's, while trio.run runs) handles this too.
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt, alone or in a group with only cancellations."""
    import trio

    found = leaves(exc, skip=trio.Cancelled)
    return bool(found) and all(isinstance(leaf, KeyboardInterrupt) for leaf in found)


if __name__ == "__main__":
    sys.exit(main())
