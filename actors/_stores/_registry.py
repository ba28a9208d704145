"""Which store a URL names: the one place that knows every scheme."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

from .._core._config import sqlite_worker
from .._core._errors import ConfigError
from ._postgres import PostgresStore
from ._protocol import StoreFactory
from ._sqlite import SQLiteStore, sqlite_path


@attrs.frozen
class SQLiteFactory:
    """Makes the SQLite stores of one URL. It pickles: a store actor sends it to its store
    worker process (``worker == "process"``), which makes the stores there."""

    path: Path
    table: str
    timeout: float
    worker: str = "thread"

    def __call__(self) -> SQLiteStore:
        return SQLiteStore(self.path, table=self.table, timeout=self.timeout)


def _sqlite(url: str, table: str, timeout: float) -> StoreFactory:
    factory = SQLiteFactory(sqlite_path(url), table, timeout, sqlite_worker(url))
    factory()  # validate the table name now, not in a worker
    return factory


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
