"""Configuration: keyword-only, named defaults, validation that names the field and the value."""

from __future__ import annotations

import difflib
import functools
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal

import attrs

from ._addresses import is_loopback, parse_address
from ._errors import ConfigError
from ._lease import LEASE_TTL, MIN_LEASE_TTL
from ._limits import MAX_PAYLOAD, RECORD_OVERHEAD, store_limits

#: When ``put``/``delete`` return: the type of ``Config.ack`` (see the contract).
AckMode = Literal["memory", "journal", "fsync", "store", "replicated"]
#: Every single-process ack mode, weakest first.
ACK_MODES: tuple[AckMode, ...] = ("memory", "journal", "fsync", "store")
#: The ack modes of a cluster (``Config.cluster``): ``'replicated'`` acknowledges once a
#: majority of the partition journal's NATS replicas stored the group commit.
CLUSTER_ACK_MODES: tuple[AckMode, ...] = ("replicated",)

#: What each declarable requirement needs, and the one-sentence trade-off shown on refusal.
REQUIREMENTS: dict[str, tuple[frozenset[str], str]] = {
    "durable-dirty-log": (
        frozenset({"journal", "fsync", "store", "replicated"}),
        "ack='memory' acknowledges a write before its journal record is written, so a crash "
        "loses recent acknowledged writes; use ack='journal', 'fsync' or 'store'.",
    ),
    "replay-on-restart": (
        frozenset({"journal", "fsync", "store", "replicated"}),
        "ack='memory' replays only what the background journal happened to write, not every "
        "acknowledged write; use ack='journal', 'fsync' or 'store'.",
    ),
    "power-loss-durable": (
        frozenset({"fsync", "store"}),
        "ack='memory' and ack='journal' acknowledge before fdatasync, so a power loss can drop "
        "acknowledged writes; use ack='fsync' or 'store'. (ack='replicated' survives one "
        "machine's power loss, and all NATS machines' together only if the servers run with "
        "sync_interval: always, which the cache cannot check when it starts.)",
    ),
    "alert-on-flush-failure": (
        frozenset(ACK_MODES + CLUSTER_ACK_MODES),
        "",
    ),
}

DEFAULT_STORE = "sqlite:///writebehind.db"
DEFAULT_JOURNAL_DIR = "writebehind-journal"
#: The smallest journal segment (``Journal.open`` refuses less).
MIN_SEGMENT_BYTES = 4096
#: Schemes of a ``Config.cluster`` server URL (what ``nats-py`` connects to).
CLUSTER_SCHEMES = ("nats", "tls")
#: The most replicas a JetStream stream or KV bucket can have.
MAX_REPLICAS = 5
#: A cluster's name becomes part of stream, bucket and subject names.
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        or math.isnan(value)
    ):
        raise ConfigError(
            f"Config.{attribute.name} must be a positive number, got {value!r}"
        )
    if math.isinf(value):
        raise ConfigError(f"Config.{attribute.name} must be a finite number, got {value!r}")


