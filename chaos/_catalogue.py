"""The catalogue of durability mutants: realistic bugs the chaos harness should catch.

Each :class:`Mutant` is one textual edit of the runtime's source (``find`` must occur exactly
once in ``file``, a path from the repository root) that breaks one rule of the durability
contract in some reachable situation: it loses or resurrects an acknowledged write, makes a
read go backwards, or hangs a flush. ``writebehind chaos mutants`` applies each to a copy of the
tree and runs the smoke suite against it (:mod:`writebehind.chaos._mutants`); the tests check
that every entry still applies to the current source.
"""

from __future__ import annotations

import attrs

AREAS = (
    "journal", "scan", "shard-core", "shard", "store-actor", "sqlite", "postgres", "cache",
    "recover", "cluster",
)


@attrs.frozen
class Edit:
    """One textual edit: replace ``find`` (exactly once in ``file``) by ``replace``."""

    file: str
    find: str
    replace: str

    def apply(self, source: str, name: str) -> str:
        """The edited source; ``ValueError`` (naming mutant ``name``) unless ``find``
        occurs exactly once."""
        count = source.count(self.find)
        if count != 1:
            raise ValueError(
                f"mutant {name}: its find text occurs {count} times in {self.file} "
                "(expected exactly once): the source drifted, update the catalogue"
            )
        return source.replace(self.find, self.replace)


@attrs.frozen(kw_only=True)
class Mutant:
    """One deliberate bug: replace ``find`` (exactly once in ``file``) by ``replace``, and
    make the further edits ``also`` (a higher-order mutant)."""

    name: str
    area: str
    file: str
    find: str
    replace: str
    rule: str
    needs: str | None = None  # "postgres": only with a PostgreSQL --store
    # The suite that must catch it: "cluster" mutants break ownership, fencing or take-over
    # and run with ``writebehind chaos run --suite cluster``.
    suite: str = "smoke"
    also: tuple[Edit, ...] = ()
    # Why no run of its suite can tell it from the original: it removes one layer of
    # defence that another covers under every fault the suite injects. Such a mutant is
    # measured but not scored; the catalogue then holds ``cover``, the same bug with the
    # covering layer removed too, which the suite must catch.
    equivalent: str | None = None
    cover: str | None = None

    def edits(self) -> tuple[Edit, ...]:
        return (Edit(self.file, self.find, self.replace), *self.also)

    def apply(self, source: str) -> str:
        """The first edit applied to ``source`` (``ValueError`` unless ``find`` occurs
        exactly once); :meth:`edits` lists them all."""
        return self.edits()[0].apply(source, self.name)


_J = "actors/_journal/_journal.py"
_CODEC = "actors/_journal/_codec.py"
_SCAN = "actors/_journal/_scan.py"
_REC = "actors/_journal/_recovery.py"
_CORE = "actors/_core/_shard_core.py"
_SHARD = "actors/_runtime/_shard.py"
_SA = "actors/_runtime/_store_actor.py"
_SQL = "actors/_stores/_sqlite.py"
_PG = "actors/_stores/_postgres.py"
_SQLTEXT = "actors/_stores/_sql.py"  # the statements both stores run
_CACHE = "actors/_runtime/_cache.py"
_REPL = "actors/_cluster/_replicated.py"
_ROUTING = "actors/_cluster/_routing.py"
_PJ = "actors/_cluster/_journal.py"
#: Why the store's epoch fence (and the batches' fences) are a second layer under the versions.
_LATE_BATCH = (
    "a former owner's batch holds only records it published (flushes wait for the "
    "publish-ack), all of which the new owner replayed before it fenced and served, at "
    "versions below every one the new owner assigns: so a late batch can only move a row "
    "to a value the new owner holds dirty (served from memory, never read through) until "
    "its own flush of it or a newer one, which the versioned upsert keeps (missed at every "
    "seed and fault mix tried; the one catch, at 505314b, came before the routed-repeat fix "
    "and is read as that bug)"
)

