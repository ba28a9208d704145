"""One live instance per store table: a lease row in the store's meta table.

Two instances on one table silently fight (the later one's epoch wins every key, even over
the earlier one's newer writes), so a cache takes the table's lease when it starts, renews it
while it runs and releases it when it stops. A lease names its holder (host, pid, since) and
expires ``LEASE_TTL`` seconds after its last renewal: the lease of a holder that died without
releasing it is taken over once it expired, or at once when the holder was a process on this
host that no longer exists.

The lease does not fence: a holder paused past its expiry may still write. Epochs do that
(every store write is conditional on its version), so a late write never undoes a newer one.

:func:`decide` is the pure rule; the stores apply it inside one transaction
(``acquire_lease``/``renew_lease``/``release_lease``); :class:`LeaseKeeper` is the cache's side.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ._errors import LeaseHeld, LeaseLost, StoreUnavailable

log = logging.getLogger("writebehind")

#: How long a lease lasts without renewal, in seconds; it is renewed every third of that.
LEASE_TTL = 30.0


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

    @classmethod
    def new(cls, now: float, *, ttl: float = LEASE_TTL) -> LeaseClaim:
        return cls(token=secrets.token_hex(8), host=socket.gethostname(), pid=os.getpid(),
                   since=now, ttl=ttl)

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


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def held_message(table: str, holder: LeaseHolder, now: float) -> str:
    return (
        f"store table {table!r} is in use by another writebehind instance ({holder.describe(now)})"
        "; two instances on one table overwrite each other's writes. Stop that instance first, "
        "or give this one its own Config.store_table; if that instance is gone, its lease "
        "expires by itself and a new start then takes it over"
    )


Call = Callable[..., Any]


class LeaseKeeper:
    """The cache's side: take the lease at start, renew it, release it at the end.

    ``call(method_name, *args)`` runs a store method (in a worker thread for a blocking store);
    ``clock`` gives wall-clock seconds (a seam, so tests can move time).
    """

    def __init__(self, call: Call, table: str, *, clock: Callable[[], float] | None = None,
                 ttl: float | None = None) -> None:
        self._call = call
        self._table = table
        self._clock = clock or time.time
        self.claim = LeaseClaim.new(self._clock(), ttl=LEASE_TTL if ttl is None else ttl)

    async def acquire(self) -> None:
        """Take the lease or raise :class:`LeaseHeld` naming its holder."""
        holder = await self._call("acquire_lease", self.claim, self._clock())
        if (
            holder is not None
            and holder.host == self.claim.host
            and holder.pid != self.claim.pid
            and not pid_alive(holder.pid)
        ):
            # Its process is gone (killed, crashed): no need to wait out the lease.
            log.warning("taking over the lease of store table %r from pid %d on this host, "
                        "which no longer runs", self._table, holder.pid)
            self.claim = attrs.evolve(self.claim, take_over=holder.token)
            holder = await self._call("acquire_lease", self.claim, self._clock())
        if holder is not None:
            raise LeaseHeld(held_message(self._table, holder, self._clock()), holder=holder)

    async def keep(self) -> None:
        """Renew every third of the TTL until cancelled; raise :class:`LeaseLost` if another
        instance took the lease over. A store that is down is retried: the lease only lapses
        if it stays down for the rest of the TTL."""
        while True:
            await trio.sleep(self.claim.ttl / 3)
            try:
                holder = await self._call("renew_lease", self.claim, self._clock())
            except StoreUnavailable as exc:
                log.warning("could not renew the lease of store table %r (%s); retrying",
                            self._table, exc)
                continue
            if holder is not None:
                raise LeaseLost(
                    f"another writebehind instance took over store table {self._table!r} "
                    f"({holder.describe(self._clock())}) while this one ran: this instance "
                    "stops; what it had not flushed stays in its journal and replays at its "
                    "next start, where a newer write of the same key wins"
                )

    async def release(self) -> None:
        """Give the lease up (if still ours); best effort, shielded and bounded."""
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self._call("release_lease", self.claim)
            except Exception as exc:  # the lease then expires by itself
                log.warning("could not release the lease of store table %r (%s)",
                            self._table, exc)
