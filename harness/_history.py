"""The cluster suite's history checker: pure, no I/O, no clock.

Input: every operation each instance process invoked (:class:`Op`: process, key, write or
read, value, invoke and complete times on the machine's monotonic clock, outcome), the
store's contents after heal and drain, and snapshots of the store taken while the run went
on. Every write's value is unique in the history (``instance:seq``), so a value read or
stored names the one write that made it; a delete's value is ``None``, as is a read of an
absent key (such a read may come from any delete of the key, or from before its first
write).

The rules (``specs/cluster.md``, "The cluster suite"), each a :data:`RULES` name:

``lost``
    Every acknowledged write is in the store after heal and drain, or superseded: the
    store's version of the key is at least the write's, and equal only with the write's own
    value.
``phantom``
    The store holds only values some write of the history may have made: not one that was
    refused, not one nobody wrote, and not at a version above the one its acknowledgement
    reported (an effect after the acknowledgement). A lower version is allowed: a routed
    write retried on a new owner may have been applied by the former one too, earlier,
    within the write's own invocation; the acknowledged application supersedes it (``lost``
    checks that it does).
``real-time``
    Versions respect real time: a write acknowledged before another was invoked has the
    lower version (else the store's "newest wins" would keep the older one). So does a write
    *answered* with an unknown outcome whose version the store showed: whatever effect it
    has, it had by its answer (a routed request is applied only before its deadline, and its
    caller hears of it only after), unless it overlaps a window of skewed clocks (its
    deadline is judged on the wall clock).
``stale-read``
    A read never returns a value older than a write acknowledged before the read began.
    One exception, for a read that overlaps a window in which some instance's wall clock was
    off by more than the leases' drift margin (``skewed``): an owner's lease then no longer
    ends before its successor's begins, so a former owner may answer from memory after a
    member that took the partition early acknowledged a newer write. Such a read may miss
    writes of *early epochs* (whose first acknowledgement fell inside a skewed window), never
    one of an epoch that began before: those the new owner must have (its fence and replay)
    and the former owner has (its own). A read the reader's own shard answered at epoch E
    (``Op.served``) may miss only early epochs above E: that owner has every write of E and
    before. Fencing keeps every other rule through such a window; reads are only as
    linearizable as the clocks are close.
``future-read``
    A read never returns a value whose write began after the read ended.
``fenced-ack``
    No write is acknowledged by a fenced owner. A write's epoch is its version's high bits
    and its partition the receipt's shard. The owner of a higher epoch of the partition
    fenced the journal before it acknowledged anything, so its first acknowledgement's
    completion time is an upper bound on its fence; explicit :class:`Fence` events may
    tighten it. A write acknowledged with a lower epoch although it was invoked after that
    bound was acknowledged by an owner already fenced.
``store-regress``
    The store's versions never go backwards: per key, over the snapshots in time order and
    then the final contents, a version never decreases and a key never disappears.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import attrs

Outcome = Literal["ok", "fail", "unknown"]
Kind = Literal["write", "read"]

RULES = ("lost", "phantom", "real-time", "stale-read", "future-read", "fenced-ack",
         "store-regress")

#: Where a version's epoch starts (``writebehind._core._routing.EPOCH_SHIFT``); a parameter
#: of :func:`check` so the checker imports nothing of the runtime.
DEFAULT_EPOCH_SHIFT = 40


@attrs.frozen(kw_only=True)
class Op:
    """One operation as its process saw it. ``complete`` is None when no answer came (the
    process died, or the call was cancelled); ``outcome`` is then ``unknown``. ``value``: a
    write's value (None: a delete), or what a read returned. ``version`` and ``partition``:
    an acknowledged write's receipt. ``served``: a read's, the epoch of the process's own
    shard that answered it (the process held the partition at that epoch from the read's
    invocation to its answer); None when another member may have answered."""

    process: str
    key: str
    kind: Kind
    value: bytes | None
    invoke: float
    complete: float | None
    outcome: Outcome
    version: int | None = None
    partition: int | None = None
    served: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.outcome == "ok" and self.complete is None:
            raise ValueError(f"{self}: an acknowledged operation has a completion time")
        if self.kind == "write" and self.outcome == "ok" and self.version is None:
            raise ValueError(f"{self}: an acknowledged write has its receipt's version")

    def describe(self) -> str:
        done = "never answered" if self.complete is None else f"answered {self.complete:.3f}"
        what = "delete" if self.value is None and self.kind == "write" else repr(self.value)
        version = "" if self.version is None else f" version {self.version:#x}"
        return (f"{self.kind} {what} by {self.process} (invoked {self.invoke:.3f}, {done}, "
                f"{self.outcome}{version})")


@attrs.frozen
class Stored:
    """A key's row in the store: its value (None: a tombstone) and version."""

    value: bytes | None
    version: int


