"""mypy --strict over the whole ``writebehind`` package: actors/, harness/ and chaos/ as one.

The three folders form one package only once installed (setup.py maps them), and an editable
install maps them with an import hook, which mypy cannot follow; mypy has no option that maps
a folder to a package of another name either. So this lays the package out as symlinks to
the folders (from setup.py's map) under .mypy_cache/ (a fixed place: mypy's cache keeps the
paths of the errors it replays), runs ``mypy -p writebehind`` over it with the project's
configuration, and prints the errors under the repository's paths.

Usage, from anywhere: ``python .ci/typecheck.py [MYPY OPTIONS]``; exits with mypy's status.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".mypy_cache" / "writebehind"
LAYOUT = HOME / "tree"


def package_map() -> dict[str, str]:
    """setup.py's ``ROOTS``: package name -> folder, read without running setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ROOTS" for t in node.targets
        ):
            roots = ast.literal_eval(node.value)
            assert isinstance(roots, dict)
            return {str(k): str(v) for k, v in roots.items()}
    raise SystemExit("setup.py has no ROOTS mapping")


def lay_out(roots: dict[str, str], into: Path) -> dict[str, str]:
    """Symlink each package's folder into ``into`` under its package path; returns the
    prefixes to rewrite in mypy's output (laid-out path -> repository path)."""
    prefixes: dict[str, str] = {}
    for package, folder in sorted(roots.items(), key=lambda item: item[0].count(".")):
        target = into.joinpath(*package.split("."))
        children = {p for p in roots if p.startswith(package + ".")}
        if children:
            # A folder another one is mapped into: a real directory of links to its entries.
            target.mkdir(parents=True, exist_ok=True)
            skip = {c.split(".")[package.count(".") + 1] for c in children} | {"__pycache__"}
            for entry in sorted((REPO / folder).iterdir()):
                if entry.name not in skip:
                    (target / entry.name).symlink_to(entry)
        else:
            target.symlink_to(REPO / folder, target_is_directory=True)
        # mypy names a file under the working directory (the repository) by its relative path.
        for laid_out in (target, target.relative_to(REPO)):
            prefixes[f"{laid_out}{os.sep}"] = f"{folder}/"
    return prefixes


def main(argv: list[str]) -> int:
    roots = package_map()
    top = min(roots, key=lambda p: p.count("."))
    shutil.rmtree(LAYOUT, ignore_errors=True)  # laid out afresh: folders come and go
    prefixes = lay_out(roots, LAYOUT)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(HOME / "cache"), "-p", top, *argv],
        cwd=REPO, env={**os.environ, "MYPYPATH": str(LAYOUT)}, capture_output=True,
        text=True, check=False,
    )
    longest_first = sorted(prefixes.items(), key=lambda item: -len(item[0]))
    for stream, text in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
        for line in text.splitlines(keepends=True):
            for laid_out, repo_path in longest_first:
                line = line.replace(laid_out, repo_path)
            stream.write(line)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
