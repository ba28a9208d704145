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

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from .._core._errors import LeaseHeld, LeaseLost, StoreUnavailable
from .._core._lease import LEASE_TTL, LeaseClaim, held_message

log = logging.getLogger("writebehind")


def new_claim(now: float, *, ttl: float = LEASE_TTL) -> LeaseClaim:
    """A fresh claim for this process: a random token, this host and pid, since ``now``."""
    return LeaseClaim(token=secrets.token_hex(8), host=socket.gethostname(), pid=os.getpid(),
                      since=now, ttl=ttl)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


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
        self.claim = new_claim(self._clock(), ttl=LEASE_TTL if ttl is None else ttl)

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