@attrs.frozen
class Snapshot:
    """The store's contents read at monotonic time ``at``."""

    at: float
    records: Mapping[str, Stored]


@attrs.frozen
class Fence:
    """An owner of ``epoch`` had fenced ``partition`` by monotonic time ``at``."""

    partition: int
    epoch: int
    at: float


@attrs.frozen
class Violation:
    rule: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule} {self.key!r}: {self.detail}"


@attrs.frozen(kw_only=True)
class CheckResult:
    violations: tuple[Violation, ...]
    writes: int
    acknowledged: int
    reads: int
    keys: int
    unjudged_reads: int = 0  # reads under skewed clocks (may miss early epochs' writes)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_rule(self) -> dict[str, int]:
        counts = dict.fromkeys(RULES, 0)
        for violation in self.violations:
            counts[violation.rule] += 1
        return counts


class _Key:
    """One key's writes, indexed for the rules."""

    def __init__(self, key: str, writes: list[Op], versions: dict[int, int]) -> None:
        self.key = key
        self.writes = writes
        self.versions = versions  # id(write) -> version, where known
        acked = sorted((w for w in writes if w.outcome == "ok"),
                       key=lambda w: w.complete or 0.0)
        self.acked = acked
        self.acked_completes = [w.complete or 0.0 for w in acked]
        # Prefix maxima over the acknowledged writes in completion order.
        self.max_version = list(itertools.accumulate(
            (self.versions[id(w)] for w in acked), max))
        self.max_invoke = list(itertools.accumulate((w.invoke for w in acked), max))
        self.by_value = {w.value: w for w in writes if w.value is not None}
        self.deletes = [w for w in writes if w.value is None]

    def acked_before(self, t: float) -> int:
        """How many acknowledged writes completed before ``t``."""
        return bisect.bisect_left(self.acked_completes, t)


def _index(ops: Sequence[Op], final: Mapping[str, Stored],
           snapshots: Sequence[Snapshot]) -> dict[str, _Key]:
    writes: dict[str, list[Op]] = defaultdict(list)
    seen: dict[bytes, Op] = {}
    for op in ops:
        if op.kind != "write":
            continue
        if op.value is not None:
            if op.value in seen:
                raise ValueError(f"two writes of the value {op.value!r} ({seen[op.value]} and "
                                 f"{op}): the checker needs every written value unique")
            seen[op.value] = op
        writes[op.key].append(op)
    # An unacknowledged write's version, when the store shows its value.
    found: dict[bytes, int] = {}
    for records in (*(s.records for s in snapshots), final):
        for row in records.values():
            if row.value is not None:
                found.setdefault(row.value, row.version)
    keys = set(writes) | set(final) | {k for s in snapshots for k in s.records}
    keys |= {op.key for op in ops}
    index = {}
    for key in keys:
        versions = {}
        for w in writes.get(key, []):
            if w.version is not None:
                versions[id(w)] = w.version
            elif w.value is not None and w.value in found:
                versions[id(w)] = found[w.value]
        index[key] = _Key(key, writes.get(key, []), versions)
    return index


def check(
    ops: Iterable[Op],
    final: Mapping[str, Stored],
    snapshots: Sequence[Snapshot] = (),
    *,
    fences: Iterable[Fence] = (),
    initial: Mapping[str, Stored] | None = None,
    epoch_shift: int = DEFAULT_EPOCH_SHIFT,
    skewed: Sequence[tuple[float, float]] = (),
) -> CheckResult:
    """Check a history against :data:`RULES`. ``initial``: the store before the run (a fresh
    table: empty); its values count as written before everything. ``skewed``: ``(start,
    end)`` windows of clocks beyond the drift margin (see ``stale-read``)."""
    ops = list(ops)
    initial = dict(initial or {})
    index = _index(ops, final, snapshots)
    violations: list[Violation] = []
    for key in sorted(index):
        k = index[key]
        violations += _lost(k, final.get(key))
        violations += _real_time(k, skewed)
        for snapshot in (*snapshots, Snapshot(float("inf"), final)):
            if key in snapshot.records:
                violations += _phantom(k, snapshot.records[key], initial.get(key))
    unjudged = [r for r in ops if r.kind == "read" and r.outcome == "ok"
                and _overlaps(r, skewed)]
    early = _early_epochs(ops, skewed, epoch_shift)
    violations += _reads(ops, index, initial, skip={id(r) for r in unjudged},
                         excused=lambda r, w: (epoch := _epoch_of(w, epoch_shift)) in early
                         and (r.served is None or epoch[1] > r.served))
    violations += _fenced(ops, fences, epoch_shift)
    violations += _regress(snapshots, final)
    writes = [op for op in ops if op.kind == "write"]
    return CheckResult(
        violations=tuple(violations), writes=len(writes),
        acknowledged=sum(op.outcome == "ok" for op in writes),
        reads=sum(op.kind == "read" and op.outcome == "ok" for op in ops), keys=len(index),
        unjudged_reads=len(unjudged),
    )


