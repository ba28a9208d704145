"""The reference (mkdocs + mkdocstrings, sources in ``specs/``) covers the public API.

The built site must have a section for every public name of ``writebehind``,
``writebehind.harness`` and ``writebehind.chaos`` and for every public method of their classes;
``Config``'s docstring must give every field's default (checked against the field), and a unit
or range for every number; ``specs/operations/store-schema.md`` must list exactly the columns
the SQLite store creates. The build itself is ``mkdocs build --strict`` (a broken link or a
reference to a name that does not exist fails it).

Outside CI the build tests skip when mkdocs is not installed (``pip install -e ".[docs]"``);
in CI (``CI`` set) they fail instead.
"""

from __future__ import annotations

import html
import importlib
import inspect
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import writebehind
from writebehind import Config, Fence, SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("writebehind", "writebehind.harness", "writebehind.chaos")
SCHEMA_PAGE = ROOT / "specs" / "operations" / "store-schema.md"


def _need_mkdocs() -> None:
    missing = []
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        message = f"building the reference needs {', '.join(missing)}: pip install -e '.[docs]'"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must build the reference)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference, built once for this module with ``mkdocs build --strict``."""
    _need_mkdocs()
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    )
    return out


def _anchors(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in site.rglob("*.html"):
        ids.update(html.unescape(m) for m in re.findall(r'\bid="([^"]+)"', page.read_text()))
    return ids


def _public_objects() -> dict[str, object]:
    found = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            found[f"{package}.{name}"] = getattr(module, name)
    return found


def test_every_public_name_has_a_section(site: Path) -> None:
    anchors = _anchors(site)
    missing = sorted(full for full in _public_objects() if full not in anchors)
    assert not missing, (
        f"public names without a section in the reference: {missing}; add "
        "'::: <name>' to the page of specs/reference/ where it belongs"
    )


def test_every_public_name_has_a_docstring(site: Path) -> None:
    """As the reference sees them: griffe, with the extension that reads ``#:`` comments."""
    import griffe

    sys.path.insert(0, str(ROOT / "specs" / "_mkdocs"))
    try:
        from griffe_roles import SphinxRoles
    finally:
        sys.path.remove(str(ROOT / "specs" / "_mkdocs"))
    package = griffe.load(
        "writebehind", search_paths=[str(ROOT / "build" / "reference-src")],
        extensions=griffe.load_extensions(SphinxRoles()),
    )
    undocumented = []
    for full in _public_objects():
        obj = package[full.split(".", 1)[1]]
        if obj.docstring is None or not obj.docstring.value.strip():
            undocumented.append(full)
    assert not undocumented, (
        f"public names without a docstring (or a #: comment above a constant): {undocumented}"
    )


def _own_public_members(cls: type) -> list[str]:
    names = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, staticmethod | classmethod | property) or inspect.isfunction(value):
            names.append(name)
    return names


def test_every_public_method_has_a_section(site: Path) -> None:
    anchors = _anchors(site)
    missing = []
    for full, obj in _public_objects().items():
        if not isinstance(obj, type):
            continue
        missing.extend(
            f"{full}.{name}" for name in _own_public_members(obj)
            if f"{full}.{name}" not in anchors
        )
    assert not missing, (
        f"public methods without a section in the reference: {sorted(missing)}; a "
        "'::: <class>' block shows them unless its options leave them out"
    )


def test_the_build_sees_the_changelog_and_the_command_line(site: Path) -> None:
    changelog = (site / "changelog" / "index.html").read_text()
    assert "Unreleased" in changelog  # CHANGELOG.md, included from the repository root
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("writebehind recover", "writebehind journal check", "writebehind chaos run"):
        assert command in cli, command


# -- Config: every field's default, unit and range, from its docstring -------------------------


