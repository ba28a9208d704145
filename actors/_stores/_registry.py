"""Which store a URL names: the one place that knows every scheme."""

from __future__ import annotations

from collections.abc import Callable

from .._core._errors import ConfigError
from ._postgres import PostgresStore
from ._protocol import StoreFactory
from ._sqlite import SQLiteStore, sqlite_path


def _sqlite(url: str, table: str, timeout: float) -> StoreFactory:
    path = sqlite_path(url)
    return lambda: SQLiteStore(path, table=table, timeout=timeout)


def _postgres(url: str, table: str, timeout: float) -> StoreFactory:
    PostgresStore(url, table=table)  # validate the table name now, not in a thread
    return lambda: PostgresStore(url, table=table, timeout=timeout)


#: ``Config.store`` URL schemes, each with what makes its stores from (url, table, timeout).
SCHEMES: dict[str, Callable[[str, str, float], StoreFactory]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def store_factory(
    url: str, *, table: str = "writebehind_entries", timeout: float = 30.0
) -> StoreFactory:
    """A factory of fresh, unconnected stores for ``url`` (one per store actor)."""
    scheme, sep, _ = url.partition("://")
    opener = SCHEMES.get(scheme) if sep else None
    if opener is None:
        raise ConfigError(f"Config.store has an unknown scheme: {url!r}")
    return opener(url, table, timeout)
