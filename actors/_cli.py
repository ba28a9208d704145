"""writebehind: a write-behind cache for trio that proves its durability contract."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="writebehind", description=__doc__)
    parser.add_argument("--version", action="version", version=f"writebehind {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    from . import _inspect_tool, _recover_tool
    from ._journal import _tool

    _tool.register(sub)
    _recover_tool.register(sub)
    _inspect_tool.register(sub)
    from ._bench import register as register_bench  # light: measuring modules load on use

    register_bench(sub)
    from writebehind.chaos import _cli as chaos_cli

    chaos_cli.register(sub)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("writebehind")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
