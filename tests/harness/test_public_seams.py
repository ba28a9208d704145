"""The harness and the chaos suites reach the runtime and trio through public seams only.

No private attribute of another object (``cache._shards``, ``trio._core``, a base class's
``self._frozen``), no private name imported from another package, nothing private named by a
string (``getattr(x, "_db")``). The one exception is the function that seeds trio's scheduler,
for which trio offers no public way (see ``harness/_trio_scheduler.py``).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("harness", "chaos")
#: (file, function) allowed to reach trio's private scheduler state: trio has no public way.
TRIO_SEEDING = ("harness/_trio_scheduler.py", "_swap_scheduler")
#: Public names that happen to begin with an underscore.
PUBLIC_UNDERSCORED = {("os", "_exit")}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_string(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
        if text.isidentifier() and _private(text) and text.strip("_"):
            return text
    return None


class _Reaches(ast.NodeVisitor):
    def __init__(self, allowed_function: str | None) -> None:
        self.allowed_function = allowed_function
        self.found: list[tuple[int, str]] = []
        self.local_classes: set[str] = set()
        self.classes: list[tuple[bool, set[str]]] = []  # (has a foreign base, own names)
        self.depth_in_class: list[int] = []

    def report(self, node: ast.AST, what: str) -> None:
        self.found.append((getattr(node, "lineno", 0), what))

    def visit_Module(self, node: ast.Module) -> None:
        self.local_classes = {n.name for n in ast.walk(node) if isinstance(n, ast.ClassDef)}
        relative = {
            alias.asname or alias.name
            for n in ast.walk(node) if isinstance(n, ast.ImportFrom) and n.level > 0
            for alias in n.names
        }
        self.local_classes |= relative  # the harness's own classes, from its own modules
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        foreign = any(
            not (isinstance(base, ast.Name) and base.id in self.local_classes)
            for base in node.bases
        )
        # Its own names: what its body defines, and the attributes its __init__ sets (one
        # set anywhere else may well be a base class's).
        own: set[str] = set()
        for child in node.body:
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(child.name)
            elif isinstance(child, ast.Assign | ast.AnnAssign | ast.AugAssign):
                own |= {n.id for n in ast.walk(child) if isinstance(n, ast.Name)
                        and isinstance(n.ctx, ast.Store)}
            if isinstance(child, ast.FunctionDef) and child.name == "__init__":
                own |= {
                    n.attr for n in ast.walk(child)
                    if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                    and isinstance(n.value, ast.Name) and n.value.id == "self"
                }
        self.classes.append((foreign, own))
        self.depth_in_class.append(0)
        self.generic_visit(node)
        self.depth_in_class.pop()
        self.classes.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if node.name == self.allowed_function:
            return
        if self.depth_in_class:
            self.depth_in_class[-1] += 1
        self.generic_visit(node)
        if self.depth_in_class:
            self.depth_in_class[-1] -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.generic_visit(node)
        if not _private(node.attr):
            return
        base = node.value
        if isinstance(base, ast.Name) and (base.id, node.attr) in PUBLIC_UNDERSCORED:
            return
        in_method = bool(self.depth_in_class and self.depth_in_class[-1])
        if isinstance(base, ast.Name) and base.id in ("self", "cls") and in_method:
            foreign, own = self.classes[-1]
            if not foreign or node.attr in own:
                return
            self.report(node, f"{base.id}.{node.attr} (a base class's private attribute)")
            return
        self.report(node, f"{ast.unparse(node)}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] != "writebehind" and any(_private(p) for p in parts):
                self.report(node, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level > 0:
            return  # the harness's (or the suites') own modules
        module = node.module or ""
        parts = module.split(".")
        if parts[0] != "writebehind" and any(_private(p) for p in parts):
            self.report(node, f"from {module} import ...")
        for alias in node.names:
            if _private(alias.name):
                self.report(node, f"from {module} import {alias.name}")

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        for arg in node.args:
            name = _private_string(arg)
            if name is not None:
                self.report(node, f"{ast.unparse(node.func)}(..., {name!r}, ...)")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.generic_visit(node)
        name = _private_string(node.slice)
        if name is not None:
            self.report(node, f"{ast.unparse(node)}")


def private_reaches(source: str, allowed_function: str | None = None) -> list[tuple[int, str]]:
    """(line, what) of every reach into something private of another object or package."""
    visitor = _Reaches(allowed_function)
    visitor.visit(ast.parse(source))
    return sorted(visitor.found)


def reaches_under(root: Path) -> list[str]:
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            allowed = TRIO_SEEDING[1] if name == TRIO_SEEDING[0] else None
            found += [f"{name}:{line}: {what}"
                      for line, what in private_reaches(path.read_text(), allowed)]
    return found


def test_the_harness_and_the_suites_use_public_seams_only() -> None:
    assert reaches_under(REPO) == []


def test_trio_is_reached_privately_in_the_one_seeding_function_only() -> None:
    # The exemption is not stale: that function does reach into trio (and only it).
    path, function = TRIO_SEEDING
    source = (REPO / path).read_text()
    reaches = private_reaches(source)
    assert reaches, f"{function} no longer reaches into trio: drop the exemption"
    assert all("_run" in what or "trio._core" in what for _, what in reaches), reaches
    tree = ast.parse(source)
    (seeding,) = [n for n in ast.walk(tree)
                  if isinstance(n, ast.FunctionDef) and n.name == function]
    assert all(seeding.lineno <= line <= (seeding.end_lineno or 0) for line, _ in reaches)


@pytest.mark.parametrize(
    "source",
    [
        "from trio._core import _run",
        "import trio._core._run",
        "from trio import _core",
        "import trio\ntrio.lowlevel.current_root_task()._runner",
        "def f(cache):\n    return cache._shards",
        "def f(shard):\n    shard._inbox.send_nowait(1)",
        "from writebehind._journal._fs import _Inode",
        "def f(store):\n    return getattr(store, '_db')",
        "def f(cls_):\n    return cls_.__dict__['_frozen']",
        "def swap(self):\n    return self._frozen",  # a method patched in: not its own
        """
        from writebehind._journal import SimulatedFileSystem

        class Disk(SimulatedFileSystem):
            def cut(self):
                self._frozen = True
        """,
        """
        from writebehind._journal import SimulatedFileSystem

        class Disk(SimulatedFileSystem):
            def path(self, p):
                return self._norm(p)
        """,
        """
        class Disk:
            def f(self, other):
                return super()._norm(other)
        """,
    ],
)
def test_the_check_catches_a_private_reach(source: str) -> None:
    assert private_reaches(textwrap.dedent(source))


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos._exit(3)",
        "from writebehind._journal._fs import CRASH_MODES",
        "from ._memory_store import _Connection",
        "x.__class__.__name__",
        """
        from writebehind._journal import SimulatedFileSystem

        class Disk(SimulatedFileSystem):
            def __init__(self):
                self._cut_rng = 1

            def _cut(self):
                return self._cut_rng, self.powered_off
        """,
        """
        class Own:
            _lock = None

            def f(self):
                return self._lock, self._anything_of_its_own
        """,
    ],
)
def test_the_check_lets_own_and_public_names_be(source: str) -> None:
    assert private_reaches(textwrap.dedent(source)) == []
