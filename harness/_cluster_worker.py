"""One writebehind instance process of the cluster chaos suite (:mod:`._cluster_run`).

It runs ``open_cache`` in cluster mode and, while the cache serves, a seeded workload of
writer tasks that put, delete and get keys of one shared key space (every instance writes
every key: a write reaches its partition's owner however the cluster routes it; half the
calls are on keys of partitions the instance hosts, like a partition-aware client's; a
write told it may or may not have happened is followed by a new write of its key, as a
retrying client's). Every operation's invocation and completion go to the process's own
log, one ``os.write`` per JSON line (``O_APPEND``): a SIGKILL never undoes a finished
``write(2)``, so a completion line in the log describes an answer the instance gave.

With several live members each instance hosts its share of the partitions and routes the
rest. When the cache cannot start (NATS or the store is unreachable; before membership,
another live instance held the store table), or stops with an error (its lease was taken
over while it was paused), the process logs why and opens it again: a standby until it can
serve. SIGTERM stops it gracefully: the workload stops and the cache drains. SIGUSR1 arms
the suite's ``pause`` fault and SIGUSR2 disarms it (:class:`SelfPause`).

Log lines (``e``: the event; times are ``time.monotonic()``, system-wide on Linux)::

    {"e": "start", "t": ...}                       the cache serves
    {"e": "i", "id": n, "k": key, "op": "w"|"r", "v": hex|null, "t": ...}   invoked
    {"e": "c", "id": n, "o": "ok"|"fail"|"unknown", "t": ..., ["ver": v, "p": shard] |
     ["v": hex|null]}                              answered (a read's "v": what it returned;
                                                   none for a call cancelled or cut by a close)
    {"e": "serve", "p": partition, "ep": epoch, "t": ...}   a shard incarnation serves
    {"e": "error", "t": ..., "err": "..."}          the cache failed to start, or stopped
    {"e": "stop", "t": ...}                         the cache drained and stopped
    {"e": "exit", "t": ...}                         the process ends normally

Values are ``<name>:<seq>``: unique in a run, so a value names the write that made it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import trio

from writebehind import CacheClosed, Config, LeaseHeld, WritebehindError, open_cache, shard_of
from writebehind._core._errors import UNCERTAIN_OUTCOME
from writebehind._runtime._cache import Cache
from writebehind._runtime._seams import Seams

from ._worker import STORE_ENV, LineLog

#: Pause between attempts to open the cache while it cannot serve.
RETRY_PAUSE = 0.3
#: The share of calls on keys of partitions the instance hosts.
LOCAL = 0.5
#: Where an armed instance stops itself: a store actor with a batch in hand, about to write
#: it (its fence epoch already attached).
PAUSE_POINT = "store.before_commit"


class SelfPause:
    """The suite's ``pause`` fault, as the runtime's fault-point hook: once armed (SIGUSR1),
    the next time the process reaches :data:`PAUSE_POINT` it stops itself with SIGSTOP, and
    the suite continues it past its leases. A SIGSTOP from outside lands anywhere; this one
    lands where a stale owner does harm (the pause between deciding to write and writing
    that fencing tokens exist for). SIGUSR2 disarms it when the point was not reached."""

    def __init__(self) -> None:
        self.armed = False

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, lambda signum, frame: setattr(self, "armed", True))
        signal.signal(signal.SIGUSR2, lambda signum, frame: setattr(self, "armed", False))

    def __call__(self, point: str, actor: str) -> None:
        if self.armed and point == PAUSE_POINT:
            self.armed = False
            os.kill(os.getpid(), signal.SIGSTOP)


def key_space(n: int) -> list[str]:
    return [f"k{i:03d}" for i in range(n)]


class OpLog:
    """The JSON-lines log of one process."""

    def __init__(self, path: Path) -> None:
        self._log = LineLog(path)
        self._ids: Iterator[int] = itertools.count()

    def event(self, kind: str, **fields: Any) -> None:
        self._log.line(json.dumps({"e": kind, "t": round(time.monotonic(), 6), **fields}))

    def invoke(self, key: str, op: str, value: bytes | None) -> int:
        n = next(self._ids)
        self.event("i", id=n, k=key, op=op, v=None if value is None else value.hex())
        return n

    def close(self) -> None:
        self._log.close()


def _serving_epoch(cache: Cache, key: str) -> int | None:
    """The epoch this instance hosts ``key``'s partition with now, or None."""
    view = cache.cluster_view()
    if view is None:
        return None
    partition = shard_of(key, view.partitions)
    if partition not in view.hosted:
        return None
    return next((lease.epoch for lease in view.leases if lease.partition == partition), None)