def _epoch_of(op: Op, shift: int) -> tuple[int, int] | None:
    if op.partition is None or op.version is None:
        return None
    return op.partition, op.version >> shift


def _early_epochs(ops: Sequence[Op], windows: Sequence[tuple[float, float]],
                  shift: int) -> set[tuple[int, int]]:
    """The (partition, epoch)s whose first acknowledgement fell inside a skewed window: the
    only epochs a member may have taken while a former owner still counted on its lease."""
    first: dict[tuple[int, int], float] = {}
    for op in ops:
        key = _epoch_of(op, shift) if op.kind == "write" and op.outcome == "ok" else None
        if key is not None and op.complete is not None:
            first[key] = min(first.get(key, op.complete), op.complete)
    return {key for key, at in first.items()
            if any(start <= at <= stop for start, stop in windows)}


def _overlaps(op: Op, windows: Sequence[tuple[float, float]]) -> bool:
    end = op.complete if op.complete is not None else float("inf")
    return any(start <= end and op.invoke <= stop for start, stop in windows)


def _lost(k: _Key, stored: Stored | None) -> list[Violation]:
    if not k.acked:
        return []
    newest = max(k.acked, key=lambda w: k.versions[id(w)])
    version = k.versions[id(newest)]
    if stored is None:
        return [Violation("lost", k.key, f"the store does not have the key; acknowledged: "
                          f"{newest.describe()}")]
    if stored.version < version:
        return [Violation("lost", k.key, f"the store holds version {stored.version:#x} "
                          f"({stored.value!r}), older than the acknowledged {newest.describe()}")]
    if stored.version == version and stored.value != newest.value:
        return [Violation("lost", k.key, f"the store holds {stored.value!r} at the version of "
                          f"the acknowledged {newest.describe()}")]
    return []


def _phantom(k: _Key, stored: Stored, initial: Stored | None) -> list[Violation]:
    if initial is not None and stored == initial:
        return []
    if stored.value is None:
        # A tombstone: some delete of the key that was not refused, at a version not above
        # the one its acknowledgement (if any) reported (as for values, below).
        for d in k.deletes:
            if d.outcome != "fail" and stored.version <= k.versions.get(id(d), stored.version):
                return []
        return [Violation("phantom", k.key, f"the store holds a tombstone at version "
                          f"{stored.version:#x} that no delete of the history made")]
    w = k.by_value.get(stored.value)
    if w is None:
        return [Violation("phantom", k.key, f"the store holds {stored.value!r}, which no "
                          "write of this key made")]
    if w.outcome == "fail":
        return [Violation("phantom", k.key, f"the store holds the refused {w.describe()}")]
    if w.version is not None and stored.version > w.version:
        return [Violation("phantom", k.key, f"the store holds {w.describe()} at version "
                          f"{stored.version:#x}, above the version its acknowledgement "
                          "reported: applied again after it was acknowledged")]
    return []


def _real_time(k: _Key, skewed: Sequence[tuple[float, float]]) -> list[Violation]:
    out = []
    for b in k.acked:
        n = k.acked_before(b.invoke)
        if n and k.max_version[n - 1] >= k.versions[id(b)]:
            a = next(w for w in k.acked[:n] if k.versions[id(w)] == k.max_version[n - 1])
            out.append(Violation("real-time", k.key, f"{b.describe()} was acknowledged with a "
                                 f"version not above the earlier acknowledged {a.describe()}"))
    for u in k.writes:
        version = k.versions.get(id(u))
        if (u.outcome != "unknown" or u.complete is None or version is None
                or _overlaps(u, skewed)):
            continue
        later = next((b for b in k.acked if b.invoke > u.complete
                      and k.versions[id(b)] <= version), None)
        if later is not None:
            out.append(Violation("real-time", k.key, f"{u.describe()} took effect at version "
                                 f"{version:#x}, not below the {later.describe()}, invoked "
                                 "after its answer"))
    return out


