"""A griffe extension for the reference: the docstrings' Sphinx roles as links.

The docstrings name other objects the Sphinx way (``:class:`Config```, ``:func:`open_cache```).
mkdocstrings would print those roles as they are; this turns each into a cross-reference when it
names something the reference documents (a public name of ``writebehind``,
``writebehind.harness`` or ``writebehind.chaos``, or a public member of one), and into plain
code when it names something private, so ``mkdocs build --strict`` never meets a dangling link.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|obj|mod):`(~?)([^`]+)`")
_PACKAGES = ("writebehind", "writebehind.harness", "writebehind.chaos")


def _public() -> dict[str, object]:
    """Every documented object by its full dotted name."""
    found: dict[str, object] = {}
    for package in _PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            try:
                found[f"{package}.{name}"] = getattr(module, name)
            except ImportError:  # CacheMachine without Hypothesis: still documented by name
                found[f"{package}.{name}"] = None
    return found


class SphinxRoles(griffe.Extension):
    """Rewrites ``:role:`target``` in every docstring (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._public = _public()
        self._bare: dict[str, str] = {}
        for full in self._public:
            self._bare.setdefault(full.rsplit(".", 1)[1], full)

    def _resolve(self, target: str) -> str | None:
        """The documented full name ``target`` means, or None if the reference lacks it."""
        if target in self._public:
            return target
        if target in self._bare:
            return self._bare[target]
        owner_name, _, member = target.rpartition(".")
        owner_full = owner_name if owner_name in self._public else self._bare.get(owner_name)
        if owner_full is None or member.startswith("_"):
            return None
        owner = self._public[owner_full]
        if member not in getattr(owner, "__dict__", {}):  # inherited members are not shown
            return None
        return f"{owner_full}.{member}"

    def _rewrite(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            tilde, target = match.groups()
            shown = target.rsplit(".", 1)[-1] if tilde else target
            full = self._resolve(target)
            return f"[`{shown}`][{full}]" if full else f"`{shown}`"

        # reST's "Use it as::" before an indented block: the block is code in Markdown too.
        text = re.sub(r"(\w)::$", r"\1:", text, flags=re.M)
        return _ROLE.sub(replace, text)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Names a package exports lazily (``LAZY_NAMES``: imported on first use by its module
        ``__getattr__``, which griffe cannot see) become aliases of their definitions."""
        for package in _PACKAGES:
            path = package.split(".")
            if path[0] != pkg.name:
                continue
            module = pkg
            for part in path[1:]:
                module = module.members[part]  # type: ignore[assignment]
            lazy = getattr(importlib.import_module(package), "LAZY_NAMES", ())
            for name in lazy:
                for sub in module.modules.values():
                    member = sub.members.get(name)
                    if member is not None and not member.is_alias:
                        module.set_member(name, griffe.Alias(name, member, parent=module))
                        break

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if isinstance(obj, griffe.Attribute):
            _attrs_default(obj)
            if obj.docstring is None:
                _comment_docstring(obj)
        if obj.docstring is not None:
            obj.docstring.value = self._rewrite(obj.docstring.value)


def _attrs_default(attr: griffe.Attribute) -> None:
    """Show an attrs field's default (``x: int = attrs.field(default=2, validator=...)``
    reads ``x: int = 2``), or no value when it has none."""
    value = attr.value
    if not isinstance(value, griffe.ExprCall) or not str(value.function).endswith("field"):
        return
    attr.value = None
    for argument in value.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "default":
            attr.value = argument.value


def _comment_docstring(attr: griffe.Attribute) -> None:
    """Sphinx's ``#:`` comments above a module constant become its docstring."""
    if attr.lineno is None or attr.parent is None or not attr.parent.is_module:
        return
    lines = attr.parent.lines
    comment: list[str] = []
    index = attr.lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        comment.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    if comment:
        attr.docstring = griffe.Docstring(
            " ".join(comment), lineno=index + 2, endlineno=attr.lineno - 1, parent=attr
        )
