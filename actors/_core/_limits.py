"""Sizes the configuration checks before anything runs: what one journal record can carry
and what each kind of store can index. Pure data, shared by the layers that enforce it."""

from __future__ import annotations

import attrs

#: A journal record's payload without its key and value bytes (sequence, version, key and
#: value lengths); ``_journal/_codec.py`` checks its own layout against it.
RECORD_OVERHEAD = 24
#: Anything longer is a damaged length field, not a record: the codec refuses it.
MAX_PAYLOAD = 1 << 30


@attrs.frozen
class StoreLimits:
    """What the configured store can hold, checked before a write is acknowledged."""

    name: str
    max_key_bytes: int | None = None  # None: no limit below the journal's own
    nul_in_keys: bool = True


#: PostgreSQL's btree index holds an entry of at most ~2700 bytes (a third of an 8 KiB page,
#: less the tuple header). Keys are bounded well below it: the index entry also carries the
#: text header and alignment, and a smaller block size lowers the limit.
POSTGRES_MAX_KEY_BYTES = 2000

POSTGRES_LIMITS = StoreLimits(
    "PostgreSQL", max_key_bytes=POSTGRES_MAX_KEY_BYTES, nul_in_keys=False
)
SQLITE_LIMITS = StoreLimits("SQLite")


def store_limits(url: str) -> StoreLimits:
    """The limits of the store ``url`` names (a store of unknown kind: none known)."""
    if url.startswith(("postgresql://", "postgres://")):
        return POSTGRES_LIMITS
    return SQLITE_LIMITS if url.startswith("sqlite://") else StoreLimits("store")
