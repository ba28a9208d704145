"""The store under test: one URL, a fresh table per measurement, dropped afterwards."""

from __future__ import annotations

import sqlite3
import uuid

import attrs

from .._core._config import mask_url
from .._stores._protocol import Store
from .._stores._registry import store_factory
from .._stores._sqlite import sqlite_path


@attrs.define
class StoreTarget:
    """Where every measurement of one run writes: ``url``, with a table per measurement."""

    url: str
    prefix: str = attrs.field(factory=lambda: f"wb_bench_{uuid.uuid4().hex[:8]}")
    created: list[str] = attrs.field(factory=list)

    @property
    def kind(self) -> str:
        return "sqlite" if self.url.startswith("sqlite://") else "postgresql"

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def table(self, name: str) -> str:
        """A fresh table name for one measurement (remembered, to drop it later)."""
        table = f"{self.prefix}_{name}"
        self.created.append(table)
        return table

    def connect(self, table: str) -> Store:
        """A connected store on ``table``, driven directly (no cache in front)."""
        store = store_factory(self.url, table=table)()
        store.connect()
        return store

    def drop(self, table: str) -> None:
        """Drop ``table`` and the meta and quarantine tables the store made beside it."""
        names = [table + suffix for suffix in ("", "_meta", "_quarantine")]
        if self.kind == "sqlite":
            db = sqlite3.connect(sqlite_path(self.url), timeout=30.0)
            try:
                for name in names:
                    db.execute(f"DROP TABLE IF EXISTS {name}")
                db.commit()
            finally:
                db.close()
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP TABLE IF EXISTS {name}")

    def drop_all(self) -> None:
        while self.created:
            self.drop(self.created.pop())
