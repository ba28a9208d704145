"""The stores a simulation runs over, and an audit of every version a store ever held.

A simulation's store is one of three kinds: ``memory`` (:class:`MemoryStore`, fastest),
``sqlite`` (the real :class:`writebehind.SQLiteStore`, one file per run) or a PostgreSQL URL
(the real ``PostgresStore``, a table per run, dropped afterwards). The real ones are where the
version guard and the batch semantics live, so a bug there only shows over them. Every kind
is called inline (``blocking = False``): the event loop waits for each call, so a run stays
deterministic under the mock clock.

:class:`StoreAudit` wraps the raw connection (under the fault wrapper, so it sees what really
reached the store, duplicates and late deliveries included) and reads back every key a batch
touched: a key's stored version must never go backwards, never vanish, and one version of a
key must always carry one value. The final check of a run only sees where the store ended up;
the audit sees every step on the way.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from writebehind import Store, StoreRecord
from writebehind._stores._protocol import StoreFactory, WriteOutcome
from writebehind._stores._sqlite import SQLiteStore

from ._memory_store import MemoryStore

#: The store kinds :func:`writebehind.harness.simulate` takes besides a PostgreSQL URL.
SIM_STORES: tuple[str, ...] = ("memory", "sqlite")


class _InlineSQLite(SQLiteStore):
    blocking = False  # called on the event loop's thread: the run stays deterministic

    def settings_problem(self) -> str | None:
        """No simulation cuts the store's power, so its promise to keep a commit is checked
        where it is made: the connection's durability settings."""
        synchronous, mode = self.durability_settings()
        if synchronous < 2 or mode != "wal":  # FULL (2) or EXTRA (3), in WAL mode
            return (
                f"SQLite runs with synchronous={synchronous}, journal_mode={mode}: a commit "
                "it acknowledged can be lost in a power loss (the store needs synchronous=FULL "
                "in WAL mode before the journal checkpoints past a batch)"
            )
        return None