MUTANTS: tuple[Mutant, ...] = (
    # -- the journal ------------------------------------------------------------------------
    Mutant(
        name="journal-sync-claims-later-appends",
        area="journal", file=_J,
        find="""\
            target = self._written_seq
            await self._io(self._sync_blocking)
            if self._closed:
                return
            self._synced(target)""",
        replace="""\
            target = self._written_seq
            await self._io(self._sync_blocking)
            if self._closed:
                return
            self._synced(self._next_seq - 1)""",
        rule="ack=fsync acknowledges a write only once its own record is fdatasynced, not "
        "records appended while an earlier sync was running",
    ),
    Mutant(
        name="journal-rotate-unsynced-tail",
        area="journal", file=_J,
        find="""\
        if self._unsynced() and (rotate or self._sync_due()):
            target = self._written_seq
            await self._io(self._sync_blocking)
            if self._closed:
                return
            self._synced(target)
            await self._apply_checkpoints()
        if rotate and not self._unsynced() and not self._closed:""",
        replace="""\
        if self._unsynced() and self._sync_due():
            target = self._written_seq
            await self._io(self._sync_blocking)
            if self._closed:
                return
            self._synced(target)
            await self._apply_checkpoints()
        if rotate and not self._closed:""",
        rule="a segment's tail is fdatasynced before the journal rotates to a new segment, so "
        "power loss never leaves a sequence gap between segments",
    ),
    Mutant(
        name="journal-segment-delete-off-by-one",
        area="journal", file=_J,
        find="self._segments[1].first_seq - 1 <= self._persisted_seq:",
        replace="self._segments[1].first_seq - 2 <= self._persisted_seq:",
        rule="a segment is deleted only when every record in it is at or below the durable "
        "persisted mark",
    ),
    Mutant(
        name="codec-empty-value-is-tombstone",
        area="journal", file=_CODEC,
        find="""\
    if value is None:
        payload = b"".join((_FIXED.pack(seq, version, len(key)), key, _TOMBSTONE_LEN))""",
        replace="""\
    if not value:
        payload = b"".join((_FIXED.pack(seq, version, len(key)), key, _TOMBSTONE_LEN))""",
        rule="a put of an empty value is journaled as a put, not a tombstone: replay must "
        "give back exactly what was acknowledged",
    ),
    Mutant(
        name="codec-no-sequence-gap-check",
        area="journal", file=_CODEC,
        find="        if seq != expected or key_end + _VALUE_LEN.size > end:",
        replace="        if key_end + _VALUE_LEN.size > end:",
        rule="recovery refuses a segment whose sequence numbers skip (a missing record is "
        "corruption, never silently replayed around)",
    ),
    # -- scan and recovery ------------------------------------------------------------------
    Mutant(
        name="scan-small-final-frame-missed",
        area="scan", file=_SCAN,
        find="    for pos in range(start, end - FRAME_HEADER_SIZE - MIN_PAYLOAD + 1):",
        replace="    for pos in range(start, end - FRAME_HEADER_SIZE - MIN_PAYLOAD):",
        rule="damage followed by any valid frame (even a minimal final checkpoint) is "
        "corruption, not a torn tail to cut silently",
    ),
    Mutant(
        name="scan-replay-skips-first-unpersisted",
        area="scan", file=_SCAN,
        find="            if r.kind is not checkpoint and r.seq > persisted",
        replace="            if r.kind is not checkpoint and r.seq > persisted + 1",
        rule="recovery replays every record above the persisted mark, including the first",
    ),
    Mutant(
        name="scan-drops-tombstones",
        area="scan", file=_SCAN,
        find="            if r.kind is not checkpoint and r.seq > persisted",
        replace="            if r.kind is RecordKind.PUT and r.seq > persisted",
        rule="recovery replays deletes as well as puts: an acknowledged delete is never undone",
    ),
    Mutant(
        name="recovery-no-sync-after-crash",
        area="scan", file=_REC,
        find="""\
        # before anyone builds on it.
        fs.fdatasync(fd)""",
        replace="""\
        # before anyone builds on it.""",
        rule="what recovery replays (and serves to readers) is durable before the cache "
        "builds on it, so a later power loss cannot make a read go backwards",
    ),
    Mutant(
        name="recovery-torn-tail-not-truncated",
        area="scan", file=_REC,
        find="""\
        else:
            fs.truncate(torn.path, torn.offset)""",
        replace="""\
        else:
            pass  # the side file keeps the torn bytes""",
        rule="a torn tail is cut before new records are appended, so it never becomes damage "
        "followed by valid data (corruption) at the next start",
    ),
    Mutant(
        name="recovery-new-segment-dir-not-synced",
        area="scan", file=_REC,
        # The manifest's own directory sync would make the entry durable too: both go.
        find="""\
        fs.fdatasync(fd)
        fs.fsync_dir(directory)
        publish_newest(fs, directory, header)
    except BaseException:""",
        replace="""\
        fs.fdatasync(fd)
    except BaseException:""",
        rule="a new segment's directory entry is durable before records in it are "
        "acknowledged as synced",
    ),
    Mutant(
        name="recovery-manifest-before-segment-durable",
        area="scan", file=_REC,
        find="""\
        fs.fdatasync(fd)
        fs.fsync_dir(directory)
        publish_newest(fs, directory, header)
    except BaseException:""",
        replace="""\
        publish_newest(fs, directory, header)
        fs.fdatasync(fd)
        fs.fsync_dir(directory)
    except BaseException:""",
        rule="the manifest names a segment as the newest only once that segment is durable: "
        "a power loss never makes a correct journal look like it lost its tail segment",
    ),
    # -- the shard's state machine ----------------------------------------------------------
    Mutant(
        name="core-mark-off-by-one",
        area="shard-core", file=_CORE,
        find="""\
                pending.popleft()
                continue
            return seq - 1""",
        replace="""\
                pending.popleft()
                continue
            return seq""",
        rule="the journal is checkpointed only up to records the store holds; the oldest "
        "unpersisted record stays above the mark",
    ),
    Mutant(
        name="core-flush-ignores-inflight",
        area="shard-core", file=_CORE,
        find="""\
                entry = entries.get(record.key)
                owed[record.key] = record.version if entry is None else entry.version""",
        replace="                pass  # handed to the store: as good as landed",
        rule="flush() returns only once every acknowledged write is in the store, not while "
        "batches are still in flight",
    ),
    Mutant(
        name="core-clean-while-newer-in-flight",
        area="shard-core", file=_CORE,
        find="            if entry.persisted_version >= entry.version and key not in dirty:",
        replace="            if key not in dirty:",
        rule="an entry is clean (evictable, passable by the mark) only once the store holds "
        "its newest version, not an older one while the newer is in flight",
    ),
    Mutant(
        name="core-retry-gives-up",
        area="shard-core", file=_CORE,
        find="""\
            elif entry.version == r.version:
                requeue.append(r.key)""",
        replace="""\
            elif entry.version == r.version and self.failures < 4:  # give up on a batch
                requeue.append(r.key)  # the store keeps failing""",
        rule="a batch the store did not commit is retried until it lands, however many "
        "attempts that takes",
    ),
    Mutant(
        name="core-replay-skips-first-tombstone",
        area="shard-core", file=_CORE,
        find="""\
            # A key's first record: what write() would do, without its general checks.
            seq = record.seq""",
        replace="""\
            # A key's first record: what write() would do, without its general checks.
            if record.value is None:
                continue  # deleting a key we do not hold: nothing to do
            seq = record.seq""",
        rule="replay keeps a tombstone even for a key the shard does not hold: the store may "
        "still hold the value it deletes",
    ),
    Mutant(
        name="core-evicts-dirty",
        area="shard-core", file=_CORE,
        find="""\
        victims = list(itertools.islice(clean, excess))
        for key in victims:
            del clean[key]
            del entries[key]""",
        replace="""\
        victims = list(itertools.islice(entries, excess))  # the oldest entries first
        for key in victims:
            clean.pop(key, None)
            self.dirty.pop(key, None)
            del entries[key]""",
        rule="eviction only ever drops clean entries: a dirty one is the only copy of an "
        "acknowledged write outside the journal, and the checkpoint would pass it",
    ),
    # -- the shard actor --------------------------------------------------------------------
    Mutant(
        name="shard-read-through-caches-stale",
        area="shard", file=_SHARD,
        find=(
            "        if record is not None and core is reader"
            " and core.mutation_count() == before:"
        ),
        replace="        if record is not None:",
        rule="a read-through caches what it read only if no write (or eviction) of the shard "
        "happened meanwhile: a stale read must not become the cached value",
    ),
    Mutant(
        name="shard-epoch-reused-on-restart",
        area="shard", file=_SHARD,
        find="                epoch = await self._epochs.take_epoch(self.shard)",
        replace="                epoch = self._epoch or await self._epochs.take_epoch(self.shard)",
        rule="each shard incarnation takes a new epoch, so its versions are above every "
        "version the previous incarnation journaled",
    ),
    Mutant(
        name="shard-write-through-refusal-hidden",
        area="shard", file=_SHARD,
        find="""\
                if message.rejected:  # not in the store: the caller must not be told it is
                    self._through[message.batch_id] = message.rejected[0]
                else:
                    core.settle(record, superseded=bool(message.superseded))
                    self._through[message.batch_id] = None
                    if self._unanswered.get(record.key, math.inf) < record.version:""",
        replace="""\
                core.settle(record, superseded=bool(message.superseded))
                self._through[message.batch_id] = None
                if self._unanswered.get(record.key, math.inf) < record.version:""",
        rule="ack='store' acknowledges a write only if the store took it; a refusal raises "
        "StoreRejected",
    ),
    Mutant(
        name="shard-many-acks-before-sync",
        area="shard", file=_SHARD,
        find="                await journal.wait_synced(last)",
        replace="                await journal.wait_written(last)",
        rule="put_many acknowledges each key as put would: in ack='fsync' only once its "
        "journal record is synced",
    ),
    Mutant(
        name="shard-flush-watches-dead-incarnation",
        area="shard", file=_SHARD,
        find="""\
            core.request_flush()
            self._kick()
            await self._progress.wait()
            core = await self._ready_core()

    def statistics""",
        replace="""\
            core.request_flush()
            self._kick()
            await self._progress.wait()
            await self._ready_core()

    def statistics""",
        rule="flush() finishes across a shard restart: it follows the incarnation that "
        "replays the writes, not the one that died",
    ),
    # -- the store actor --------------------------------------------------------------------
    Mutant(
        name="store-actor-drops-refusals",
        area="store-actor", file=_SA,
        find="                await _answer(reply, StoreAck(batch.batch_id, rejected, superseded))",
        replace="                await _answer(reply, StoreAck(batch.batch_id, (), superseded))",
        rule="a record the store refused is reported back to the shard (quarantined), never "
        "counted as persisted",
    ),
    Mutant(
        name="store-actor-crash-forgets-pipelined",
        area="store-actor", file=_SA,
        find="            for batch, reply in held:",
        replace="            for batch, reply in held[:1]:",
        rule="a store actor that crashes answers every batch it holds (a pipelined one too), "
        "so the shard retries them",
    ),
    Mutant(
        name="store-actor-forgets-committed-on-crash",
        area="store-actor", file=_SA,
        find="""\
                job = None
                self._fault("store.after_commit")""",
        replace="""\
                job = None
                held.remove(outgoing)  # committed: nothing left to answer for
                self._fault("store.after_commit")""",
        rule="a batch is answered even if the store actor crashes right after its commit",
    ),
    # -- the stores -------------------------------------------------------------------------
    Mutant(
        name="sqlite-guard-any-change",
        area="sqlite", file=_SQLTEXT,
        find='        f"WHERE excluded.version > {table}.version"',
        replace='        f"WHERE excluded.version <> {table}.version"',
        rule="a SQLite upsert (its SQL shared with PostgreSQL) only moves a key's version "
        "forward: an older write (a retry, a reordered batch) never overwrites a newer one",
    ),
    Mutant(
        name="sqlite-synchronous-normal",
        area="sqlite", file=_SQL,
        find='            db.execute("PRAGMA synchronous=FULL")',
        replace='            db.execute("PRAGMA synchronous=NORMAL")',
        rule="a committed batch survives power loss before the journal is checkpointed past it",
    ),
    Mutant(
        name="pg-coalesce-keeps-first",
        area="postgres", file=_PG, needs="postgres",
        find="            if r.key not in newest or r.version > newest[r.key].version:",
        replace="            if r.key not in newest:",
        rule="a batch with several versions of a key writes the newest (recovery replays a "
        "key's whole journal history in one batch)",
    ),
    Mutant(
        name="pg-tombstone-always-wins",
        area="postgres", file=_SQLTEXT, needs="postgres",
        find='        f"WHERE excluded.version > {table}.version"',
        replace='        f"WHERE excluded.version > {table}.version OR excluded.deleted"',
        rule="a delete is versioned like a put: an older tombstone never removes a newer value",
    ),
    Mutant(
        name="pg-refusals-not-returned",
        area="postgres", file=_PG, needs="postgres",
        find="        return tuple(rejected) + tuple(superseded)",
        replace="        return tuple(superseded)",
        rule="records PostgreSQL refused for good are reported to the shard (quarantined), "
        "not counted as landed",
    ),
    # -- the cluster ------------------------------------------------------------------------
    # Fencing is only exercised when a partition changes owner while the old owner still
    # flushes: not by the smoke suite (one process, unfenced batches), so these run with the
    # cluster suite. The store-level and runtime tests (tests/test_store_fencing.py,
    # tests/postgres/test_postgres_fencing.py) kill both.
    Mutant(
        name="store-fence-accepts-older-epoch",
        area="cluster", file=_SQLTEXT, suite="cluster",
        find='        f"WHEN excluded.epoch > {table}_fences.epoch THEN excluded.epoch "',
        replace='        f"WHEN excluded.epoch IS NOT NULL THEN excluded.epoch "',
        rule="the store refuses a batch from a partition epoch older than the newest it "
        "recorded (a paused former owner's late flush), on SQLite and PostgreSQL alike",
        equivalent=_LATE_BATCH,
        cover="store-fence-accepts-older-epoch-unversioned",
    ),
    Mutant(
        name="shard-flushes-unfenced-in-cluster",
        area="cluster", file=_SHARD, suite="cluster",
        find="fence = Fence(self.shard, epoch) if self._epochs.fences else None",
        replace="fence = None",
        rule="in cluster mode every batch carries its partition's epoch, so the store can "
        "refuse a former owner's",
        equivalent=_LATE_BATCH,
        cover="shard-flushes-unfenced-unversioned",
    ),
    # -- the cache --------------------------------------------------------------------------
    Mutant(
        name="cache-drain-skips-inflight-shards",
        area="cache", file=_CACHE,
        find="""\
                for shard in self._hosted():
                    nursery.start_soon(shard.flush)
        # Even ack='memory'""",
        replace="""\
                for shard in self._hosted():
                    if shard.core is not None and shard.core.statistics().dirty:
                        nursery.start_soon(shard.flush)
        # Even ack='memory'""",
        rule="a clean stop drains every shard, including one whose writes are all in flight",
    ),
    Mutant(
        name="cache-memory-drain-unsealed",
        area="cache", file=_CACHE,
        find="""\
            for shard in self._hosted():
                await shard.seal()""",
        replace="""\
            for shard in self._hosted():
                if self.config.ack != "memory":
                    await shard.seal()""",
        rule="even ack='memory' leaves a complete, checkpointed journal on a clean stop, so the "
        "next start never replays older values over the store",
    ),
    Mutant(
        name="cache-shard-shrink-strands-journals",
        area="cache", file=_CACHE,
        find="(previous is not None and previous != self.config.shards) or",
        replace="(previous is not None and previous < self.config.shards) or",
        rule="a change of the shard count first replays every journal into the store, so "
        "writes (and deletes) of retired shards are not stranded",
    ),
    Mutant(
        name="cache-read-error-is-miss",
        area="cache", file=_CACHE,
        find="""\
        record: StoreRecord | None = await self._reader_call("read", key)
        return record""",
        replace="""\
        try:
            record: StoreRecord | None = await self._reader_call("read", key)
        except StoreUnavailable:
            return None  # the store is unreachable: treat it as a miss
        return record""",
        rule="a read that cannot reach the store fails; it never reports an acknowledged key "
        "as absent",
    ),
    # -- the cluster: ownership, fencing, take-over (run with the cluster suite) -------------
    Mutant(
        name="cluster-ack-without-lease-check",
        area="cluster", file=_REPL, suite="cluster",
        find="""\
        # JetStream stored it; but only an owner whose lease still stands may acknowledge.
        if not self._leases.may_acknowledge(self.partition, self.epoch):""",
        replace="""\
        # JetStream stored it; but only an owner whose lease still stands may acknowledge.
        if False:  # mutant: acknowledge without the lease check""",
        rule="a partition's owner acknowledges a group commit only while its lease stands "
        "(may_acknowledge), so a paused owner that wakes acknowledges nothing",
        equivalent="a publish JetStream accepted lies before any newer owner's fence (the "
        "expected sequence refuses one after it), so that owner replayed the record: "
        "acknowledging it late loses nothing and reorders nothing a client saw",
        cover="cluster-no-lease-check-nor-expected-sequence",
    ),
    Mutant(
        name="cluster-publish-without-expected-sequence",
        area="cluster", file=_PJ, suite="cluster",
        find="            api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected),\n",
        replace="",
        rule="every journal publish states the subject sequence it expects, so a fenced "
        "former owner's appends are refused",
    ),
    Mutant(
        name="cluster-takeover-skips-replay",
        area="cluster", file=_REPL, suite="cluster",
        find="        entries = await writer.replay(1)\n",
        replace="        entries = []  # mutant: take over without replaying the subject\n",
        rule="a new owner replays the partition's subject before serving, so the writes a "
        "dead owner acknowledged and had not flushed are not lost",
    ),
    Mutant(
        name="cluster-fence-not-written",
        area="cluster", file=_REPL, suite="cluster",
        find="        await writer.fence()\n",
        replace="        writer.last = await writer.last_sequence()  # mutant: no fence record\n",
        rule="a new owner publishes its fence record before serving, so the former owner "
        "can no longer append",
    ),
    Mutant(
        name="cluster-routing-serves-while-restarting",
        area="cluster", file=_ROUTING, suite="cluster",
        find="        if shard.incarnation_serving() is None:\n",
        replace="        if False:  # mutant: hold the request until the shard serves again\n",
        rule="a routed request that meets a partition restarting or waiting to retake its "
        "lease is answered 'not serving' at once, never held and served late by a former "
        "owner",
        equivalent="a member answers a partition's calls only while its shard serves it, so "
        "a request meets a restarting shard only in the milliseconds between its crash and "
        "the unsubscription; and one held longer is given up at its caller's deadline "
        "(missed on seeds 1 and 2 since the first fix; caught on seed 2 before it)",
        cover="cluster-routing-holds-late-writes",
    ),
    Mutant(
        name="cluster-routing-applies-past-deadline",
        area="cluster", file=_ROUTING, suite="cluster",
        find="                    with trio.move_on_after(left):\n",
        replace="                    if True:  # mutant: the deadline is checked on arrival only\n",
        rule="a routed write is applied only before its caller's deadline, so a write its "
        "caller was told may or may not have happened never lands after newer ones",
    ),
    Mutant(
        name="cluster-routing-applies-repeats",
        area="cluster", file=_ROUTING, suite="cluster",
        find="                reply = await self._answer_once(partition, request)\n",
        replace="                reply = await self._answer(partition, request)  # mutant\n",
        rule="a routed write asked again (another member's refusal reached its caller "
        "first) is answered with the first answer, never applied twice",
        equivalent="a member answers a partition's calls only while its shard serves it, so "
        "a refusal racing the owner's answer needs a lease lapsing in the milliseconds before "
        "its shard stops, or a full queue: no fault of the suite makes a caller ask again "
        "while another member applies its write",
        cover="cluster-answers-while-not-serving-and-applies-repeats",
    ),
    Mutant(
        name="cluster-answers-while-not-serving",
        area="cluster", file="actors/_cluster/_hosting.py", suite="cluster",
        find="            await self._follow(state)\n",
        replace="            await state.stop.wait()  # mutant: subscribed until handed over\n",
        rule="a member answers a partition's routed calls only while its shard serves it; a "
        "shard waiting to take its lease again does not race the owner with refusals",
        equivalent="its refusals make callers ask again, and the owner answers a repeated "
        "write with its first answer: callers wait and hear 'may or may not have "
        "happened', which the checker allows; nothing is applied twice",
        cover="cluster-answers-while-not-serving-and-applies-repeats",
    ),
    Mutant(
        name="cluster-read-ignores-lease",
        area="cluster", file=_SHARD, suite="cluster",
        find='        may_serve = getattr(journal, "may_serve", None)\n',
        replace="        may_serve = None  # mutant: a read never asks whether the lease stands\n",
        rule="a shard answers a read only while its partition's lease stands: a paused owner "
        "that wakes past it does not answer from memory after a newer owner acknowledged "
        "newer writes",
    ),
    Mutant(
        name="cluster-takeover-reuses-epoch",
        area="cluster", file="actors/_core/_partition_lease.py", suite="cluster",
        find="        return entry.value.epoch + 1\n",
        replace="        return entry.value.epoch  # mutant: the new owner keeps the old epoch\n",
        rule="each acquisition of a partition takes a higher epoch than every earlier owner's, "
        "so the new owner's versions win and the former owner is fenced",
    ),
    # -- the recovery tools -----------------------------------------------------------------
    Mutant(
        name="recover-skips-deletes",
        area="recover", file="actors/_runtime/_recover.py",
        find="r.version) for r in recovery.records]",
        replace="r.version) for r in recovery.records\n"
        "                       if r.value is not None]",
        rule="writebehind recover (and a shard-count change) writes deletes to the store "
        "before checkpointing them away",
    ),
    Mutant(
        name="recover-last-chunk-off-by-one",
        area="recover", file="actors/_runtime/_recover.py",
        find="            for start in range(0, len(pending), batch_size):",
        replace="            for start in range(0, len(pending) - 1, batch_size):",
        rule="recovery writes every pending record before checkpointing the journal",
    ),
    Mutant(
        name="recover-tool-repairs-unasked",
        area="recover", file="actors/_cli/_recover.py",
        find="repair=repair or config.repair_journal,",
        replace="repair=True,",
        rule="only the operator decides to cut a corrupt journal; recover refuses damage "
        "unless --repair",
    ),
)


