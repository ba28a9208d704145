"""Who is in the cluster, and what each member should host, pure (no I/O, no clock).

Every live member keeps a key in the cluster's member bucket whose value names it and the
wall-clock time it lapses (``expires``): it writes it again every renew interval, and a
graceful leave deletes it. A member reads the others' values and counts as live those whose
``expires`` is not yet ``drift`` seconds behind its own clock (the writer's clock may be
that far behind the reader's: a member is not declared dead early). Itself it always counts.

From the live members, rendezvous hashing (``_partitions.assign``) names each partition's
owner; a member hosts exactly the partitions that name it. :func:`plan` is the difference
between what a member hosts and what it should host. Membership only says who *should* own
a partition: the partition's lease says who *does*, so two members whose views differ for a
moment never both serve one (the second waits for the lease).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Set

import attrs

from ._partitions import assign, owned_by


@attrs.frozen
class MemberValue:
    """A member's key's value: its name and the wall-clock time it lapses."""

    member: str
    expires: float

    def encode(self) -> bytes:
        return json.dumps({"member": self.member, "expires": self.expires}).encode()

    @classmethod
    def decode(cls, data: bytes) -> MemberValue | None:
        """The value, or None for bytes that are not one (a key written by something else
        counts as no member)."""
        try:
            fields = json.loads(data)
            member, expires = fields["member"], float(fields["expires"])
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(member, str) or not member or not math.isfinite(expires):
            return None
        return cls(member, expires)


def member_key(member: str) -> str:
    """The bucket key of ``member``: a hash of its name (names hold characters KV keys may
    not, such as ``:``)."""
    return "m" + hashlib.blake2b(member.encode(), digest_size=10).hexdigest()


def live_members(values: Iterable[MemberValue], *, me: str, now: float,
                 drift: float) -> frozenset[str]:
    """The members counted live at wall-clock ``now``: ``me``, and each whose value has
    not lapsed by more than ``drift``."""
    return frozenset({me} | {v.member for v in values if now < v.expires + drift})


@attrs.frozen
class Plan:
    """What a member must change: the partitions to start hosting and to give up."""

    host: frozenset[int]
    unhost: frozenset[int]


def plan(partitions: int, live: Iterable[str], me: str, hosting: Set[int]) -> Plan:
    """From the live members, what ``me`` should start and stop hosting, given that it
    hosts (or is starting to host) ``hosting``."""
    mine = owned_by(assign(partitions, live), me)
    return Plan(host=frozenset(mine - hosting), unhost=frozenset(hosting - mine))
