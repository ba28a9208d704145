"""mkdocs hooks for the reference.

The package's source is laid out as its install maps it (``actors/`` is ``writebehind``,
``harness/`` is ``writebehind.harness``, ``chaos/`` is ``writebehind.chaos``), which griffe
cannot follow from an editable install: it would fall back to importing the package and
documenting what it finds at run time (attrs internals, inherited dunders). So, before the
build, copy the sources into ``build/reference-src/writebehind`` in the installed shape; the
mkdocstrings ``paths`` option points there.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

SOURCE = Path("build") / "reference-src"
LAYOUT = {"actors": "writebehind", "harness": "writebehind/harness", "chaos": "writebehind/chaos"}


@event_priority(100)  # before mkdocstrings reads its paths
def on_config(config: Any, **kwargs: Any) -> Any:
    root = Path(config.config_file_path).parent
    dest = root / SOURCE
    shutil.rmtree(dest, ignore_errors=True)
    for source, target in LAYOUT.items():
        shutil.copytree(
            root / source, dest / target,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )
    # CHANGELOG.md is included from the repository root, wherever mkdocs runs from.
    config.mdx_configs.setdefault("pymdownx.snippets", {})["base_path"] = [str(root)]
    return config


CLI_MARKER = "<!-- writebehind --help -->"


def _cli_help() -> str:
    """Markdown: every ``writebehind`` command's ``--help``, walked from the real parser."""
    import argparse
    import os

    from writebehind._cli import build_parser

    os.environ.setdefault("COLUMNS", "96")
    out: list[str] = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        level = "#" * min(2 + len(words), 4)
        name = " ".join(["writebehind", *words])
        out.extend([f"{level} `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""])
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, [*words, sub_name])

    walk(build_parser(), [])
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, _cli_help())
    return markdown
