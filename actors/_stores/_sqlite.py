"""The embedded default store: SQLite, driven from a store actor's worker thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from .._core._errors import ConfigError, SchemaMismatch, StoreFenced, StoreUnavailable
from .._core._lease import LeaseClaim, LeaseHolder, decide
from .._core._limits import SQLITE_LIMITS
from .._core._messages import Fence, Rejection, StoreRecord, Superseded
from . import _sql
from ._protocol import DISCARD, SCHEMA_VERSION, QuarantineRow, WriteOutcome, check_fence

_MAX_ROWS = 1024  # rows per upsert statement (4 parameters each)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/file.db`` or ``sqlite:////absolute/file.db`` (options after a
    ``?``, such as ``worker``, are not part of the path)."""
    rest = url[len("sqlite://"):].partition("?")[0]
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(
            f"Config.store {url!r} is not a SQLite URL; write 'sqlite:///relative.db' or "
            "'sqlite:////absolute/path.db'"
        )
    return Path(rest[1:])


class SQLiteStore:
    """The embedded default: one file, WAL mode, ``synchronous=FULL``."""

    blocking = True
    limits = SQLITE_LIMITS

    def __init__(self, path: str | Path, *, table: str = "writebehind_entries",
                 timeout: float = 30.0) -> None:
        if not table.isidentifier():
            raise ConfigError(f"store table name must be an identifier, got {table!r}")
        self.path = Path(path)
        self.table = table
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._statements: dict[int, str] = {}  # upsert SQL by row count
        self._max_rows = _MAX_ROWS
        self._fences_ready = False  # the fence table exists (created at the first fence)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f"{self!r} is not connected")
        return self._db

    def connect(self) -> None:
        self.close()
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            variables = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._max_rows = max(1, min(_MAX_ROWS, variables // 4))
            self._db = db
            self._ensure_schema()
        except sqlite3.Error as exc:
            self.close()
            raise StoreUnavailable(f"cannot open SQLite store {str(self.path)!r}: {exc}") from exc

    def _ensure_schema(self) -> None:
        db = self._conn()
        t = self.table
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {t}_meta (name TEXT PRIMARY KEY, value INTEGER)"
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {t} (key TEXT PRIMARY KEY, value BLOB, "
                "version INTEGER NOT NULL, deleted INTEGER NOT NULL) WITHOUT ROWID"
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {t}_quarantine (key TEXT, value BLOB, "
                "version INTEGER, reason TEXT, at TEXT DEFAULT CURRENT_TIMESTAMP, "
                "resolution TEXT)"
            )
            db.execute(
                f"INSERT OR IGNORE INTO {t}_meta VALUES ('schema_version', ?), ('epoch', 0)",
                (SCHEMA_VERSION,),
            )
            (found,) = db.execute(
                f"SELECT value FROM {t}_meta WHERE name = 'schema_version'"
            ).fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if found != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"SQLite store {str(self.path)!r} has schema version {found}, this writebehind "
                f"speaks {SCHEMA_VERSION}; upgrade writebehind or point it at another file"
            )

    def durability_settings(self) -> tuple[int, str]:
        """The connection's ``PRAGMA synchronous`` (2 is FULL) and ``journal_mode``: whether
        a commit it acknowledges survives a power loss."""
        db = self._conn()
        (synchronous,) = db.execute("PRAGMA synchronous").fetchone()
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        return int(synchronous), str(mode)

    def take_epoch(self) -> int:
        row = self._conn().execute(_sql.take_epoch(self.table)).fetchone()
        return int(row[0])

    def write_batch(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        return self._write(records, None)

    def write_batch_fenced(self, records: Sequence[StoreRecord], fence: Fence) -> WriteOutcome:
        """:meth:`write_batch`, in one transaction with the check of ``fence``: raises
        :class:`StoreFenced` (nothing written) if the partition has a newer epoch."""
        if not self._fences_ready:
            self._create_fences()
        return self._write(records, fence)

    def _create_fences(self) -> None:
        try:
            self._conn().execute(_sql.create_fences(self.table))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite cannot create the fence table: {exc}") from exc
        self._fences_ready = True

    def _fence(self, fence: Fence) -> None:
        """In the open transaction: record the batch's epoch, refuse an older one."""
        (current,) = self._conn().execute(
            _sql.fence(self.table, "?"), (fence.partition, fence.epoch)
        ).fetchone()
        check_fence(fence, int(current), f"SQLite store {str(self.path)!r}")

    def _write(self, records: Sequence[StoreRecord], fence: Fence | None) -> WriteOutcome:
        # Multi-row statements, not executemany: the driver releases and retakes the GIL
        # around every statement step, so executemany hands the GIL over twice per row, and
        # while the event loop's thread is busy each handover waits for its switch interval
        # (measured: 100-170 rows/s against a busy thread, 42k with one statement per batch).
        db = self._conn()
        if not records:
            return ()
        chunks = _chunks(len(records), self._max_rows)
        applied = 0
        try:
            if len(chunks) == 1 and fence is None:  # one statement: one autocommit transaction
                applied = db.execute(self._upsert(len(records)), _flatten(records)).rowcount
            else:
                db.execute("BEGIN IMMEDIATE")
                if fence is not None:
                    self._fence(fence)
                start = 0
                for size in chunks:
                    cursor = db.execute(self._upsert(size), _flatten(records[start:start + size]))
                    applied += cursor.rowcount
                    start += size
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if not _sqlite_refusal(exc):
                raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
            return self._write_one_by_one(records, fence)
        except StoreFenced:
            db.execute("ROLLBACK")
            raise
        if applied >= len(records):
            return ()
        # Some upserts did not apply: the store holds those keys at a version at least as
        # new. (Versions only move forward, so reading them after the commit is safe.)
        return self._superseded(records)

    def _superseded(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        stored = self._versions(list(dict.fromkeys(r.key for r in records)))
        return tuple(
            Superseded(r.key, r.version) for r in records if stored.get(r.key, 0) > r.version
        )

    def _versions(self, keys: list[str]) -> dict[str, int]:
        db, found = self._conn(), dict[str, int]()
        for start in range(0, len(keys), self._max_rows):
            chunk = keys[start:start + self._max_rows]
            rows = db.execute(
                f"SELECT key, version FROM {self.table} WHERE key IN "
                f"({','.join('?' * len(chunk))})", chunk,
            )
            found.update(rows.fetchall())
        return found

    def _write_one_by_one(self, records: Sequence[StoreRecord],
                          fence: Fence | None) -> WriteOutcome:
        """A permanent error somewhere in the batch: land what can land, quarantine the rest
        (a record an operator discarded is answered as superseded)."""
        db = self._conn()
        t = self.table
        outcome: list[Rejection | Superseded] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            if fence is not None:
                self._fence(fence)
            for r in records:
                db.execute("SAVEPOINT one")
                try:
                    db.execute(self._upsert(1), _flatten((r,)))
                    db.execute("RELEASE one")
                except sqlite3.Error as exc:
                    db.execute("ROLLBACK TO one")
                    db.execute("RELEASE one")
                    if not _sqlite_refusal(exc):
                        raise
                    resolution = db.execute(
                        f"SELECT resolution FROM {t}_quarantine WHERE key = ? AND version = ?",
                        (r.key, r.version),
                    ).fetchone()
                    if resolution is not None and resolution[0] == DISCARD:
                        outcome.append(Superseded(r.key, r.version))
                        continue
                    reason = f"{type(exc).__name__}: {exc}"
                    outcome.append(Rejection(r.key, r.version, reason))
                    if resolution is None:
                        self._quarantine(r, reason)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
        except StoreFenced:
            db.execute("ROLLBACK")
            raise
        refused = {(r.key, r.version) for r in outcome}
        landed = [r for r in records if (r.key, r.version) not in refused]
        return tuple(outcome) + (self._superseded(landed) if landed else ())

    def _quarantine(self, record: StoreRecord, reason: str) -> None:
        """Record a refusal (in the batch's transaction). A value too big for the store is
        too big for this table too: then only the key, version and reason are kept (the
        journal keeps the record itself)."""
        db = self._conn()
        sql = _sql.quarantine(self.table, "?")
        db.execute("SAVEPOINT quarantine")
        try:
            db.execute(sql, (record.key, record.value, record.version, reason))
        except sqlite3.Error as exc:
            db.execute("ROLLBACK TO quarantine")
            if not _sqlite_refusal(exc):
                raise
            db.execute(sql, (record.key, None, record.version, reason + " (value not kept)"))
        db.execute("RELEASE quarantine")

    def quarantine_rows(self) -> list[QuarantineRow]:
        """Every row of the quarantine table, oldest first."""
        rows = self._conn().execute(
            f"SELECT key, version, reason, at, resolution FROM {self.table}_quarantine "
            "ORDER BY at, rowid"
        )
        return [QuarantineRow(k, v, reason, str(at), res) for k, v, reason, at, res in rows]

    def resolve_quarantine(self, action: str, keys: Sequence[str] | None = None) -> int:
        """``discard``: mark pending rows (of ``keys``, or all) given up; ``retry``: delete
        rows (pending or discarded), so the next write of the record is tried afresh."""
        db = self._conn()
        where, params = _sql.key_filter(keys, "?")
        sql = _sql.resolve_quarantine(self.table, action)
        try:
            return int(db.execute(sql + where, params).rowcount)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite quarantine update failed: {exc}") from exc

    def _upsert(self, rows: int) -> str:
        sql = self._statements.get(rows)
        if sql is None:
            sql = self._statements[rows] = _sql.upsert(self.table, _sql.values(rows, "?"))
        return sql

    def read(self, key: str) -> StoreRecord | None:
        row = self._conn().execute(
            f"SELECT value, version, deleted FROM {self.table} WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        value, version, deleted = row
        return StoreRecord(key, None if deleted else bytes(value), version)

    def read_all(self) -> dict[str, StoreRecord]:
        rows = self._conn().execute(f"SELECT key, value, version, deleted FROM {self.table}")
        return {
            k: StoreRecord(k, None if d else bytes(v), ver) for k, v, ver, d in rows.fetchall()
        }

    # -- the table's lease (see _lease.py): a row 'lease' in the meta table, its value the
    # holder as JSON (SQLite keeps text in an INTEGER column as text).

    def _lease_transaction(self, claim: LeaseClaim, now: float | None,
                           renewal: bool) -> LeaseHolder | None:
        db = self._conn()
        t = self.table
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(f"SELECT value FROM {t}_meta WHERE name = 'lease'").fetchone()
                current = LeaseHolder.from_json(str(row[0])) if row is not None else None
                if now is None:  # release: only our own
                    if current is not None and current.token == claim.token:
                        db.execute(f"DELETE FROM {t}_meta WHERE name = 'lease'")
                    blocker = None
                else:
                    blocker = decide(current, claim, now, renewal=renewal)
                    if blocker is None:
                        db.execute(
                            f"INSERT INTO {t}_meta (name, value) VALUES ('lease', ?) "
                            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            (claim.holder(now).to_json(),),
                        )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite lease update failed: {exc}") from exc
        return blocker

    def acquire_lease(self, claim: LeaseClaim, now: float) -> LeaseHolder | None:
        """Take the table's lease; None if taken, else the live holder in the way."""
        return self._lease_transaction(claim, now, renewal=False)

    def renew_lease(self, claim: LeaseClaim, now: float) -> LeaseHolder | None:
        """Extend our lease; None if still ours, else who took it over."""
        return self._lease_transaction(claim, now, renewal=True)

    def release_lease(self, claim: LeaseClaim) -> None:
        """Give our lease up (someone else's is left alone)."""
        self._lease_transaction(claim, None, renewal=False)

    def close(self) -> None:
        self._fences_ready = False  # a reconnect may find another file: check again
        if self._db is not None:
            db, self._db = self._db, None
            db.close()


def _sqlite_refusal(exc: sqlite3.Error) -> bool:
    """Will SQLite refuse this record however often it is retried? (A value over its length
    limit, a constraint; not a busy or locked database, a full disk or an I/O error.)"""
    return isinstance(exc, sqlite3.DataError | sqlite3.IntegrityError)


def _chunks(count: int, limit: int) -> list[int]:
    """Statement sizes for ``count`` rows: ``limit``-row statements, then powers of two, so
    a handful of statement shapes (and prepared statements) serve every batch size."""
    sizes = [limit] * (count // limit)
    rest = count % limit
    bit = 1 << max(0, rest.bit_length() - 1)
    while rest:
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
        bit >>= 1
    return sizes


def _flatten(records: Sequence[StoreRecord]) -> list[object]:
    return [
        field
        for r in records
        for field in (r.key, r.value, r.version, r.value is None)
    ]
