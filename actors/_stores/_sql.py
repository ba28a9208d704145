"""The SQL both stores speak: SQLite and PostgreSQL run the same statements on the same
tables (the data table ``key, value, version, deleted``, its ``_meta`` and ``_quarantine``).

Where the dialects differ, the caller says how, and nothing else: the placeholder (``mark``:
SQLite's ``?``, psycopg's ``%s``) and where the upsert's rows come from (SQLite: a
multi-row ``VALUES`` list; PostgreSQL: its ``COPY``-filled staging table).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._protocol import DISCARD


def upsert(table: str, source: str) -> str:
    """The versioned upsert of rows ``(key, value, version, deleted)`` from ``source`` (a
    ``VALUES`` list or a ``SELECT``). A stored row is overwritten only by a newer version:
    a key only moves forward, so an older write (a retry, a replay, a reordered batch) never
    undoes a newer one, and a row that did not move is not counted in the statement's
    ``rowcount``."""
    return (
        f"INSERT INTO {table} (key, value, version, deleted) {source} "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
        "version = excluded.version, deleted = excluded.deleted "
        f"WHERE excluded.version > {table}.version"
    )


def values(rows: int, mark: str) -> str:
    """``VALUES`` and ``rows`` rows of four ``mark`` placeholders each."""
    return "VALUES " + ",".join((f"({mark}, {mark}, {mark}, {mark})",) * rows)


def create_fences(table: str) -> str:
    """The fence table of cluster mode: per partition, the newest epoch a batch carried."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table}_fences "
        "(partition_id INTEGER PRIMARY KEY, epoch BIGINT NOT NULL)"
    )


def fence(table: str, mark: str) -> str:
    """Record a batch's ``(partition, epoch)``, keeping the newer of it and the recorded
    epoch, and return the epoch the partition holds now: the batch is fenced out if that is
    newer than its own. One statement that always writes the row, so it holds the row's lock
    to the end of the batch's transaction: an owner's batch and a newer owner's are ordered
    by it, and once a newer epoch committed no older batch gets past."""
    return (
        f"INSERT INTO {table}_fences (partition_id, epoch) VALUES ({mark}, {mark}) "
        "ON CONFLICT (partition_id) DO UPDATE SET epoch = CASE "
        f"WHEN excluded.epoch > {table}_fences.epoch THEN excluded.epoch "
        f"ELSE {table}_fences.epoch END RETURNING epoch"
    )


def take_epoch(table: str) -> str:
    """Count the meta table's epoch up by one, returning the new value."""
    return f"UPDATE {table}_meta SET value = value + 1 WHERE name = 'epoch' RETURNING value"


def quarantine(table: str, mark: str) -> str:
    """Record a refused record: parameters ``(key, value, version, reason)``."""
    return f"INSERT INTO {table}_quarantine (key, value, version, reason) " + values(1, mark)


def resolve_quarantine(table: str, action: str) -> str:
    """``discard``: mark pending rows given up; ``retry``: delete rows (pending or
    discarded). Ends in a ``WHERE`` that :func:`key_filter` may narrow."""
    if action == DISCARD:
        return f"UPDATE {table}_quarantine SET resolution = 'discard' WHERE resolution IS NULL"
    if action == "retry":
        return f"DELETE FROM {table}_quarantine WHERE 1 = 1"
    raise ValueError(f"unknown quarantine action {action!r}: 'discard' or 'retry'")


def key_filter(keys: Sequence[str] | None, mark: str) -> tuple[str, list[object]]:
    """`` AND key IN (...)`` and its parameters, or nothing for every key."""
    if keys is None:
        return "", []
    if not keys:
        return " AND 1 = 0", []
    return f" AND key IN ({', '.join([mark] * len(keys))})", list(keys)