async def _op(cache: Cache, log: OpLog, key: str, op: str, value: bytes | None) -> None:
    n = log.invoke(key, op, value)
    try:
        if op == "r":
            before = _serving_epoch(cache, key)
            got = await cache.get(key)
            # Hosted at one epoch from call to answer: this instance's own shard of that
            # epoch answered (a restart or a move takes a new epoch), and the checker holds
            # the read to every write of that epoch and before.
            served = before if before is not None and _serving_epoch(cache, key) == before \
                else None
            log.event("c", id=n, o="ok", v=None if got is None else got.hex(),
                      **({} if served is None else {"ep": served}))
            return
        receipt = await (cache.put(key, value) if value is not None else cache.delete(key))
    except CacheClosed:
        raise  # closing under the call: like a cancelled one, it had no answer (below)
    except UNCERTAIN_OUTCOME:
        # Answered: a write of unknown outcome that takes effect at all has by now (the
        # checker's real-time rule holds it to that).
        log.event("c", id=n, o="fail" if op == "r" else "unknown")
        raise
    except WritebehindError as exc:
        # Every other error of the library says the write did not happen (Overloaded,
        # JournalFull, a partition nobody serves): refused. The checker holds it to that: a
        # refused value found in the store is a phantom.
        log.event("c", id=n, o="fail", err=type(exc).__name__)
        return
    except BaseException:
        # Cancelled (the workload stops) or anything else: no answer. No completion line,
        # so the history has it as never answered: a routed write may still land until
        # its request's deadline.
        raise
    log.event("c", id=n, o="ok", ver=receipt.version, p=receipt.shard)


class LocalKeys:
    """The keys of the partitions this instance hosts now, looked up at most every 0.1 s."""

    def __init__(self, cache: Cache, keys: list[str]) -> None:
        self._cache, self._keys = cache, keys
        self._local: list[str] = []
        self._at = -1.0

    def __call__(self) -> list[str]:
        now = trio.current_time()
        if now - self._at >= 0.1:
            view = self._cache.cluster_view()
            self._local = []
            if view is not None:
                hosted = set(view.hosted)
                self._local = [k for k in self._keys if shard_of(k, view.partitions) in hosted]
            self._at = now
        return self._local


async def _writer(cache: Cache, log: OpLog, rng: random.Random, keys: list[str],
                  name: str, seq: Iterator[int], local: Callable[[], list[str]]) -> None:
    again: str | None = None
    while True:
        # Half the calls go to keys this instance hosts (a partition-aware client), the
        # rest anywhere (routed): a partition then often has writers on its owner only, so
        # a take-over races the former owner's own appends, not only routed ones.
        key = again or rng.choice((rng.random() < LOCAL and local()) or keys)
        roll = 1.0 if again else rng.random()
        again = None
        try:
            if roll < 0.35:
                await _op(cache, log, key, "r", None)
            elif roll < 0.4:
                await _op(cache, log, key, "w", None)
            else:
                await _op(cache, log, key, "w", f"{name}:{next(seq)}".encode())
        except UNCERTAIN_OUTCOME:
            # A client told its write may or may not have happened writes the key again
            # (a new value): were the first still to land, it would land on this one.
            again = key if roll >= 0.35 else None
            await trio.sleep(0.05)  # a crashed shard restarts; the cache says when it is gone
        await trio.sleep(rng.uniform(0, 0.004))


async def _watch_parent(parent: int, lifetime: float) -> None:
    """An orphaned worker stops: its parent died, or it outlived any sane run."""
    deadline = trio.current_time() + lifetime
    while os.getppid() == parent and trio.current_time() < deadline:
        await trio.sleep(0.2)
    os._exit(3)