def _positive_or_inf(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A positive duration where ``inf`` means "no limit" (nan is never meaningful)."""
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return
    _positive(instance, attribute, value)


def _instance_of(
    kind: type | tuple[type, ...], what: str, *, optional: bool = False
) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    """Exactly this type: ``bool`` is not an ``int`` here, and no string is truthy."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) and kind is not bool:
            ok = False
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise ConfigError(
                f"Config.{attribute.name} must be {what}{' or None' if optional else ''}, "
                f"got {value!r} ({type(value).__name__})"
            )

    return check


def _callable_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigError(
            f"Config.{attribute.name} must be a callable or None, got {value!r}"
        )


def _path(value: str | PurePath) -> Path:
    # Anything with __fspath__ is a path (os.PathLike's own test, without importing os).
    if isinstance(value, bool) or not (isinstance(value, str) or hasattr(value, "__fspath__")):
        raise ConfigError(
            f"Config.journal_dir must be a path (str or pathlib.Path), got {value!r} "
            f"({type(value).__name__})"
        )
    return Path(value)


def _positive_int(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"Config.{attribute.name} must be a positive integer, got {value!r}"
        )


def _one_of(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(
                f"Config.{attribute.name} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}"
            )

    return check


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for reprs, logs, errors and the
    inspector): the one after ``user:`` (up to the last ``@`` before the path, so a password
    holding ``@`` is hidden whole) and a libpq ``password=`` query parameter."""
    url = re.sub(r"(://[^:/@?#]*):[^/?#]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


#: Where a SQLite store's blocking calls run: a worker thread of the cache's process (the
#: default: it won the alternated measurements, specs/performance.md) or a worker process of
#: its own (its CPU and GIL then stay off the event loop's process).
SQLITE_WORKERS = ("thread", "process")
DEFAULT_SQLITE_WORKER = "thread"


def sqlite_worker(url: str) -> str:
    """The URL's ``?worker=thread|process`` (default ``thread``); :class:`ConfigError` for
    any other option or value."""
    _, sep, query = url.partition("?")
    worker = DEFAULT_SQLITE_WORKER
    for option in query.split("&") if sep else ():
        name, eq, value = option.partition("=")
        if name != "worker" or not eq:
            raise ConfigError(
                f"Config.store {url!r} has an unknown option {option!r}; a SQLite URL takes "
                "only '?worker=thread' or '?worker=process'"
            )
        if value not in SQLITE_WORKERS:
            raise ConfigError(
                f"Config.store {url!r} asks for worker {value!r}; write '?worker=thread' "
                "(the default: a worker thread) or '?worker=process' (a process of its own)"
            )
        worker = value
    return worker


def _store_url(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.startswith(
        ("sqlite://", "postgresql://", "postgres://")
    ):
        raise ConfigError(
            f"Config.store must be a URL like 'sqlite:///path/store.db' or "
            f"'postgresql://user@host:5432/db', got "
            f"{mask_url(value) if isinstance(value, str) else value!r}"
        )


def _inspector_address(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _instance_of(str, "'HOST:PORT'", optional=True)(instance, attribute, value)
    if value is not None:
        parse_address(value, what=f"Config.{attribute.name}")


def _cluster_urls(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"Config.cluster must be a comma-separated list of NATS URLs like "
            f"'nats://h1:4222,nats://h2:4222', or None, got {value!r}"
        )
    for url in cluster_servers(value):
        scheme, sep, rest = url.partition("://")
        host, _, port = rest.rpartition(":")
        if (
            not sep or scheme not in CLUSTER_SCHEMES or not host or "/" in rest
            or not port.isdigit() or not 0 < int(port) < 65536
        ):
            raise ConfigError(
                f"Config.cluster: {mask_url(url)!r} is not a NATS server URL like "
                f"'nats://host:4222' (schemes: {', '.join(CLUSTER_SCHEMES)}; the port is "
                "required)"
            )


def cluster_servers(value: str) -> list[str]:
    """The server URLs of a ``Config.cluster`` value, in order."""
    return [url.strip() for url in value.split(",") if url.strip()]


def _cluster_name(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _CLUSTER_NAME.fullmatch(value):
        raise ConfigError(
            f"Config.cluster_name must be 1 to 64 letters, digits, '_' or '-' (it names the "
            f"cluster's JetStream stream, lease bucket and subjects), got {value!r}"
        )


def _replicas(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _positive_int(instance, attribute, value)
    if value > MAX_REPLICAS:
        raise ConfigError(
            f"Config.replicas must be at most {MAX_REPLICAS} (JetStream's limit), got {value!r}"
        )


def _ack(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ACK_MODES + CLUSTER_ACK_MODES:
        raise ConfigError(
            f"Config.ack must be one of {', '.join(map(repr, ACK_MODES))}, got {value!r} "
            f"(with Config.cluster: {', '.join(map(repr, CLUSTER_ACK_MODES))})"
        )


def _requires(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"Config.requires must be a list of names, got {value!r}") from None
    for item in items:
        if item not in REQUIREMENTS:
            raise ConfigError(
                f"Config.requires names an unknown requirement {item!r}; "
                f"known: {', '.join(sorted(REQUIREMENTS))}"
            )
    return items


@attrs.frozen(kw_only=True)
class Config:
    """How a cache runs. Every field has a named default; bad values raise :class:`ConfigError`.

    Sizes are per cache; ``max_dirty`` and ``max_entries`` are split evenly across shards.
    Durations are in seconds, sizes in bytes. Each field below gives its unit, its range and
    its default (``tests/test_docs_reference.py`` checks the defaults against the fields).

    Attributes:
        store (str): Where flushed writes go: ``'sqlite:///relative.db'``,
            ``'sqlite:////absolute.db'`` or ``'postgresql://user@host:5432/db'`` (the
            ``postgres`` extra; ``postgres://`` too). A password in it is masked in reprs,
            logs and errors. A SQLite URL may end in ``?worker=thread`` (the default: each
            store actor calls its store from a worker thread) or ``?worker=process`` (from a
            worker process of its own). Default: `'sqlite:///writebehind.db'`.
        store_table (str): The store's table; its meta and quarantine tables are named after
            it. SQLite: an identifier; PostgreSQL: ``[a-z_][a-z0-9_]*``, at most 41
            characters. One running cache per table. Default: `'writebehind_entries'`.
        journal_dir (Path): The directory of the shards' journals (created if missing;
            relative to the working directory, or to the file in :meth:`from_toml`). One
            cache per directory. Default: `'writebehind-journal'`.
        ack (str): When ``put``/``delete`` return: ``'memory'``, ``'journal'``, ``'fsync'``
            or ``'store'`` (see :data:`ACK_MODES` and the contract); with ``cluster``,
            ``'replicated'`` (and only it): once a majority of the partition journal's NATS
            replicas stored the group commit holding the write (``specs/cluster.md``).
            Default: `'fsync'`.
        shards (int): Shard actors, each with its own journal and key range. Range: >= 1;
            may change between runs (the next start replays the journals first), except
            with ``cluster``, where a shard is a partition. Default: `2`.
        store_actors (int): Store actors, each with its own store connection and one
            transaction at a time. Range: >= 1. Default: `1`.
        flush_interval (float): Seconds a shard lets a written key wait for rewrites
            before it sends the key to the store (``flush_interval_ms`` in TOML); the
            batch then also takes keys that have waited half of it. Rewrites within the
            wait coalesce into one store row. Range: > 0, finite. Default: `0.5`.
        batch_size (int): Records per store transaction. Range: >= 1. Default: `512`.
        flush_threshold (int): Dirty keys in a shard that start a flush before
            ``flush_interval`` ends. Range: >= 1. Default: `4096`.
        max_inflight_batches (int): Batches per shard sent to the store and not yet
            answered. Range: >= 1. Default: `4`.
        max_dirty (int): Unpersisted entries, over all shards, before backpressure
            (``on_overload``). Range: >= 1. Default: `200000`.
        max_dirty_age (float): Seconds the oldest unpersisted write may wait before
            backpressure. Range: > 0; ``inf``: no limit. Default: `60.0`.
        on_overload (str): Backpressure: ``'wait'`` (``put`` waits) or ``'raise'``
            (:class:`Overloaded`). Default: `'wait'`.
        max_entries (int): Keys held in memory over all shards; only clean (persisted)
            entries are evicted. Range: >= 1. Default: `1000000`.
        max_key_bytes (int): Bytes of a key's UTF-8. Range: >= 1, at most 2000 on
            PostgreSQL, and a key and a value must fit in one journal record
            (1073741800 bytes together). Default: `1024`.
        max_value_bytes (int): Bytes of a value. Range: >= 1 (see ``max_key_bytes``).
            Default: `1048576` (1 MiB).
        segment_bytes (int): Bytes of a journal segment before the next one starts.
            Range: >= 4096. Default: `8388608` (8 MiB).
        journal_sync_interval (float): Seconds a written journal record may stay unsynced
            (``ack='memory'`` and ``'journal'``; the other modes sync before they
            acknowledge). Range: > 0, finite. Default: `1.0`.
        memory_write_interval (float): ``ack='memory'`` only: seconds a put may wait in the
            journal's buffer before it is written; the window a process crash can lose.
            Range: > 0, finite. Default: `0.1`.
        retry_initial (float): Seconds of backoff after a first failed store call; doubles
            per failure, with jitter. Range: > 0, finite. Default: `0.05`.
        retry_max (float): The longest backoff, in seconds. Range: >= ``retry_initial``,
            finite. Default: `5.0`.
        max_restarts (int): Actor restarts within ``restart_period`` before the cache stops
            with :class:`TooManyRestarts`. Range: >= 1. Default: `5`.
        restart_period (float): The window of ``max_restarts``, in seconds. Range: > 0,
            finite. Default: `10.0`.
        lease_ttl (float): Seconds the store table's lease lasts without renewal (renewed
            every third of it): how long a crashed instance on another host keeps its table
            from a new start, and how far the hosts' clocks may disagree. With ``cluster``
            also the partition leases' TTL (renewed every fifth of it; their holder stops
            acknowledging a fifth of it before they end, the clock-drift margin): how long
            a crashed owner's partitions wait for a new one. Range: >= 1, finite.
            Default: `30.0`.
        drain_timeout (float): Seconds a stop spends flushing; what is left replays at the
            next start. Range: > 0; ``inf``: no limit. Default: `30.0`.
        store_timeout (float): Seconds a store call may take (SQLite's busy timeout;
            PostgreSQL's connect, statement and lock timeouts). Range: > 0, finite.
            Default: `30.0`.
        repair_journal (bool): Cut a corrupted journal at the damage at start (keeping the
            cut bytes in side files) instead of refusing to start with
            :class:`JournalCorruption`. Default: `False`.
        seed (int | None): Seed of the retry jitter; None: a random one. Default: `None`.
        requires (tuple[str, ...]): Guarantees the configuration declares it needs (names of
            :data:`REQUIREMENTS`); start-up refuses an ``ack`` that cannot honour one.
            Default: `()`.
        on_alert (Callable[[str], None] | None): Called with each alert's message (flush
            failures, quarantined records, cut journal tails, crash loops); not settable
            from TOML. Default: `None`.
        inspector (str | None): ``'HOST:PORT'`` of the websocket inspector (port 0: any
            free port); None: no inspector. Default: `None`.
        inspector_token (str | None): The token inspector clients must send; required when
            ``inspector`` is not a loopback address. Default: `None`.
        metrics (str | None): ``'HOST:PORT'`` of a Prometheus endpoint (``GET /metrics``) of
            its own; None: none (the inspector's port serves ``/metrics`` too).
            Default: `None`.
        metrics_token (str | None): The token scrapers must send; required when ``metrics``
            is not a loopback address. Default: `None`.
        cluster (str | None): Cluster mode (preview): the NATS JetStream servers, as
            comma-separated URLs (``'nats://h1:4222,nats://h2:4222'``; ``tls://`` too; a
            password in them is masked in reprs and errors).
            Each shard is a partition whose journal is a subject of a replicated JetStream
            stream and whose owner holds a lease in a JetStream KV bucket; needs
            ``ack='replicated'`` and the ``cluster`` extra (``nats-py``). None: a single
            process with file journals. Default: `None`.
        cluster_name (str): Names the cluster's stream (``WB_<name>``), lease bucket
            (``wb-<name>-leases``) and subjects; every instance of one cluster uses the same.
            1 to 64 letters, digits, ``_`` or ``-``. Default: `'writebehind'`.
        partitions (int | None): With ``cluster``: the number of partitions, fixed for the
            cluster's life (it decides which partition holds a key); it is ``shards``
            (setting one sets the other; setting both, they must agree). Range: >= 1; None:
            ``shards``. Default: `None`.
        replicas (int): With ``cluster``: replicas of the journal stream and the lease
            bucket when this instance creates them (3 in production: a write then survives
            the loss of any one NATS machine). Range: 1 to 5. Default: `3`.
    """

    store: str = attrs.field(
        default=DEFAULT_STORE, validator=_store_url, repr=lambda url: repr(mask_url(url))
    )
    store_table: str = attrs.field(
        default="writebehind_entries", validator=_instance_of(str, "a table name (str)")
    )
    journal_dir: Path = attrs.field(default=Path(DEFAULT_JOURNAL_DIR), converter=_path)
    ack: AckMode = attrs.field(default="fsync", validator=_ack)
    # Each shard group-commits its own journal: fewer shards mean bigger group commits (one
    # fdatasync releases more writers); on trio more shards add no CPU parallelism.
    shards: int = attrs.field(default=2, validator=_positive_int)
    store_actors: int = attrs.field(default=1, validator=_positive_int)
    flush_interval: float = attrs.field(default=0.5, validator=_positive)
    batch_size: int = attrs.field(default=512, validator=_positive_int)
    # Dirty keys per shard that start a flush before flush_interval ends. Well above
    # batch_size: a hot key rewritten between flushes costs one store write, not many.
    flush_threshold: int = attrs.field(default=4096, validator=_positive_int)
    max_inflight_batches: int = attrs.field(default=4, validator=_positive_int)
    max_dirty: int = attrs.field(default=200_000, validator=_positive_int)
    max_dirty_age: float = attrs.field(default=60.0, validator=_positive_or_inf)
    on_overload: Literal["wait", "raise"] = attrs.field(
        default="wait", validator=_one_of(("wait", "raise"))
    )
    max_entries: int = attrs.field(default=1_000_000, validator=_positive_int)
    max_key_bytes: int = attrs.field(default=1024, validator=_positive_int)
    max_value_bytes: int = attrs.field(default=1 << 20, validator=_positive_int)
    segment_bytes: int = attrs.field(default=8 << 20, validator=_positive_int)
    journal_sync_interval: float = attrs.field(default=1.0, validator=_positive)
    # ack='memory' only: how long a put may sit in the journal's buffer before it is written.
    # This is the bounded window a process crash can lose; batching saves a write per put.
    memory_write_interval: float = attrs.field(default=0.1, validator=_positive)
    retry_initial: float = attrs.field(default=0.05, validator=_positive)
    retry_max: float = attrs.field(default=5.0, validator=_positive)
    max_restarts: int = attrs.field(default=5, validator=_positive_int)
    restart_period: float = attrs.field(default=10.0, validator=_positive)
    lease_ttl: float = attrs.field(default=LEASE_TTL, validator=_positive)
    drain_timeout: float = attrs.field(default=30.0, validator=_positive_or_inf)
    store_timeout: float = attrs.field(default=30.0, validator=_positive)
    repair_journal: bool = attrs.field(
        default=False, validator=_instance_of(bool, "True or False")
    )
    seed: int | None = attrs.field(
        default=None, validator=_instance_of(int, "an integer", optional=True)
    )
    requires: tuple[str, ...] = attrs.field(default=(), converter=_requires)
    on_alert: Callable[[str], None] | None = attrs.field(
        default=None, eq=False, repr=False, validator=_callable_or_none
    )
    # "HOST:PORT" of the websocket inspector (live actor state); None: no inspector.
    inspector: str | None = attrs.field(default=None, validator=_inspector_address)
    inspector_token: str | None = attrs.field(
        default=None, repr=False, validator=_instance_of(str, "a string", optional=True)
    )
    # "HOST:PORT" of a Prometheus endpoint (GET /metrics) of its own; None: none. The
    # inspector's port serves /metrics too.
    metrics: str | None = attrs.field(default=None, validator=_inspector_address)
    metrics_token: str | None = attrs.field(
        default=None, repr=False, validator=_instance_of(str, "a string", optional=True)
    )
    # Cluster mode (preview): NATS JetStream servers; None: a single process.
    cluster: str | None = attrs.field(
        default=None, validator=_cluster_urls,
        repr=lambda urls: repr(urls if urls is None else mask_url(urls)),
    )
    cluster_name: str = attrs.field(default="writebehind", validator=_cluster_name)
    partitions: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive_int)
    )
    replicas: int = attrs.field(default=3, validator=_replicas)

    def __attrs_post_init__(self) -> None:
        if self.store.startswith("sqlite://"):
            if not self.store[len("sqlite://"):]:
                raise ConfigError(f"Config.store has no path: {self.store!r}")
            sqlite_worker(self.store)
        if self.segment_bytes < MIN_SEGMENT_BYTES:
            raise ConfigError(
                f"Config.segment_bytes must be at least {MIN_SEGMENT_BYTES}, "
                f"got {self.segment_bytes!r}"
            )
        if RECORD_OVERHEAD + self.max_key_bytes + self.max_value_bytes > MAX_PAYLOAD:
            raise ConfigError(
                f"Config.max_value_bytes ({self.max_value_bytes!r}) plus Config.max_key_bytes "
                f"({self.max_key_bytes!r}) must fit in one journal record: at most "
                f"{MAX_PAYLOAD - RECORD_OVERHEAD} bytes together"
            )
        limits = store_limits(self.store)
        if limits.max_key_bytes is not None and self.max_key_bytes > limits.max_key_bytes:
            raise ConfigError(
                f"Config.max_key_bytes={self.max_key_bytes!r} is over what the "
                f"{limits.name} store can index ({limits.max_key_bytes} bytes of UTF-8 per "
                f"key); set it to at most {limits.max_key_bytes} (hash longer keys)"
            )
        if self.lease_ttl < MIN_LEASE_TTL:
            raise ConfigError(
                f"Config.lease_ttl must be at least {MIN_LEASE_TTL} seconds (it is renewed "
                f"every third of it, through the store), got {self.lease_ttl!r}"
            )
        if self.retry_max < self.retry_initial:
            raise ConfigError(
                f"Config.retry_max ({self.retry_max!r}) must be >= Config.retry_initial "
                f"({self.retry_initial!r})"
            )
        if self.inspector is not None:
            host, _ = parse_address(self.inspector, what="Config.inspector")
            if not is_loopback(host) and not self.inspector_token:
                raise ConfigError(
                    f"Config.inspector={self.inspector!r} is reachable from other machines; "
                    "set Config.inspector_token (clients must send it) or bind to 127.0.0.1"
                )
        if self.metrics is not None:
            host, _ = parse_address(self.metrics, what="Config.metrics")
            if not is_loopback(host) and not self.metrics_token:
                raise ConfigError(
                    f"Config.metrics={self.metrics!r} is reachable from other machines; "
                    "set Config.metrics_token (scrapers must send it) or bind to 127.0.0.1"
                )
        if self.cluster is None:
            if self.ack in CLUSTER_ACK_MODES:
                raise ConfigError(
                    f"Config.ack={self.ack!r} needs a cluster: set Config.cluster to the NATS "
                    "servers ('nats://h1:4222,...'), or use ack='fsync' for a single process"
                )
            if self.partitions is not None:
                raise ConfigError(
                    f"Config.partitions={self.partitions!r} is for cluster mode: set "
                    "Config.cluster, or use Config.shards for a single process"
                )
        else:
            if self.ack not in CLUSTER_ACK_MODES:
                raise ConfigError(
                    f"Config.cluster is set, so Config.ack must be 'replicated' (acknowledged "
                    f"once a majority of the NATS replicas stored the write), got {self.ack!r}"
                )
            if self.partitions is not None and self.partitions != self.shards:
                raise ConfigError(
                    f"Config.partitions ({self.partitions!r}) and Config.shards "
                    f"({self.shards!r}) differ: in a cluster each shard is a partition; set "
                    "one of them"
                )
        for name in self.requires:
            modes, why = REQUIREMENTS[name]
            if self.ack not in modes:
                raise ConfigError(
                    f"Config declares requires={name!r}, which ack={self.ack!r} cannot honour: "
                    f"{why}"
                )

    @property
    def journal_ack(self) -> AckMode:
        """What a shard waits for on its journal before it acknowledges: ``'replicated'``
        waits like ``'fsync'`` (a replicated journal's records are synced at the
        publish-ack)."""
        return "fsync" if self.ack == "replicated" else self.ack

    @property
    def max_dirty_per_shard(self) -> int:
        return max(1, self.max_dirty // self.shards)

    @property
    def max_entries_per_shard(self) -> int:
        return max(1, self.max_entries // self.shards)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "mapping") -> Config:
        """Build from plain data (TOML's shape); unknown keys are an error naming them."""
        data = dict(data.get("writebehind", data))
        if "flush_interval_ms" in data:
            ms = data.pop("flush_interval_ms")
            if isinstance(ms, bool) or not isinstance(ms, int | float):
                raise ConfigError(
                    f"{source}: flush_interval_ms must be a number of milliseconds, got {ms!r}"
                )
            data["flush_interval"] = ms / 1000
        if "ack_mode" in data:
            data["ack"] = data.pop("ack_mode")
        if isinstance(data.get("ack"), str):
            data["ack"] = {"on-cache-write": "memory"}.get(data["ack"], data["ack"])
        if isinstance(data.get("requires"), list):
            data["requires"] = tuple(data["requires"])
        known = {a.name for a in attrs.fields(cls)} - {"on_alert"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: {unknown_settings(unknown, known)}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Config:
        """Read a TOML file: top-level keys or a ``[writebehind]`` table; same names as fields."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
        # Relative paths in a config file mean "next to the file", wherever it is run from.
        base = path.parent
        cfg = cls.from_mapping(data, source=str(path))
        if not cfg.journal_dir.is_absolute():
            cfg = attrs.evolve(cfg, journal_dir=base / cfg.journal_dir)
        if cfg.store.startswith("sqlite:///") and not cfg.store.startswith("sqlite:////"):
            cfg = attrs.evolve(cfg, store=f"sqlite:///{base / cfg.store[len('sqlite:///'):]}")
        return cfg


def unknown_settings(names: list[str], known: set[str] | frozenset[str]) -> str:
    """A sentence naming unknown settings, the close matches of each, and every known one."""
    hints = []
    for name in names:
        close = difflib.get_close_matches(str(name), sorted(known), n=3)
        if close:
            hints.append(f"{name} (did you mean {' or '.join(close)}?)")
        else:
            hints.append(str(name))
    return f"unknown setting(s) {', '.join(hints)}; known: {', '.join(sorted(known))}"


_attrs_init = Config.__init__


@functools.wraps(_attrs_init)
def _checked_init(self: Config, *args: Any, **kwargs: Any) -> None:
    # attrs would raise a bare TypeError for a misspelt keyword: name it and suggest the fix.
    unknown = sorted(set(kwargs) - _FIELDS)
    if unknown:
        raise ConfigError(f"Config: {unknown_settings(unknown, _FIELDS)}")
    partitions = kwargs.get("partitions")
    if isinstance(partitions, int) and not isinstance(partitions, bool) and partitions > 0 \
            and "shards" not in kwargs:
        kwargs["shards"] = kwargs["partitions"]  # a cluster's shard is a partition
    _attrs_init(self, *args, **kwargs)


_FIELDS = frozenset(a.name for a in attrs.fields(Config))
Config.__init__ = _checked_init  # type: ignore[method-assign]
