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

from .._core._config import mask_url
from .._core._errors import ConfigError, SchemaMismatch, StoreUnavailable
from .._core._lease import LeaseClaim, LeaseHolder, decide
from .._core._limits import POSTGRES_LIMITS
from .._core._messages import Fence, Rejection, StoreRecord, Superseded
from . import _sql
from ._protocol import DISCARD, SCHEMA_VERSION, QuarantineRow, WriteOutcome, check_fence

# Per-connection staging table for COPY; emptied by every commit.
_STAGE = "writebehind_stage"

# SQLSTATE classes and codes that mean "try again on a fresh connection".
_TRANSIENT_CLASSES = ("08", "53", "57", "40")  # connection, resources, operator, rollback
_TRANSIENT_CODES = {"55P03"}  # lock_not_available
# SQLSTATE classes that refuse a record for good, however often it is retried: data
# exceptions (22: a NUL in text, a bad encoding), integrity constraints (23) and program
# limits (54: "index row requires N bytes, maximum size is 2712"). psycopg maps class 54 to
# OperationalError, the base class of connection failures: the SQLSTATE decides first.
_PERMANENT_CLASSES = ("22", "23", "54")


def _is_transient(exc: BaseException) -> bool:
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith(_PERMANENT_CLASSES):
        return False
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_CODES


def _stored_key(key: str) -> str:
    """``key`` as the quarantine table's text column holds it (PostgreSQL text has no NUL)."""
    return key.replace("\x00", "\\x00")


