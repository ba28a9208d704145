"""The lease rule, pure: who may (re)write a store table's lease row, and what a holder is.

The stores apply :func:`decide` inside one transaction; the runtime's ``LeaseKeeper``
(``_runtime/_lease.py``) takes, renews and releases the lease. See that module for why
there is a lease at all and why it does not fence.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import attrs

#: How long a lease lasts without renewal, in seconds; it is renewed every third of that.
LEASE_TTL = 30.0
#: Shorter leases would be renewed more often than a store round trip can be trusted to take.
MIN_LEASE_TTL = 1.0


@attrs.frozen
class LeaseHolder:
    """Who holds a table's lease, until when (wall-clock seconds since the Unix epoch)."""

    token: str
    host: str
    pid: int
    since: float
    expires: float

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LeaseHolder | None:
        """The holder a lease row names; None for a row that is not one (taken over)."""
        try:
            fields: dict[str, Any] = json.loads(text)
            return cls(token=str(fields["token"]), host=str(fields["host"]),
                       pid=int(fields["pid"]), since=float(fields["since"]),
                       expires=float(fields["expires"]))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self, now: float) -> str:
        """``host h, pid 12, since <UTC time>, expires in 25s``."""
        since = datetime.datetime.fromtimestamp(self.since, datetime.UTC)
        return (f"host {self.host}, pid {self.pid}, since {since:%Y-%m-%d %H:%M:%S} UTC, "
                f"its lease expires in {max(0.0, self.expires - now):.0f}s")


@attrs.frozen
class LeaseClaim:
    """What an instance asks for: its own ``token``, and optionally the token of a dead
    holder it may replace before that holder's lease expired (``take_over``)."""

    token: str
    host: str
    pid: int
    since: float
    ttl: float = LEASE_TTL
    take_over: str | None = None

    def holder(self, now: float) -> LeaseHolder:
        return LeaseHolder(self.token, self.host, self.pid, self.since, now + self.ttl)


def decide(current: LeaseHolder | None, claim: LeaseClaim, now: float, *,
           renewal: bool = False) -> LeaseHolder | None:
    """The rule: None if ``claim`` may (re)write the lease row now, else the holder in the way.

    A first acquisition takes a free, expired or its own lease, or the one it was told to
    take over. A renewal keeps only its own (or a released) lease: if anyone else holds it,
    even expired, this instance was taken over and must stop.
    """
    if current is None or current.token == claim.token:
        return None
    if renewal:
        return current
    if current.expires <= now or current.token == claim.take_over:
        return None
    return current


def held_message(table: str, holder: LeaseHolder, now: float) -> str:
    return (
        f"store table {table!r} is in use by another writebehind instance ({holder.describe(now)})"
        "; two instances on one table overwrite each other's writes. Stop that instance first, "
        "or give this one its own Config.store_table; if that instance is gone, its lease "
        "expires by itself and a new start then takes it over"
    )