def by_name(name: str) -> Mutant:
    """The catalogue entry called ``name``; ``KeyError`` lists the known names."""
    for mutant in MUTANTS:
        if mutant.name == name:
            return mutant
    raise KeyError(f"no mutant {name!r}; known: {', '.join(m.name for m in MUTANTS)}")


def _uncovered(name: str, mutant: str, *covers: str, rule: str) -> Mutant:
    """``mutant`` with the layers that cover it removed too (each of ``covers``' edits):
    the higher-order mutant an equivalent one names as its ``cover``, or that shows the
    suite sees the failure the layers guard against when all are gone."""
    also = tuple(edit for cover in covers for edit in by_name(cover).edits())
    return attrs.evolve(by_name(mutant), name=name, rule=rule, also=also, equivalent=None,
                        cover=None)


MUTANTS += (
    _uncovered(
        "cluster-no-lease-check-nor-expected-sequence",
        "cluster-ack-without-lease-check", "cluster-publish-without-expected-sequence",
        rule="a paused owner that wakes neither acknowledges past its lease nor appends "
        "after a newer owner's fence",
    ),
    _uncovered(
        "cluster-routing-holds-late-writes",
        "cluster-routing-serves-while-restarting", "cluster-answers-while-not-serving",
        "cluster-routing-applies-past-deadline",
        rule="a routed write is never applied after its caller gave up: a former owner "
        "waiting to retake a partition neither answers its calls nor holds them to apply "
        "once it serves again (after newer writes), and nothing is applied past a deadline",
    ),
    _uncovered(
        "cluster-answers-while-not-serving-and-applies-repeats",
        "cluster-answers-while-not-serving", "cluster-routing-applies-repeats",
        rule="a routed write is applied once: a member waiting to retake a partition does "
        "not answer its calls, and a write asked again gets the first answer",
    ),
    _uncovered(
        "store-fence-accepts-older-epoch-unversioned",
        "store-fence-accepts-older-epoch", "sqlite-guard-any-change",
        rule="a former owner's late batch never overwrites a newer owner's rows: refused by "
        "the epoch fence, and by the versions",
    ),
    _uncovered(
        "shard-flushes-unfenced-unversioned",
        "shard-flushes-unfenced-in-cluster", "sqlite-guard-any-change",
        rule="a former owner's late batch never overwrites a newer owner's rows: it carries "
        "its epoch, and versions below the newer owner's",
    ),
)