class PostgresStore:
    """A table of versioned rows, its meta table (schema version, epoch) and a quarantine."""

    blocking = True
    limits = POSTGRES_LIMITS

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
        self._fences_ready = False  # the fence table exists (created at the first fence)

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
            # Added after the first release: an operator's decision on a quarantined record.
            cur.execute(
                f"ALTER TABLE {t}_quarantine ADD COLUMN IF NOT EXISTS resolution text"
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
            _sql.take_epoch(self.table),
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

    def write_batch(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        return self._write(records, None)

    def write_batch_fenced(self, records: Sequence[StoreRecord], fence: Fence) -> WriteOutcome:
        """:meth:`write_batch`, in one transaction with the check of ``fence``: raises
        :class:`StoreFenced` (nothing written) if the partition has a newer epoch."""
        if not self._fences_ready:
            import psycopg

            db = self._db()
            try:
                with db.transaction(), db.cursor() as cur:
                    # Two members' first batches must not race on CREATE TABLE.
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                (f"{self.table}:fences",))
                    cur.execute(_sql.create_fences(self.table))
            except psycopg.Error as exc:
                raise self._fail("create the fence table", exc) from None
            self._fences_ready = True
        return self._write(records, fence)

    def _fence(self, cur: Any, fence: Fence) -> None:
        """In the open transaction: record the batch's epoch, refuse an older one (raising
        inside ``db.transaction()`` rolls the batch back)."""
        cur.execute(_sql.fence(self.table, "%s"), (fence.partition, fence.epoch))
        (current,) = cur.fetchone()
        check_fence(fence, int(current), f"PostgreSQL table {self.table!r}")

    def _write(self, records: Sequence[StoreRecord], fence: Fence | None) -> WriteOutcome:
        import psycopg

        newest: dict[str, StoreRecord] = {}
        for r in records:  # one row per key: ON CONFLICT may not touch a row twice
            if r.key not in newest or r.version > newest[r.key].version:
                newest[r.key] = r
        rows = list(newest.values())
        db = self._db()
        try:
            with db.transaction(), db.cursor() as cur:
                if fence is not None:
                    self._fence(cur, fence)
                with cur.copy(f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "bytea", "int8", "bool"])
                    for r in rows:
                        copy.write_row((r.key, r.value, r.version, r.value is None))
                cur.execute(_sql.upsert(self.table, f"SELECT * FROM {_STAGE}"))
                if cur.rowcount >= len(rows):
                    return ()
                # Some did not apply: which of them lost to a newer version (not a retry of
                # a version the store already holds)? Before the commit empties the stage.
                cur.execute(
                    f"SELECT s.key, s.version FROM {_STAGE} s JOIN {self.table} t "
                    "ON t.key = s.key WHERE t.version > s.version"
                )
                return tuple(Superseded(key, version) for key, version in cur.fetchall())
        except psycopg.Error as exc:
            if _is_transient(exc):
                raise self._fail("batch write", exc) from None
        return self._write_one_by_one(rows, fence)

    def _write_one_by_one(self, rows: Sequence[StoreRecord],
                          fence: Fence | None) -> WriteOutcome:
        """A permanent error somewhere in the batch: land what can land, quarantine the rest
        (a record an operator discarded is answered as superseded)."""
        import psycopg

        db = self._db()
        t = self.table
        rejected: list[Rejection] = []
        superseded: list[Superseded] = []
        try:
            with db.transaction(), db.cursor() as cur:
                if fence is not None:
                    self._fence(cur, fence)
                for row in rows:
                    try:
                        with db.transaction():  # a savepoint per record
                            cur.execute(
                                _sql.upsert(t, _sql.values(1, "%s")),
                                (row.key, row.value, row.version, row.value is None),
                            )
                            if cur.rowcount == 0:
                                cur.execute(
                                    f"SELECT 1 FROM {t} WHERE key = %s AND version > %s",
                                    (row.key, row.version),
                                )
                                if cur.fetchone() is not None:
                                    superseded.append(Superseded(row.key, row.version))
                    except psycopg.Error as exc:
                        if _is_transient(exc):
                            raise
                        key = _stored_key(row.key)
                        cur.execute(
                            f"SELECT resolution FROM {t}_quarantine "
                            "WHERE key = %s AND version = %s",
                            (key, row.version),
                        )
                        found = cur.fetchone()
                        if found is not None and found[0] == DISCARD:
                            superseded.append(Superseded(row.key, row.version))
                            continue
                        reason = f"{type(exc).__name__}: {str(exc).strip()}"
                        rejected.append(Rejection(row.key, row.version, reason))
                        if found is None:
                            cur.execute(
                                _sql.quarantine(t, "%s"),
                                (key, row.value, row.version, reason),
                            )
        except psycopg.Error as exc:
            raise self._fail("batch write", exc) from None
        return tuple(rejected) + tuple(superseded)

    def quarantine_rows(self) -> list[QuarantineRow]:
        """Every row of the quarantine table, oldest first."""
        rows = self._run(
            "read the quarantine",
            f"SELECT key, version, reason, at, resolution FROM {self.table}_quarantine "
            "ORDER BY at",
            (),
        )
        return [QuarantineRow(k, v, reason, str(at), res) for k, v, reason, at, res in rows]

    def resolve_quarantine(self, action: str, keys: Sequence[str] | None = None) -> int:
        """``discard``: mark pending rows (of ``keys``, or all) given up; ``retry``: delete
        rows (pending or discarded), so the next write of the record is tried afresh."""
        where, params = _sql.key_filter(
            None if keys is None else [_stored_key(k) for k in keys], "%s"
        )
        sql = _sql.resolve_quarantine(self.table, action) + where + " RETURNING 1"
        return len(self._run(f"{action} quarantined records", sql, params))

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

    # -- the table's lease (see _lease.py): a row 'lease' in the meta table; its value is the
    # expiry (ms since the Unix epoch), its ``detail`` column (added on first use) the holder.

    def _lease_transaction(self, claim: LeaseClaim, now: float | None, renewal: bool,
                           *, first: bool = False) -> LeaseHolder | None:
        import psycopg

        db = self._db()
        t = self.table
        try:
            with db.transaction(), db.cursor() as cur:
                if first:
                    cur.execute(f"ALTER TABLE {t}_meta ADD COLUMN IF NOT EXISTS detail text")
                # Serializes lease changes, including the first insert of the row.
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{t}:lease",))
                cur.execute(f"SELECT detail FROM {t}_meta WHERE name = 'lease'")
                row = cur.fetchone()
                current = LeaseHolder.from_json(row[0]) if row and row[0] else None
                if now is None:  # release: only our own
                    if current is not None and current.token == claim.token:
                        cur.execute(f"DELETE FROM {t}_meta WHERE name = 'lease'")
                    return None
                blocker = decide(current, claim, now, renewal=renewal)
                if blocker is None:
                    holder = claim.holder(now)
                    cur.execute(
                        f"INSERT INTO {t}_meta (name, value, detail) VALUES ('lease', %s, %s) "
                        "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                        "detail = excluded.detail",
                        (int(holder.expires * 1000), holder.to_json()),
                    )
                return blocker
        except psycopg.Error as exc:
            raise self._fail("lease update", exc) from None

    def acquire_lease(self, claim: LeaseClaim, now: float) -> LeaseHolder | None:
        """Take the table's lease; None if taken, else the live holder in the way."""
        return self._lease_transaction(claim, now, renewal=False, first=True)

    def renew_lease(self, claim: LeaseClaim, now: float) -> LeaseHolder | None:
        """Extend our lease; None if still ours, else who took it over."""
        return self._lease_transaction(claim, now, renewal=True)

    def release_lease(self, claim: LeaseClaim) -> None:
        """Give our lease up (someone else's is left alone)."""
        self._lease_transaction(claim, None, renewal=False)

    def close(self) -> None:
        self._fences_ready = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception:
                pass

