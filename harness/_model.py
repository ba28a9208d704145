"""The model of the durability contract: pure, per ack mode.

It sees the workload from the outside: every write is *issued*, then *acknowledged*, *refused*
(it raised before anything happened: bad input, ``Overloaded``) or *uncertain* (it raised in
flight, or a crash cut it off: it may or may not have happened). Writes to one key must be
issued one at a time (the workload's job), so per key they are totally ordered.

After recovery and drain, the store must hold for every key the value of its last acknowledged
write, or of a write issued after it whose outcome is uncertain — deletes included (``None``:
absent). A read must return the same (read-your-writes), and reads are *monotonic*: once a
read returned a write, no later read of that key may return an older one until a crash
intervenes (an uncertain write a read saw may have been only in memory). A read that overlaps
writes of its key (another task's) may return any of them: its lower bound is taken when it
starts (:meth:`Model.read_started`). Where the ack mode does not promise to
survive what happened (``memory`` under any crash; ``journal`` under power loss), a miss is
*measured* as a loss — count and window — and labelled allowed, instead of failing the run;
only a crash of such a kind *after* the key's last acknowledgement excuses its miss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

Status = Literal["pending", "acked", "refused", "uncertain"]
CrashKind = Literal["actor", "process", "power"]

#: Which crash kinds each ack mode promises to survive without losing acknowledged writes.
#: ``actor``: one shard actor crashed and was restarted (its unwritten journal buffer is gone).
SURVIVES: dict[str, frozenset[str]] = {
    "memory": frozenset(),
    "journal": frozenset({"actor", "process"}),
    "fsync": frozenset({"actor", "process", "power"}),
    "store": frozenset({"actor", "process", "power"}),
}


@attrs.define
class Write:
    """One write the model saw issued (a put, or a delete when ``value`` is None) and what
    became of it: ``status`` is ``"pending"`` until the cache answers, then ``"acked"``,
    ``"refused"`` or ``"uncertain"`` (it may or may not have happened)."""

    op: int
    key: str
    value: bytes | None
    issued_at: float
    status: Status = "pending"
    acked_at: float | None = None
    acked_tick: int = -1  # position in the model's event order (times can tie under MockClock)
    version: int | None = None  # the cache's version for it (its receipt), once acknowledged


@attrs.frozen
class ReadStart:
    """When a read began (:meth:`Model.read_started`): its lower bound and the model's tick."""

    low: int
    tick: int


@attrs.frozen
class Loss:
    """An acknowledged write the store (or a read) did not reflect."""

    key: str
    expected: bytes | None
    found: bytes | None
    acked_at: float | None
    window: float | None  # from the ack to the first crash after it


@attrs.frozen
class Verdict:
    """The outcome of checking a store against the model."""

    ack: str
    acked: int
    uncertain: int
    crashes: dict[str, int]
    lost: tuple[Loss, ...]
    loss_allowed: bool

    @property
    def ok(self) -> bool:
        """True unless acknowledged writes were lost where the contract forbids it."""
        return not self.lost or self.loss_allowed

    @property
    def label(self) -> str:
        if not self.lost:
            return "PASS"
        return "LOSS (allowed by ack mode)" if self.loss_allowed else "FAIL"


