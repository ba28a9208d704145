"""Partitions and who owns them, pure: a key's partition, and rendezvous assignment.

The cluster splits the key space into a fixed number of partitions (``partition_of``); each
partition belongs to one live member. The assignment is rendezvous (highest-random-weight)
hashing: every member scores every partition with a hash of both, and the highest score
wins. It needs no coordination beyond agreeing on the member list, and when a member joins or
leaves only the partitions it wins or held move: about ``partitions / N`` of them, and no
partition moves between two members that both stay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def partition_of(key: str, partitions: int) -> int:
    """The partition ``key`` belongs to, in ``range(partitions)``; stable across processes
    and Python versions (no ``hash()``: that is salted per process)."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def weight(member: str, partition: int) -> int:
    """The rendezvous score of ``member`` for ``partition``: a 64-bit hash of both."""
    digest = hashlib.blake2b(
        f"{partition}\x00{member}".encode(), digest_size=8, person=b"wb-rendezvous"
    ).digest()
    return int.from_bytes(digest, "big")


def owner(partition: int, members: Iterable[str]) -> str | None:
    """The member that owns ``partition``: the highest score, ties broken by name; None if
    there are no members."""
    best: tuple[int, str] | None = None
    for member in members:
        score = (weight(member, partition), member)
        if best is None or score > best:
            best = score
    return None if best is None else best[1]


def assign(partitions: int, members: Iterable[str]) -> dict[int, str]:
    """Every partition's owner among ``members`` (empty when there are none)."""
    live = sorted(set(members))
    if not live:
        return {}
    return {p: owner(p, live) or "" for p in range(partitions)}


def owned_by(assignment: Mapping[int, str], member: str) -> frozenset[int]:
    """The partitions ``assignment`` gives ``member``."""
    return frozenset(p for p, m in assignment.items() if m == member)


def moves(before: Mapping[int, str], after: Mapping[int, str]) -> dict[int, tuple[str, str]]:
    """The partitions whose owner changed: ``{partition: (old, new)}``."""
    return {p: (before[p], after[p]) for p in before.keys() & after.keys()
            if before[p] != after[p]}
