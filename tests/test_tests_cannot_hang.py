"""Tests that cannot hang (issue 16, item 6): a guard that reads every test module with ``ast``.

A hung test blocks CI until the job's own limit and says nothing about where it hung; a
``trio.fail_after`` cap turns the hang into a failure that names the test and shows the stack.
So, in every module under ``tests/``:

* an ``async def test_*`` runs on trio's autojump clock (an ``autojump_clock`` parameter), or
  every ``await`` in its body is inside a ``fail_after``/``move_on_after`` (or ``_at``) block.
  Nested functions are exempt from this rule: they run only when the test awaits or starts them.
* a ``while`` loop that awaits, in a test (nested functions included), is inside such a block,
  whichever the clock: on the autojump clock an endless loop is endless in virtual time, and
  the cap (free there: virtual seconds) is what ends it.
* a poll (a ``while`` loop whose body sleeps: ``trio.sleep`` or ``time.sleep``) in any other
  function under ``tests/`` is inside such a block too. Other helper loops await I/O and are
  bounded by the cap of the test that calls them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
CAPS = {"fail_after", "move_on_after", "fail_at", "move_on_at"}
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _is_cap(item: ast.withitem) -> bool:
    call = item.context_expr
    if not isinstance(call, ast.Call):
        return False
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    return name in CAPS


def _awaits(node: ast.AST) -> bool:
    """Whether ``node`` suspends (outside the functions it defines)."""
    return any(isinstance(n, (ast.Await, ast.AsyncFor, ast.AsyncWith)) for n in _walk(node))


def _sleeps(node: ast.AST) -> bool:
    for n in _walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            owner = n.func.value
            if n.func.attr == "sleep" and isinstance(owner, ast.Name) and owner.id in {
                "trio", "time"
            }:
                return True
    return False


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that does not enter the bodies of functions ``node`` defines."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, FUNCTIONS):
            yield from _walk(child)


def _uncapped(node: ast.AST, capped: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node`` (nested functions excluded), with whether a cap encloses it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, FUNCTIONS):
            continue
        inner = capped or (
            isinstance(child, (ast.With, ast.AsyncWith)) and any(_is_cap(i) for i in child.items)
        )
        yield child, capped  # a with's own items are not under its cap; its body is
        yield from _uncapped(child, inner)


def _functions(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every function in ``tree`` (at any depth), with whether a cap lexically encloses it."""

    def visit(node: ast.AST, capped: bool) -> Iterator[tuple[ast.AST, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, FUNCTIONS):
                yield child, capped
                yield from visit(child, False)
                continue
            inner = capped or (
                isinstance(child, (ast.With, ast.AsyncWith))
                and any(_is_cap(i) for i in child.items)
            )
            yield from visit(child, inner)

    yield from visit(tree, False)


def _is_test(function: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(function)
    return (
        isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        and function.name.startswith("test")
        and isinstance(parent, (ast.Module, ast.ClassDef))
    )


def problems(source: str, name: str) -> list[str]:
    """What in the module ``source`` could hang, one line each, naming the function."""
    tree = ast.parse(source, filename=name)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: list[str] = []

    def owner_test(function: ast.AST) -> ast.AST | None:
        node: ast.AST | None = function
        while node is not None and not _is_test(node, parents):
            node = parents.get(node)
        return node

    for function, enclosed in _functions(tree):
        if isinstance(function, ast.Lambda):
            continue
        assert isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        test = owner_test(function)
        where = f"{name}::{function.name}:{function.lineno}"
        if test is function and isinstance(function, ast.AsyncFunctionDef):
            arguments = [a.arg for a in function.args.args + function.args.kwonlyargs]
            if "autojump_clock" not in arguments:
                lines = sorted(
                    {n.lineno for n, capped in _uncapped(function)
                     if not capped and isinstance(n, (ast.Await, ast.AsyncFor, ast.AsyncWith))}
                )
                if lines or not any(
                    isinstance(n, (ast.With, ast.AsyncWith)) and any(map(_is_cap, n.items))
                    for n, _ in _uncapped(function)
                ):
                    found.append(
                        f"{where}: real clock, and "
                        + (f"awaits with no fail_after cap (line {', '.join(map(str, lines))})"
                           if lines else "no fail_after cap")
                    )
        for node, capped in _uncapped(function, enclosed):
            if not isinstance(node, ast.While) or capped:
                continue
            if test is not None and _awaits(node):
                found.append(f"{where}: while loop at line {node.lineno} awaits with no cap")
            elif test is None and _sleeps(node):
                found.append(f"{where}: poll at line {node.lineno} sleeps with no cap")
    return found


MODULES = sorted(p for p in TESTS.rglob("*.py") if p.name != Path(__file__).name)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_can_hang(path: Path) -> None:
    found = problems(path.read_text(), str(path.relative_to(TESTS)))
    assert not found, "can hang:\n" + "\n".join(found)


# -- the guard's own teeth: each rule catches what it is for, and passes what it should -----


CAUGHT = {
    "no cap": "async def test_a():\n    await trio.sleep(1)\n",
    "an await after the cap": (
        "async def test_a():\n    with trio.fail_after(5):\n        pass\n"
        "    await trio.sleep(1)\n"
    ),
    "a nursery opened outside the cap": (
        "async def test_a():\n    async with trio.open_nursery() as n:\n"
        "        with trio.fail_after(5):\n            pass\n"
    ),
    "an async test with no await and no cap": "async def test_a():\n    assert True\n",
    "an uncapped loop on the autojump clock": (
        "async def test_a(autojump_clock):\n    while not done():\n        await trio.sleep(1)\n"
    ),
    "an uncapped loop in a nested function": (
        "async def test_a():\n    async def poll():\n        while not done():\n"
        "            await trio.sleep(0.1)\n    with trio.fail_after(5):\n        await poll()\n"
    ),
    "an uncapped poll in a helper": (
        "async def wait():\n    while not done():\n        await trio.sleep(0.1)\n"
    ),
    "an uncapped time.sleep poll in a sync helper": (
        "def wait():\n    while not done():\n        time.sleep(0.1)\n"
    ),
    "a test method": (
        "class TestA:\n    async def test_a(self):\n        await trio.sleep(1)\n"
    ),
}

PASSED = {
    "capped": "async def test_a():\n    with trio.fail_after(5):\n        await trio.sleep(1)\n",
    "autojump": "async def test_a(autojump_clock):\n    await trio.sleep(3600)\n",
    "a capped loop on the autojump clock": (
        "async def test_a(autojump_clock):\n    with trio.fail_after(60):\n"
        "        while not done():\n            await trio.sleep(1)\n"
    ),
    "a nested function defined inside the cap": (
        "async def test_a():\n    with trio.fail_after(5):\n        async def poll():\n"
        "            while not done():\n                await trio.sleep(0.1)\n"
        "        await poll()\n"
    ),
    "a capped poll in a helper": (
        "async def wait():\n    with trio.move_on_after(5):\n        while not done():\n"
        "            await trio.sleep(0.1)\n"
    ),
    "a helper loop that awaits I/O": (
        "async def read(stream):\n    while chunk := await stream.receive_some():\n"
        "        yield chunk\n"
    ),
    "a sync test": "def test_a():\n    trio.run(main)\n",
}


@pytest.mark.parametrize("source", CAUGHT.values(), ids=CAUGHT.keys())
def test_the_guard_catches(source: str) -> None:
    assert problems(source, "example.py")


@pytest.mark.parametrize("source", PASSED.values(), ids=PASSED.keys())
def test_the_guard_passes(source: str) -> None:
    assert problems(source, "example.py") == []