def _reads(ops: Sequence[Op], index: Mapping[str, _Key],
           initial: Mapping[str, Stored], skip: frozenset[int] | set[int] = frozenset(),
           excused: Callable[[Op, Op], bool] = lambda r, w: True,
           ) -> list[Violation]:
    out = []
    for r in ops:
        if r.kind != "read" or r.outcome != "ok":
            continue
        assert r.complete is not None
        k = index[r.key]
        n = k.acked_before(r.invoke)
        candidates: list[Op | None]  # None: the key's state before the run
        if r.value is None:
            candidates = [*k.deletes, *([None] if initial.get(r.key, Stored(None, 0)).value
                                        is None else [])]
        else:
            w = k.by_value.get(r.value)
            start = initial.get(r.key)
            candidates = [w] if w is not None else (
                [None] if start is not None and start.value == r.value else [])
        stale: Op | None = None
        future: Op | None = None
        ok = False
        skewed = id(r) in skip
        for c in candidates:
            if c is not None and (c.invoke > r.complete or c.outcome == "fail"):
                future = future or c
                continue
            if n == 0:
                ok = True
                break
            version = None if c is None else k.versions.get(id(c))
            if c is None:
                newer = True
            elif version is not None:
                newer = k.max_version[n - 1] > version
            else:
                newer = c.complete is not None and k.max_invoke[n - 1] > c.complete
            if not newer:
                ok = True
                break
            stale = stale or k.acked[n - 1]
            # Under skewed clocks a former owner may answer from memory while a member
            # that took its partition early acknowledges newer writes: excused only if
            # every write the read missed is of such an early epoch (see the rules).
            if skewed and ((c is not None and version is None) or all(
                    excused(r, w) for w in k.acked[:n]
                    if version is None or k.versions[id(w)] > version)):
                ok = True
                break
        if ok:
            continue
        if stale is not None:
            newest = max(k.acked[:n], key=lambda w: k.versions[id(w)])
            out.append(Violation("stale-read", r.key, f"read {r.value!r} by {r.process} "
                                 f"(invoked {r.invoke:.3f}) after the acknowledged "
                                 f"{newest.describe()}"))
        elif future is not None:
            out.append(Violation("future-read", r.key, f"read {r.value!r} by {r.process} "
                                 f"(answered {r.complete:.3f}) of {future.describe()}"))
        else:
            out.append(Violation("future-read", r.key, f"read {r.value!r} by {r.process}, "
                                 "which no write of this key made"))
    return out


def _fenced(ops: Sequence[Op], fences: Iterable[Fence], shift: int) -> list[Violation]:
    # Per (partition, epoch): the earliest time its owner had certainly fenced the journal.
    bound: dict[tuple[int, int], float] = {}
    acked = [op for op in ops if op.kind == "write" and op.outcome == "ok"
             and op.partition is not None]
    for op in acked:
        assert op.version is not None and op.partition is not None and op.complete is not None
        key = (op.partition, op.version >> shift)
        bound[key] = min(bound.get(key, op.complete), op.complete)
    for fence in fences:
        key = (fence.partition, fence.epoch)
        bound[key] = min(bound.get(key, fence.at), fence.at)
    # Per partition, epochs ascending with the suffix minimum of their bounds.
    later: dict[int, tuple[list[int], list[tuple[float, int]]]] = {}
    for partition in {p for p, _ in bound}:
        epochs = sorted(e for p, e in bound if p == partition)
        suffix: list[tuple[float, int]] = []
        best = (float("inf"), -1)
        for e in reversed(epochs):
            best = min(best, (bound[(partition, e)], e))
            suffix.append(best)
        later[partition] = (epochs, suffix[::-1])
    out = []
    for op in acked:
        assert op.version is not None and op.partition is not None
        epoch = op.version >> shift
        epochs, suffix = later[op.partition]
        i = bisect.bisect_right(epochs, epoch)
        if i < len(epochs) and suffix[i][0] < op.invoke:
            at, newer = suffix[i]
            out.append(Violation("fenced-ack", op.key, f"{op.describe()} was acknowledged "
                                 f"with epoch {epoch} of partition {op.partition}, invoked "
                                 f"after epoch {newer} had fenced it (by {at:.3f})"))
    return out


def _regress(snapshots: Sequence[Snapshot], final: Mapping[str, Stored]) -> list[Violation]:
    out = []
    last: dict[str, tuple[float, Stored]] = {}
    for snapshot in (*sorted(snapshots, key=lambda s: s.at), Snapshot(float("inf"), final)):
        when = "after the drain" if snapshot.at == float("inf") else f"at {snapshot.at:.3f}"
        for key, (at, row) in list(last.items()):
            now = snapshot.records.get(key)
            if now is None:
                out.append(Violation("store-regress", key, f"held version {row.version:#x} "
                                     f"at {at:.3f}, gone {when}"))
                del last[key]  # reported once, not at every later snapshot
            elif now.version < row.version:
                out.append(Violation("store-regress", key, f"version {row.version:#x} at "
                                     f"{at:.3f}, then {now.version:#x} {when}"))
        last.update({key: (snapshot.at, row) for key, row in snapshot.records.items()})
    return out
