"""The partition lease rule, pure: when to create, take or renew a lease in the KV bucket, and
whether its holder may still acknowledge a write.

A partition's lease is one key of a JetStream KV bucket. Its value names the holder and when
the lease expires (the holder's wall clock when it sent the write, plus the TTL). Every write
is a compare-and-set: *create* when the key does not exist, *update* naming the revision the
writer last read. The value also carries the partition's **epoch**, the holder's fencing
token: acquiring sets it to one more than the epoch it read (on the revision it read, so two
contenders cannot both bump the same one), renewals carry it unchanged, and a release keeps
it (the key is overwritten as expired, not deleted). So only acquisitions move it, and every
owner's epoch is above every earlier owner's. A key whose epoch is unknown (deleted, or not
a lease value) counts as epoch = its revision: no epoch written to the key can exceed the
revision of the write that carried it, since each acquisition adds one and moves the
revision by at least one.

Clocks. A contender compares the recorded ``expires`` with its own wall clock, so the
holder's and the contender's clocks may disagree; the holder therefore stops acknowledging
``drift`` seconds before its lease ends by its own monotonic clock, counted from the moment it
*sent* the write (the write may land later; never earlier). With clocks apart by at most
``drift``, no contender can take the partition while the holder may still acknowledge.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs

#: Defaults: a lease lasts 10 s, is renewed every 2 s, and its holder stops acknowledging
#: 2 s before it ends (the clock-drift margin).
LEASE_TTL = 10.0
RENEW_EVERY = 2.0
DRIFT_MARGIN = 2.0


def check_timing(ttl: float, renew_every: float, drift: float) -> None:
    """Refuse timings under which a healthy holder would stop acknowledging between renewals:
    a renewal must land well inside ``ttl - drift``."""
    if not (ttl > 0 and renew_every > 0 and drift >= 0):
        raise ValueError(f"lease timings must be positive: ttl={ttl}, renew_every="
                         f"{renew_every}, drift={drift}")
    if 2 * renew_every > ttl - drift:
        raise ValueError(
            f"renew_every={renew_every}s leaves no room for one failed renewal inside "
            f"ttl - drift = {ttl - drift}s: renew at most every (ttl - drift) / 2"
        )


@attrs.frozen
class LeaseValue:
    """What a partition's KV key holds: who holds (or last held) it, until when (wall-clock
    seconds since the Unix epoch; 0 once released), and the epoch it was acquired with (0:
    unknown, as written by the slice before epochs were counted per partition)."""

    member: str
    expires: float
    epoch: int = 0

    def encode(self) -> bytes:
        return json.dumps(attrs.asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeaseValue | None:
        """The value, or None for bytes that are not one (a released or foreign key)."""
        try:
            fields: dict[str, Any] = json.loads(data)
            return cls(member=str(fields["member"]), expires=float(fields["expires"]),
                       epoch=int(fields.get("epoch", 0)))
        except (ValueError, TypeError, KeyError):
            return None


@attrs.frozen
class KvEntry:
    """A KV key as read: its value (None if deleted or unreadable) and its revision."""

    value: LeaseValue | None
    revision: int


class Step(enum.Enum):
    CREATE = "create"  # the key does not exist: create it (fails if someone else did)
    TAKE = "take"  # free, released or expired: update on the revision read
    WAIT = "wait"  # held by someone else, not expired


@attrs.frozen
class Decision:
    step: Step
    last: int = 0  # the revision a TAKE names
    holder: LeaseValue | None = None  # who is in the way (WAIT)
    epoch: int = 0  # the epoch a CREATE or TAKE writes
    # A TAKE of another member's lease that expired without a release: a take-over (the
    # holder died, hung or lost NATS); that member's name.
    taken_from: str | None = None


def next_epoch(entry: KvEntry | None) -> int:
    """The epoch of the next acquisition of a partition whose key reads ``entry``: one more
    than the recorded epoch, or than the key's revision when the epoch is unknown (every
    epoch ever written to the key is at most that revision)."""
    if entry is None:
        return 1
    if entry.value is not None and entry.value.epoch > 0:
        return entry.value.epoch + 1
    return entry.revision + 1


def decide_acquire(entry: KvEntry | None, member: str, now: float) -> Decision:
    """What ``member`` does to acquire a partition whose key reads ``entry`` at wall time
    ``now``. Its own unexpired lease counts as someone else's: a restarted member must not
    inherit an epoch whose writes it does not remember; it takes the lease afresh (a new
    revision, so a new epoch) only after that lease expired."""
    if entry is None:
        return Decision(Step.CREATE, epoch=next_epoch(None))
    if entry.value is None or entry.value.expires <= now:
        lapsed = (entry.value is not None and entry.value.expires > 0
                  and entry.value.member != member)
        return Decision(Step.TAKE, last=entry.revision, epoch=next_epoch(entry),
                        taken_from=entry.value.member if lapsed and entry.value else None)
    return Decision(Step.WAIT, holder=entry.value)


@attrs.frozen
class HeldLease:
    """A lease this member holds: ``epoch`` is the one it acquired it with, ``revision`` the
    latest (the one the next renewal names), ``sent`` the monotonic time the latest write was
    sent, whose lease lasts ``ttl`` from then."""

    partition: int
    epoch: int
    revision: int
    sent: float
    ttl: float
    drift: float
    taken_from: str | None = None  # the acquisition took over this member's lapsed lease

    def renewed(self, revision: int, sent: float) -> HeldLease:
        return attrs.evolve(self, revision=revision, sent=sent)

    def acknowledge_until(self) -> float:
        """The monotonic time after which the holder must not acknowledge a write."""
        return self.sent + self.ttl - self.drift

    def may_acknowledge(self, now: float) -> bool:
        """Whether the holder may still acknowledge at monotonic time ``now``."""
        return now < self.acknowledge_until()

    def renew_due(self, now: float, renew_every: float) -> bool:
        return now >= self.sent + renew_every
