"""The tree shows the layers, and imports only point down.

From the bottom: the kernel (``_core``: pure, no I/O), the journal, the stores, the runtime
(trio actors), the inspector and metrics, the entry points (``_open``), the bench, the command
line, the public namespace, then the harness and the chaos suites built on it all. A module may
import its own layer and the layers below; every import counts, including those inside
functions and under ``TYPE_CHECKING`` (an upward import hidden there is still a circle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"writebehind": REPO / "actors", "writebehind.harness": REPO / "harness",
         "writebehind.chaos": REPO / "chaos"}
LAYERS = ("_core", "_journal", "_stores", "_runtime", "_cluster", "_inspector", "_open", "_bench",
          "_cli", "writebehind", "harness", "chaos")
#: What the kernel must not import: it decides, others do the I/O.
IO_MODULES = {"trio", "os", "sqlite3", "psycopg", "socket", "subprocess", "threading",
              "asyncio", "trio_websocket", "prometheus_client", "nats", "shutil", "signal"}


def modules() -> dict[str, Path]:
    found = {}
    for package, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports(name: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in module ``name``, relative ones resolved."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package(name):
                    base.pop()
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else module


def layer(module: str) -> str:
    for package in ("writebehind.harness", "writebehind.chaos"):
        if module == package or module.startswith(package + "."):
            return package.rpartition(".")[2]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "writebehind"


def test_every_module_is_in_a_known_layer() -> None:
    assert {layer(m) for m in MODULES} == set(LAYERS)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name: str) -> None:
    own = LAYERS.index(layer(name))
    upward = [
        f"line {line}: {target} ({layer(target)})"
        for line, target in imports(name)
        if target in MODULES and LAYERS.index(layer(target)) > own
    ]
    assert not upward, f"{name} ({layer(name)}) imports upward: {upward}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if layer(m) == "_core"))
def test_the_kernel_does_no_io(name: str) -> None:
    found = sorted({t.split(".")[0] for _, t in imports(name)} & IO_MODULES)
    assert not found, f"{name} imports {found}: the kernel stays pure"


def test_no_import_circles() -> None:
    graph = {m: {t for _, t in imports(m) if t in MODULES and t != m} for m in MODULES}
    # Tarjan's strongly connected components: a component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_an_upward_import_is_seen(tmp_path: Path) -> None:
    """The check can fail: a kernel module importing the runtime is reported."""
    global MODULES
    saved = MODULES
    fake = tmp_path / "_errors.py"
    fake.write_text("from .._runtime._cache import Cache\nimport trio\n")
    try:
        MODULES = {**saved, "writebehind._core._errors": fake}
        with pytest.raises(AssertionError, match="imports upward"):
            test_imports_point_down("writebehind._core._errors")
        with pytest.raises(AssertionError, match=r"imports \['trio'\]"):
            test_the_kernel_does_no_io("writebehind._core._errors")
    finally:
        MODULES = saved
