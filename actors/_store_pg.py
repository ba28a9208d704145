"""The PostgreSQL store: psycopg 3's sync API, driven from a store actor's worker thread.

One connection per store actor. Every batch is one transaction: ``COPY`` (binary) into a
per-connection temporary table, then one ``INSERT ... SELECT ... ON CONFLICT`` versioned upsert
that only moves a key forward (``WHERE excluded.version > stored.version``).

Why COPY: measured side by side in one run (``tests/postgres/bench_flush.py``; PostgreSQL 15 on
loopback, 512-row batches of 100-byte values, 2-core machine under load), three rounds each,
three runs: COPY-staged 31-36k rows/s, a multi-row upsert from ``unnest`` of four arrays 24-35k,
``executemany`` in pipeline mode 24-26k, one upsert per transaction (write-through) 250-380.
COPY streams rows without building per-row SQL parameters, and the upsert is one statement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ._config import mask_url
from ._errors import ConfigError, SchemaMismatch, StoreUnavailable
from ._messages import Rejection, StoreRecord
from ._store import SCHEMA_VERSION

# Per-connection staging table for COPY; emptied by every commit.
_STAGE = "writebehind_stage"

# SQLSTATE classes and codes that mean "try again on a fresh connection".
_TRANSIENT_CLASSES = ("08", "53", "57", "40")  # connection, resources, operator, rollback
_TRANSIENT_CODES = {"55P03"}  # lock_not_available


def _is_transient(exc: BaseException) -> bool:
    import psycopg

    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_CODES


class PostgresStore:
    """A table of versioned rows, its meta table (schema version, epoch) and a quarantine."""

    blocking = True

    def __init__(self, url: str, *, table: str = "writebehind_entries",
                 timeout: float = 30.0) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", table):
            raise ConfigError(
                f"Config.store_table must be a lower-case SQL identifier (at most 41 "
                f"characters), got {table!r}"
            )
        self.url = url
        self.table = table
        self.timeout = timeout
        self._conn: Any = None

    def __repr__(self) -> str:
        return f"PostgresStore({mask_url(self.url)!r}, table={self.table!r})"

    def _db(self) -> Any:
        if self._conn is None or self._conn.closed:
            raise StoreUnavailable(f"{self!r} is not connected")
        return self._conn

    def _fail(self, what: str, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"PostgreSQL {what} failed ({type(exc).__name__}): "
                                f"{str(exc).strip() or 'no message'}")

    def connect(self) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "Config.store is a PostgreSQL URL but psycopg is not installed; "
                "install writebehind[postgres]"
            ) from None
        self.close()
        ms = int(self.timeout * 1000)
        try:
            self._conn = psycopg.connect(
                self.url, autocommit=False, connect_timeout=max(1, int(self.timeout)),
                application_name=f"writebehind:{self.table}",
                options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
            )
            self._ensure_schema()
        except psycopg.Error as exc:
            self.close()
            raise self._fail(f"connect to {mask_url(self.url)}", exc) from None

    def _ensure_schema(self) -> None:
        db = self._db()
        t = self.table
        with db.transaction(), db.cursor() as cur:
            # Two instances starting at once must not race on CREATE TABLE.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (t,))
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {t}_meta (name text PRIMARY KEY, value bigint)"
            )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, value bytea, "
                "version bigint NOT NULL, deleted boolean NOT NULL)"
            )
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {t}_quarantine (key text, value bytea, "
                "version bigint, reason text, at timestamptz DEFAULT now())"
            )
            cur.execute(
                f"INSERT INTO {t}_meta VALUES ('schema_version', %s), ('epoch', 0) "
                "ON CONFLICT (name) DO NOTHING",
                (SCHEMA_VERSION,),
            )
            cur.execute(f"SELECT value FROM {t}_meta WHERE name = 'schema_version'")
            (found,) = cur.fetchone()
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (key text, value bytea, "
                "version bigint, deleted boolean) ON COMMIT DELETE ROWS"
            )
        if found != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"PostgreSQL table {t!r} has schema version {found}, this writebehind speaks "
                f"{SCHEMA_VERSION}; upgrade writebehind or set Config.store_table to another name"
            )

    def take_epoch(self) -> int:
        return int(self._run(
            "take an epoch",
            f"UPDATE {self.table}_meta SET value = value + 1 WHERE name = 'epoch' "
            "RETURNING value",
            (),
        )[0][0])

    def _run(self, what: str, sql: str, params: Sequence[Any]) -> list[Any]:
        import psycopg

        db = self._db()
        try:
            with db.transaction(), db.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        except psycopg.Error as exc:
            if _is_transient(exc):
                raise self._fail(what, exc) from None
            raise

    def _upsert_sql(self, source: str) -> str:
        t = self.table
        return (
            f"INSERT INTO {t} (key, value, version, deleted) {source} "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "version = excluded.version, deleted = excluded.deleted "
            f"WHERE excluded.version > {t}.version"
        )

    def write_batch(self, records: Sequence[StoreRecord]) -> tuple[Rejection, ...]:
        import psycopg

        newest: dict[str, StoreRecord] = {}
        for r in records:  # one row per key: ON CONFLICT may not touch a row twice
            if r.key not in newest or r.version > newest[r.key].version:
                newest[r.key] = r
        rows = list(newest.values())
        db = self._db()
        try:
            with db.transaction(), db.cursor() as cur:
                with cur.copy(f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "bytea", "int8", "bool"])
                    for r in rows:
                        copy.write_row((r.key, r.value, r.version, r.value is None))
                cur.execute(self._upsert_sql(f"SELECT * FROM {_STAGE}"))
            return ()
        except psycopg.Error as exc:
            if _is_transient(exc):
                raise self._fail("batch write", exc) from None
        return self._write_one_by_one(rows)

    def _write_one_by_one(self, rows: Sequence[StoreRecord]) -> tuple[Rejection, ...]:
        """A permanent error somewhere in the batch: land what can land, quarantine the rest."""
        import psycopg

        db = self._db()
        rejected: list[Rejection] = []
        try:
            with db.transaction(), db.cursor() as cur:
                for row in rows:
                    try:
                        with db.transaction():  # a savepoint per record
                            cur.execute(
                                self._upsert_sql("VALUES (%s, %s, %s, %s)"),
                                (row.key, row.value, row.version, row.value is None),
                            )
                    except psycopg.Error as exc:
                        if _is_transient(exc):
                            raise
                        reason = f"{type(exc).__name__}: {str(exc).strip()}"
                        rejected.append(Rejection(row.key, row.version, reason))
                        cur.execute(
                            f"INSERT INTO {self.table}_quarantine (key, value, version, reason) "
                            "VALUES (%s, %s, %s, %s)",
                            (row.key.replace("\x00", "\\x00"), row.value, row.version, reason),
                        )
        except psycopg.Error as exc:
            raise self._fail("batch write", exc) from None
        return tuple(rejected)

    def read(self, key: str) -> StoreRecord | None:
        if "\x00" in key:
            return None  # PostgreSQL text cannot hold NUL: such a key was never stored
        rows = self._run(
            "read", f"SELECT value, version, deleted FROM {self.table} WHERE key = %s", (key,)
        )
        if not rows:
            return None
        value, version, deleted = rows[0]
        return StoreRecord(key, None if deleted else bytes(value), version)

    def read_all(self) -> dict[str, StoreRecord]:
        rows = self._run(
            "read", f"SELECT key, value, version, deleted FROM {self.table}", ()
        )
        return {k: StoreRecord(k, None if d else bytes(v), ver) for k, v, ver, d in rows}

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception:
                pass

