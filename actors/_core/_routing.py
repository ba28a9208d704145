"""Which shard owns a key, and how a version is made: both must agree across restarts,
so they live in one place."""

from __future__ import annotations

import zlib

#: A version is ``epoch << EPOCH_SHIFT | counter``: every start takes a new epoch from the
#: store, so a new incarnation's versions sort above everything an older one wrote.
EPOCH_SHIFT = 40


def shard_of(key: str, shards: int) -> int:
    """The shard that owns ``key``: CRC-32 of its UTF-8 bytes, modulo the shard count."""
    return shard_of_utf8(key.encode("utf-8"), shards)


def shard_of_utf8(raw: bytes, shards: int) -> int:
    """:func:`shard_of` for a key already encoded (the put path encodes it once)."""
    return zlib.crc32(raw) % shards


def make_version(epoch: int, counter: int) -> int:
    """The version of an incarnation's ``counter``-th write in ``epoch``."""
    return epoch << EPOCH_SHIFT | counter
