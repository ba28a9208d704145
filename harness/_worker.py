"""The child process that :func:`~writebehind.harness.run_kill_rounds` SIGKILLs.

It embeds a cache and runs a seeded workload of writer tasks, each owning its keys (so writes
to one key go one at a time), and logs what happened *as it happens*, one ``os.write`` per
line to a file opened with ``O_APPEND``: a write's issue line before the call, its outcome line
only after the call returned. A SIGKILL never undoes a finished ``write(2)``, so every ack line
the log holds describes a write the cache had acknowledged before it died.

Log lines (space separated; values are hex, ``-`` for a delete or an absent key)::

    S <incarnation> <pid>            the cache started (journals replayed)
    I <id> <key> <value> <time>      a write is about to be issued
    A <id> <time>                    ... it was acknowledged
    R <id> <error>                   ... it was refused before anything happened
    U <id> <error>                   ... its outcome is uncertain
    G <key> <value>                  a read returned this
    D                                the final incarnation read every key; draining
    E                                open_cache returned (drained)

``--break NAME`` (or ``WRITEBEHIND_TEST_BREAK``) switches on a deliberately broken variant, so
tests can show the runner catches one: ``skip-replay`` deletes the journals before starting,
``drop-writes`` makes the store silently drop every other record it is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from writebehind import (
    CacheClosed,
    Config,
    JournalFull,
    Overloaded,
    Seams,
    Store,
    StoreRecord,
    open_cache,
)
from writebehind._core._errors import UNCERTAIN_OUTCOME
from writebehind._runtime._cache import Cache
from writebehind._stores._protocol import WriteOutcome

BREAK_ENV = "WRITEBEHIND_TEST_BREAK"
#: The store URL, passed in the environment: a password on the command line shows in ``ps``.
STORE_ENV = "WRITEBEHIND_WORKER_STORE"
BREAKS = ("skip-replay", "drop-writes")

#: The worker's defaults; a caller's config mapping overrides them. A long flush interval keeps
#: many acknowledged writes unflushed when the kill lands, so recovery has work to do.
WORKER_DEFAULTS: dict[str, Any] = {
    "shards": 2,
    "flush_interval": 2.0,
    "journal_sync_interval": 0.05,
    "max_restarts": 20,
}


def keys_for(writer: int, incarnation: int, *, shared: int, local: int) -> list[str]:
    """Writer ``writer``'s keys: some shared by every incarnation (later incarnations overwrite
    them, so version order across restarts is tested) and some its own incarnation's only (a
    loss there is never hidden by a later write)."""
    return [f"w{writer}/k{j}" for j in range(shared)] + [
        f"w{writer}/i{incarnation}/k{j}" for j in range(local)
    ]


class LineLog:
    """Append-only, one ``os.write`` per line: nothing is buffered in the process."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def line(self, *fields: object) -> None:
        os.write(self._fd, (" ".join(map(str, fields)) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


def _hex(value: bytes | None) -> str:
    return "-" if value is None else value.hex()


class _DroppingStore:
    """A broken store for tests: commits only every other record it is given."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.blocking = inner.blocking
        self._count = 0

    def write_batch(self, records: Sequence[StoreRecord]) -> WriteOutcome:
        kept = []
        for record in records:
            self._count += 1
            if self._count % 2:
                kept.append(record)
        return self._inner.write_batch(kept) if kept else ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _writer(
    cache: Cache, log: LineLog, rng: random.Random, keys: list[str], prefix: str,
) -> None:
    n = 0
    while True:
        # Bursts without a checkpoint between puts: under ack='memory' they are acknowledged
        # before the journal's background writer runs, which is the window that mode gives up.
        for _ in range(rng.randint(1, 24)):
            key = rng.choice(keys)
            op = f"{prefix}.{n}"
            n += 1
            value = None if rng.random() < 0.1 else op.encode()
            log.line("I", op, key, _hex(value), f"{time.monotonic():.6f}")
            try:
                if value is None:
                    await cache.delete(key)
                else:
                    await cache.put(key, value)
            except UNCERTAIN_OUTCOME as exc:
                log.line("U", op, type(exc).__name__)
                if isinstance(exc, CacheClosed):
                    return
                continue
            except (Overloaded, JournalFull, TypeError, ValueError) as exc:
                log.line("R", op, type(exc).__name__)
                continue
            log.line("A", op, f"{time.monotonic():.6f}")
            if rng.random() < 0.05:
                log.line("G", key, _hex(await cache.get(key)))
        await trio.sleep(rng.uniform(0, 0.001))


async def _watch_parent(parent: int, lifetime: float) -> None:
    """An orphaned worker stops: its parent died, or it outlived any sane run."""
    deadline = trio.current_time() + lifetime
    while os.getppid() == parent and trio.current_time() < deadline:
        await trio.sleep(0.2)
    os._exit(3)


async def run_worker(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    broken = args.broken or os.environ.get(BREAK_ENV, "")
    if broken and broken not in BREAKS:
        raise SystemExit(f"broken variant {broken!r} is not one of {', '.join(BREAKS)}")
    settings = {**WORKER_DEFAULTS, **json.loads(args.config)}
    store = os.environ.get(STORE_ENV)
    if not store:
        raise SystemExit(f"the worker takes its store URL from ${STORE_ENV}, which is not set")
    settings.update(store=store, journal_dir=str(workdir / "journal"), ack=args.ack,
                    seed=args.seed + args.incarnation)
    config = Config.from_mapping(settings, source="worker config")
    if broken == "skip-replay":
        shutil.rmtree(config.journal_dir, ignore_errors=True)
    seams = Seams(wrap_store=_DroppingStore) if broken == "drop-writes" else Seams()
    log = LineLog(Path(args.log))
    shape = {"shared": args.shared_keys, "local": args.local_keys}
    async with trio.open_nursery() as guard:
        guard.start_soon(_watch_parent, args.parent, args.lifetime)
        async with open_cache(config, seams=seams) as cache:
            log.line("S", args.incarnation, os.getpid())
            if args.final:
                every = {
                    key
                    for w in range(args.writers)
                    for inc in range(args.incarnation)
                    for key in keys_for(w, inc, **shape)
                }
                for key in sorted(every):
                    log.line("G", key, _hex(await cache.get(key)))
                log.line("D")
            else:
                async with trio.open_nursery() as nursery:
                    for w in range(args.writers):
                        rng = random.Random(f"{args.seed}:{args.incarnation}:{w}")
                        keys = keys_for(w, args.incarnation, **shape)
                        nursery.start_soon(
                            _writer, cache, log, rng, keys, f"{args.incarnation}.{w}"
                        )
        log.line("E")
        guard.cancel_scope.cancel()
    log.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m writebehind.harness._worker")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ack", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--incarnation", type=int, required=True)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--shared-keys", type=int, default=8)
    parser.add_argument("--local-keys", type=int, default=24)
    parser.add_argument("--config", default="{}", help="JSON mapping of Config settings")
    parser.add_argument("--break", dest="broken", help=f"one of {BREAKS} (or set {BREAK_ENV})")
    parser.add_argument("--final", action="store_true", help="read every key, then drain")
    parser.add_argument("--parent", type=int, default=os.getppid())
    parser.add_argument("--lifetime", type=float, default=120.0)
    trio.run(run_worker, parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