class _InlinePostgres:
    """A real PostgreSQL store, called inline (see the module docstring)."""

    blocking = False

    def __init__(self, url: str, table: str) -> None:
        from writebehind._stores._postgres import PostgresStore

        self._inner = PostgresStore(url, table=table, timeout=30.0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def is_postgres(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def check_sim_store(store: str) -> str:
    """``store`` if a simulation can run over it; a ValueError saying what to pass if not."""
    if store in SIM_STORES or is_postgres(store):
        return store
    raise ValueError(
        f"a simulation's store must be one of {', '.join(SIM_STORES)} or a postgresql:// URL, "
        f"got {store!r}"
    )


def _scratch_dir() -> str | None:
    # A store on tmpfs: SQLite's own fsyncs cost nothing there, and the store's durability
    # is not what a simulation tests (the simulated disk is the journal's).
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class StoreAudit:
    """Every (key, version, value) a store held, as read back after each batch."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.values: dict[tuple[str, int], bytes | None] = {}
        self.problems: list[str] = []
        self.batches = 0
        self.settings_checked = False

    def observe(self, key: str, record: StoreRecord | None) -> None:
        last = self.versions.get(key)
        if record is None:
            if last is not None:
                self.add_problem(f"the store lost key {key!r} (it held version {last})")
            return
        if last is not None and record.version < last:
            self.add_problem(
                f"the store's version of {key!r} went backwards: {last} -> {record.version}"
            )
        seen = self.values.setdefault((key, record.version), record.value)
        if seen != record.value:
            self.add_problem(
                f"the store held two values for {key!r} version {record.version}: "
                f"{seen!r} and {record.value!r}"
            )
        self.versions[key] = max(record.version, last or 0)

    def add_problem(self, text: str) -> None:
        """Report ``text`` (the first twenty problems are kept)."""
        if len(self.problems) < 20:
            self.problems.append(f"store audit: {text}")


class AuditedStore:
    """A connection whose every batch is audited (:class:`StoreAudit`)."""

    def __init__(self, inner: Store, audit: StoreAudit) -> None:
        self.inner = inner
        self.audit = audit
        self.blocking = inner.blocking
        self.limits = getattr(inner, "limits", None)  # what the cache checks before acking

    def __repr__(self) -> str:
        return f"AuditedStore({self.inner!r})"

    def connect(self) -> None:
        self.inner.connect()
        check = getattr(self.inner, "settings_problem", None)
        problem = check() if check is not None else None
        if problem is not None and not self.audit.settings_checked:
            self.audit.add_problem(problem)
        self.audit.settings_checked = True

    def close(self) -> None:
        self.inner.close()

    def take_epoch(self) -> int:
        return self.inner.take_epoch()

    def read(self, key: str) -> StoreRecord | None:
        return self.inner.read(key)

    def read_all(self) -> dict[str, StoreRecord]:
        return self.inner.read_all()

    def write_batch(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        rejected = self.inner.write_batch(records)
        self.audit.batches += 1
        for key in dict.fromkeys(r.key for r in records):
            self.audit.observe(key, self.inner.read(key))
        return rejected


class SimStore:
    """One run's store: a factory of audited connections, and a direct view for checks."""

    def __init__(
        self, kind: str, factory: StoreFactory, memory: MemoryStore | None, *,
        refuses: bool = False,
    ) -> None:
        self.kind = kind
        #: Does the store refuse :data:`STORE_REFUSED_KEY` for good?
        self.refuses = refuses
        self.audit = StoreAudit()
        self._raw = factory
        self.memory = memory
        self._checker: Store | None = None  # the checks' own connection (not PostgreSQL's)

    def factory(self) -> Store:
        return AuditedStore(self._raw(), self.audit)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Store]:
        # One connection for every check: a connect is a schema transaction, and checks run
        # after every acknowledgement. (PostgreSQL's reads each run in a transaction of their
        # own, committed at once, so the checker never holds an old snapshot or a lock.)
        if self._checker is None:
            self._checker = self._raw()
            self._checker.connect()
        yield self._checker

    def rows(self) -> dict[str, StoreRecord]:
        """Every row, as committed now (tombstones as ``value=None``)."""
        with self._connection() as connection:
            return connection.read_all()

    def read(self, key: str) -> StoreRecord | None:
        """One row, as committed now."""
        with self._connection() as connection:
            return connection.read(key)

    def close(self) -> None:
        if self._checker is not None:
            self._checker.close()
            self._checker = None


@contextlib.contextmanager
def open_sim_store(kind: str, *, refuse: bool = False) -> Iterator[SimStore]:
    """A fresh, empty store of ``kind`` for one run; removed afterwards. With ``refuse``, a
    real store (SQLite, PostgreSQL) refuses :data:`STORE_REFUSED_KEY` for good."""
    check_sim_store(kind)
    if kind == "memory":
        memory = MemoryStore()
        sim = SimStore(kind, memory.factory, memory)
        yield sim
        sim.close()
        return
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="writebehind-sim-store-", dir=_scratch_dir()) as d:
            path = Path(d) / "store.db"
            if refuse:
                _sqlite_refuses_for_good(path)
            sim = SimStore(kind, lambda: _InlineSQLite(path), None, refuses=refuse)
            try:
                yield sim
            finally:
                sim.close()
        return
    table = f"wb_sim_{uuid.uuid4().hex[:12]}"
    try:
        if refuse:
            _refuse_for_good(kind, table)
        else:
            _create_tables(kind, table)
        yield SimStore(
            "postgresql", lambda: _InlinePostgres(kind, table), None, refuses=refuse
        )
    finally:
        _drop_tables(kind, table)


#: A key the simulation's real stores refuse for good (PostgreSQL: a CHECK constraint, SQLSTATE
#: 23514; SQLite: a trigger, a constraint error): the cache acknowledges its writes, then the
#: store itself refuses them and they are quarantined, which exercises the real stores'
#: refusal paths end to end.
STORE_REFUSED_KEY = "w2.k5"


def _sqlite_refuses_for_good(path: Path) -> None:
    store = SQLiteStore(path)
    store.connect()  # creates the tables
    store.close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for event in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER {store.table}_refused_{event.lower()} BEFORE {event} ON "
                f"{store.table} WHEN NEW.key = '{STORE_REFUSED_KEY}' BEGIN "
                "SELECT RAISE(ABORT, 'the simulation refuses this key for good'); END"
            )


def _create_tables(url: str, table: str) -> None:
    from writebehind._stores._postgres import PostgresStore

    store = PostgresStore(url, table=table)
    store.connect()  # creates the tables
    store.close()


def _refuse_for_good(url: str, table: str) -> None:
    _create_tables(url, table)
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {table}_refused "
            f"CHECK (key <> '{STORE_REFUSED_KEY}')"
        )


def _drop_tables(url: str, table: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as db:
        for suffix in ("", "_meta", "_quarantine"):
            db.execute(f"DROP TABLE IF EXISTS {table}{suffix}")