class Model:
    """Tracks issued writes per key; checks reads and the final store."""

    def __init__(self, ack: str) -> None:
        if ack not in SURVIVES:
            raise ValueError(f"unknown ack mode {ack!r}")
        self.ack = ack
        self.writes: list[Write] = []
        self.by_key: dict[str, list[Write]] = {}
        self.initial: dict[str, bytes | None] = {}
        self.crashes: dict[str, int] = {}
        self.crash_times: list[float] = []
        self.crash_log: list[tuple[int, str]] = []  # (event tick, kind), in order
        self.read_losses: list[Loss] = []
        # key -> (index in its history, tick): the newest write a read has returned; it bounds
        # later reads from below until the next crash.
        self.floors: dict[str, tuple[int, int]] = {}
        self._tick = 0

    # -- events -------------------------------------------------------------------------------

    def seed_store(self, rows: Mapping[str, bytes | None]) -> None:
        """What the store held before the run (keys never written keep it)."""
        self.initial.update(rows)

    def issue(self, key: str, value: bytes | None, now: float) -> int:
        history = self.by_key.setdefault(key, [])
        if history and history[-1].status == "pending":
            raise AssertionError(
                f"the workload issued a second write to {key!r} while one was pending; "
                "the model needs writes to one key issued one at a time"
            )
        write = Write(len(self.writes), key, value, now)
        self.writes.append(write)
        history.append(write)
        return write.op

    def acked(self, op: int, now: float) -> None:
        write = self.writes[op]
        write.status, write.acked_at = "acked", now
        self._tick += 1
        write.acked_tick = self._tick

    def refused(self, op: int) -> None:
        self.writes[op].status = "refused"

    def uncertain(self, op: int) -> None:
        self.writes[op].status = "uncertain"

    def crash(self, kind: CrashKind, now: float) -> None:
        """Everything still pending at a crash may or may not have happened."""
        self.crashes[kind] = self.crashes.get(kind, 0) + 1
        self.crash_times.append(now)
        self._tick += 1
        self.crash_log.append((self._tick, kind))
        for write in self.writes:
            if write.status == "pending":
                write.status = "uncertain"

    # -- checks -------------------------------------------------------------------------------

    @property
    def loss_allowed(self) -> bool:
        return any(kind not in SURVIVES[self.ack] for kind in self.crashes)

    def excused(self, key: str) -> bool:
        """May ``key`` have lost its last acknowledged write? Only if a crash the ack mode does
        not promise to survive happened after that acknowledgement."""
        acked = [w for w in self.by_key.get(key, []) if w.status == "acked"]
        if not acked:
            return False
        since = acked[-1].acked_tick
        return any(t > since and k not in SURVIVES[self.ack] for t, k in self.crash_log)

    def _last_acked(self, key: str) -> int:
        history = self.by_key.get(key, [])
        return max((i for i, w in enumerate(history) if w.status == "acked"), default=-1)

    def read_started(self, key: str) -> ReadStart:
        """A read of ``key`` starting now: its lower bound, an index into the key's history
        (-1: the store's initial value), and when it started. Pass it to :meth:`check_read`
        when the read returns."""
        low = self._last_acked(key)
        floor = self.floors.get(key)
        if floor is not None and floor[0] > low:
            index, tick = floor
            if not any(t > tick for t, _kind in self.crash_log):
                low = index
        return ReadStart(low, self._tick)

    def read_excused(self, key: str, start: ReadStart) -> bool:
        """May a read that began at ``start`` have missed its lower bound? Only if a crash the
        ack mode does not survive came after that write's acknowledgement (a crash while
        the read ran counts: it may have taken the write before the read got there)."""
        if self.excused(key):
            return True
        history = self.by_key.get(key, [])
        if start.low < 0 or history[start.low].status != "acked":
            return False
        since = history[start.low].acked_tick
        return any(t > since and k not in SURVIVES[self.ack] for t, k in self.crash_log)

    def allowed(self, key: str, low: int | None = None) -> tuple[bytes | None, ...]:
        """Values the key may hold now: the last acked write's, or a later uncertain one's.

        With ``low`` (from :meth:`read_started`): the write at ``low`` or any later one that
        was not refused (a read overlapping writes may see any of them)."""
        history = self.by_key.get(key, [])
        if low is None:
            last = self._last_acked(key)
            base = history[last].value if last >= 0 else self.initial.get(key)
            later = tuple(
                w.value for w in history[last + 1:] if w.status in ("uncertain", "pending")
            )
            return (base, *later)
        base = history[low].value if low >= 0 else self.initial.get(key)
        return (base, *(w.value for w in history[low + 1:] if w.status != "refused"))

    def _loss(self, key: str, found: bytes | None) -> Loss:
        history = self.by_key.get(key, [])
        acked = [w for w in history if w.status == "acked"]
        last = acked[-1] if acked else None
        at = last.acked_at if last else None
        window = None
        if at is not None:
            after = [t for t in self.crash_times if t >= at]
            window = (after[0] - at) if after else None
        return Loss(key, last.value if last else self.initial.get(key), found, at, window)

    def check_read(
        self, key: str, found: bytes | None, start: ReadStart | None = None
    ) -> Loss | None:
        """A read must see the last acknowledged write (or a later uncertain one), and nothing
        older than what an earlier read of the key returned. ``start`` is from
        :meth:`read_started` when the read began (default: now, for a read that overlapped
        no write of its key)."""
        if start is None:
            start = self.read_started(key)
        low = start.low
        if found not in self.allowed(key, low):
            loss = self._loss(key, found)
            self.read_losses.append(loss)
            return loss
        history = self.by_key.get(key, [])
        # The oldest write consistent with what was read: the floor never rises too far.
        seen = next(
            (i for i in range(low + 1, len(history))
             if history[i].value == found and history[i].status != "refused"),
            low,
        )
        base = history[low].value if low >= 0 else self.initial.get(key)
        if base == found:
            seen = low
        # The floor dates from the read's start: a crash while it ran may have taken back
        # the (uncertain) write it returned.
        floor = self.floors.get(key)
        if floor is None or seen >= floor[0] or any(t > floor[1] for t, _ in self.crash_log):
            self.floors[key] = (seen, start.tick)
        return None

    def check_store(self, rows: Mapping[str, bytes | None]) -> Verdict:
        """Compare the drained store (key -> value, absent or None for deleted) with the model."""
        lost = [
            self._loss(key, rows.get(key))
            for key in sorted(self.by_key)
            if rows.get(key) not in self.allowed(key)
        ]
        return Verdict(
            ack=self.ack,
            acked=sum(w.status == "acked" for w in self.writes),
            uncertain=sum(w.status == "uncertain" for w in self.writes),
            crashes=dict(self.crashes),
            lost=tuple(lost),
            loss_allowed=all(self.excused(loss.key) for loss in lost)
            if lost
            else self.loss_allowed,
        )