def _field_docs() -> dict[str, str]:
    """Config's ``Attributes:`` section, entry by entry."""
    doc = inspect.getdoc(Config) or ""
    section = doc.split("Attributes:", 1)[1]
    entries: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^    (\w+) \(", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current is not None and line.startswith("        "):
            entries[current] += " " + line.strip()
        elif line.strip():
            current = None
    return entries


def _shown(default: object) -> str:
    if isinstance(default, Path):
        return repr(str(default))
    return repr(default)


def test_every_config_field_is_documented_with_its_default() -> None:
    docs = _field_docs()
    fields = attrs.fields(Config)
    assert sorted(docs) == sorted(f.name for f in fields)
    for field in fields:
        entry = docs[field.name]
        match = re.search(r"Default: `([^`]*)`", entry)
        assert match, f"Config.{field.name}: no 'Default: `...`' in {entry!r}"
        assert match.group(1) == _shown(field.default), (field.name, match.group(1))


def test_every_numeric_config_field_gives_its_range() -> None:
    docs = _field_docs()
    for field in attrs.fields(Config):
        if isinstance(field.default, int | float) and not isinstance(field.default, bool):
            assert "Range:" in docs[field.name], f"Config.{field.name} has no 'Range:'"
        if isinstance(field.default, float):
            assert re.search(r"\bseconds?\b", docs[field.name], re.I), (
                f"Config.{field.name} is a duration and does not say it is in seconds"
            )


def test_the_config_page_shows_every_field(site: Path) -> None:
    page = html.unescape((site / "reference" / "config" / "index.html").read_text())
    text = re.sub(r"<[^>]+>", "", page)
    for field in attrs.fields(Config):
        assert re.search(rf"\b{field.name}\b", text), field.name
    assert text.count("Default:") >= len(attrs.fields(Config))


# -- the store schema page against the tables the SQLite store creates -------------------------


def documented_columns(page: str, store: str) -> dict[str, dict[str, str]]:
    """``{table suffix: {column: type}}`` from the schema page, for ``"SQLite"`` or
    ``"PostgreSQL"`` (a column with an empty cell does not exist in that store)."""
    tables: dict[str, dict[str, str]] = {}
    for section in re.split(r"^## ", page, flags=re.M)[1:]:
        heading = section.splitlines()[0]
        match = re.match(r"`<table>(\w*)`", heading)
        if not match:
            continue
        lines = section.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("|"))
        rows = []
        for line in lines[start:]:
            if not line.startswith("|"):
                break  # the first table of the section ends here
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        header = rows[0]
        assert header[:3] == ["column", "SQLite", "PostgreSQL"], heading
        column = header.index(store)
        found = {row[0].strip("`"): row[column] for row in rows[2:] if row[column]}
        tables[match.group(1)] = found
    return tables


def test_the_schema_page_lists_every_sqlite_column(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db", table="t")
    store.connect()
    store.write_batch_fenced([], Fence(0, 1))  # creates the fence table (cluster mode)
    store.close()
    db = sqlite3.connect(tmp_path / "store.db")
    try:
        names = [
            row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        actual = {
            name[1:]: {row[1]: row[2] for row in db.execute(f"PRAGMA table_info({name})")}
            for name in names
        }
        meta_rows = {row[0] for row in db.execute("SELECT name FROM t_meta")}
    finally:
        db.close()
    page = SCHEMA_PAGE.read_text()
    assert documented_columns(page, "SQLite") == actual
    for name in meta_rows:
        assert f"| `{name}` |" in page, f"meta row {name!r} is not on {SCHEMA_PAGE.name}"


def test_the_docs_extra_has_what_the_build_needs() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    docs = " ".join(project["optional-dependencies"]["docs"])
    for needed in ("mkdocs", "mkdocstrings[python]"):
        assert needed in docs, needed
    assert writebehind.__all__  # the reference documents this list


def test_the_harness_page_lists_every_fixture_and_option() -> None:
    import writebehind.harness.pytest_plugin as plugin

    page = (ROOT / "specs" / "reference" / "harness.md").read_text()
    fixtures = [
        name for name, value in vars(plugin).items()
        if name.startswith("writebehind_") and callable(value)
    ]
    assert fixtures  # the plugin's fixtures are module-level functions named writebehind_*
    for name in [*fixtures, "--writebehind-seed"]:
        assert f"`{name}" in page, f"{name} is not on specs/reference/harness.md"