async def run_instance(args: argparse.Namespace, early: Sequence[int] = ()) -> None:
    store = os.environ.get(STORE_ENV)
    if not store:
        raise SystemExit(f"the worker takes its store URL from ${STORE_ENV}, which is not set")
    settings = {**json.loads(args.config), "store": store,
                "journal_dir": str(Path(args.workdir) / "journal")}
    config = Config.from_mapping(settings, source="cluster worker config")
    # A skewed wall clock (the suite's ``skew`` fault): this instance writes and judges lease
    # and membership expiries that far off the others' clocks, beyond the drift margin.
    skew = args.skew
    pause = SelfPause()
    pause.install()
    log = OpLog(Path(args.log))
    # The moment each shard incarnation serves, fenced and replayed: from then on no older
    # epoch of its partition may acknowledge a newly invoked write (the ``fenced-ack`` rule).
    seams = Seams(fault_point=pause,
                  wall_clock=(lambda: time.time() + skew) if skew else None,
                  on_serving=lambda shard, epoch: log.event("serve", p=shard, ep=epoch))
    keys = key_space(args.keys)
    seq = itertools.count()
    stopping = trio.Event()
    serving = False
    async with trio.open_nursery() as guard:
        guard.start_soon(_watch_parent, args.parent, args.lifetime)
        attempt = trio.CancelScope()

        async def on_sigterm(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    stopping.set()
                    if not serving:
                        attempt.cancel()  # a standby stops at once; a server drains
                    return

        await guard.start(on_sigterm)
        if early:
            stopping.set()  # stopped before it listened: a standby that never opened
        rng = random.Random(f"{args.seed}:{args.name}")
        while not stopping.is_set():
            attempt = trio.CancelScope()
            with attempt:
                try:
                    async with open_cache(config, seams=seams) as cache:
                        serving = True
                        log.event("start")
                        if args.final:
                            for key in keys:
                                await _op(cache, log, key, "r", None)
                            stopping.set()
                        else:
                            async with trio.open_nursery() as work:
                                local = LocalKeys(cache, keys)
                                for w in range(args.writers):
                                    work.start_soon(
                                        _writer, cache, log,
                                        random.Random(f"{rng.random()}:{w}"), keys, args.name,
                                        seq, local,
                                    )
                                await stopping.wait()
                                work.cancel_scope.cancel()
                    log.event("stop")
                except LeaseHeld:
                    pass  # another instance holds the store table: a standby waits
                except Exception as exc:
                    log.event("error", err=f"{type(exc).__name__}: {exc}"[:500])
                finally:
                    serving = False
            if not stopping.is_set():
                await trio.sleep(RETRY_PAUSE)
        log.event("exit")
        guard.cancel_scope.cancel()
    log.close()


def _log_with_times() -> None:
    """The library's warnings to stderr, each line led by ``time.monotonic()``: the clock of
    the history logs, so a warning can be placed among the operations around it."""

    def stamp(record: logging.LogRecord) -> bool:
        record.mono = time.monotonic()
        return True

    handler = logging.StreamHandler()
    handler.addFilter(stamp)
    handler.setFormatter(logging.Formatter("%(mono).3f %(levelname)s %(message)s"))
    logger = logging.getLogger("writebehind")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m writebehind.harness._cluster_worker")
    parser.add_argument("--name", required=True, help="this process's name in the history")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--config", required=True, help="JSON mapping of Config settings")
    parser.add_argument("--keys", type=int, default=24)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--final", action="store_true", help="read every key, then drain")
    parser.add_argument("--skew", type=float, default=0.0,
                        help="seconds this instance's wall clock is off the true one")
    parser.add_argument("--parent", type=int, default=os.getppid())
    parser.add_argument("--lifetime", type=float, default=600.0)
    args = parser.parse_args(argv)
    _log_with_times()
    # A SIGTERM that arrives before trio listens for it (the harness may stop a process it
    # just started) must stop the process gracefully too, not kill it.
    early: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: early.append(signum))
    trio.run(run_instance, args, early)


if __name__ == "__main__":
    main(sys.argv[1:])
