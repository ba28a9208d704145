"""The replicated journal primitive: one JetStream subject per partition, fenced by sequence.

Every partition's journal is the subject ``wb.<cluster>.p.<partition>`` of one stream
(``WB_<cluster>``, replicas configurable). Each message is either a *records* message (one
group commit: journal record frames, the single-process journal's codec) or a *fence*
message, and carries the writer's epoch in a header.

Fencing is JetStream's own check: every publish states the subject sequence it expects to be
the last (``Nats-Expected-Last-Subject-Sequence``), and the server refuses it otherwise
(error 10071, "wrong last sequence"). A new owner publishes a fence record before it serves;
from then on a former owner, whose expectation is the sequence of its own last append, can
never append again: the subject's last sequence is the fence's (or later), which it never
saw. Whatever the former owner appended before the fence is in the subject and replayed by
the new owner.

The group-commit loop that appends here, and plugs it into the runtime's journal seam
(``JournalBackend``), is ``_replicated.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from zlib import crc32

import attrs
import nats.errors
import nats.js.errors
import trio
from nats.js import api

from .._core._errors import WritebehindError
from .._journal._codec import Decoded, JournalRecord, decode_frame, encode_frame, salt_seed
from ._bridge import NatsConnection

#: Message headers: what a message is, and the epoch of the owner that wrote it.
KIND_HEADER = "Wb-Kind"
EPOCH_HEADER = "Wb-Epoch"
RECORDS = "records"
FENCE = "fence"
#: The server's error codes for a failed ``Nats-Expected-Last-Subject-Sequence`` check.
WRONG_LAST_SEQUENCE = (10071, 10164)
#: "duplicate message id is in process": a message with this id is proposed, not yet stored
#: (ours, still in flight); ask again once it is.
DUPLICATE_IN_PROCESS = 10158
#: Pause before asking again about a message still in flight.
IN_FLIGHT_PAUSE = 0.05


class Fenced(WritebehindError):
    """The append was refused: the subject moved past this writer's last sequence, so another
    owner fenced the partition (or this writer's view of the subject is stale)."""


class Unsynced(WritebehindError):
    """This writer does not know the subject's last sequence: it never fenced, an append's
    outcome is unknown, or a resync found it fenced. :meth:`PartitionJournal.fence` (a new
    owner) or :meth:`PartitionJournal.resync` (an owner that still holds its lease) first."""


class AppendUncertain(WritebehindError):
    """The publish got no answer: it may or may not be in the stream. The writer must
    :meth:`PartitionJournal.resync` (and learn whether it is still the owner) before the
    next append; none of the records may be acknowledged."""


class _NoAnswer(Exception):
    """A publish timed out or found no responder; the caller may send it again."""


def stream_name(cluster: str) -> str:
    return f"WB_{cluster}"


def subject(cluster: str, partition: int) -> str:
    return f"wb.{cluster}.p.{partition}"


async def open_stream(conn: NatsConnection, cluster: str, *, replicas: int = 3,
                      storage: api.StorageType = api.StorageType.FILE) -> str:
    """The cluster's journal stream, created if it does not exist; returns its name."""
    name = stream_name(cluster)
    try:
        await conn.run(conn.js.stream_info, name)
    except nats.js.errors.NotFoundError:
        await conn.run(
            conn.js.add_stream, name=name, subjects=[f"wb.{cluster}.p.*"],
            num_replicas=replicas, storage=storage,
            # A journal: nothing expires or is discarded by the stream; the owner purges
            # behind the checkpoint.
            retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.NEW,
        )
    return name


def encode_records(records: Sequence[JournalRecord], partition: int) -> bytes:
    """One group commit's payload: the records' frames, checksums seeded with the partition
    (a message copied to another partition's subject fails the check)."""
    seed = salt_seed(partition)
    return b"".join(
        encode_frame(r.seq, r.kind, r.key.encode("utf-8"), r.value, r.version, seed)
        for r in records
    )


def decode_records(payload: bytes, partition: int) -> list[JournalRecord]:
    records = []
    offset = 0
    while offset < len(payload):
        result = decode_frame(payload, offset, partition)
        if not isinstance(result, Decoded):
            raise WritebehindError(f"partition {partition}: journal message unreadable at "
                                   f"byte {offset}: {result!r}")
        records.append(result.record)
        offset = result.end
    return records


@attrs.frozen
class Entry:
    """One message of a partition's subject, as replay reads it."""

    seq: int
    kind: str
    epoch: int
    records: tuple[JournalRecord, ...] = ()


class PartitionJournal:
    """One owner's writer and reader of one partition's subject.

    ``last`` is the subject sequence this writer expects to be the last; it is set by
    :meth:`fence` (the new owner's first write) and moved by each append.
    """

    def __init__(self, conn: NatsConnection, cluster: str, partition: int, epoch: int, *,
                 timeout: float = 5.0) -> None:
        self._conn = conn
        self.stream = stream_name(cluster)
        self.subject = subject(cluster, partition)
        self.partition = partition
        self.epoch = epoch
        self.timeout = timeout
        self.last: int | None = None  # unknown until fence() or resync()
        # The last publish whose outcome is unknown (kind, payload, expected): resync()
        # sends it again, so that it is settled, stored once or refused, before adopting.
        self._uncertain: tuple[str, bytes, int] | None = None

    async def last_sequence(self) -> int:
        """The subject's last sequence on the servers now (0 if it holds no message)."""
        return (await self._last())[0]

    async def _last(self) -> tuple[int, int]:
        """The subject's last message's sequence and epoch, from the stream leader."""
        try:
            message = await self._conn.run(self._conn.js.get_last_msg, self.stream, self.subject)
        except nats.js.errors.NotFoundError:
            return 0, 0
        return int(message.seq or 0), int((message.headers or {}).get(EPOCH_HEADER, "0"))

    async def _landed(self, msg_id: str) -> int:
        """The sequence of the subject's last message if it is the one with ``msg_id``
        (only this writer writes its epoch's ids, so a copy that landed and was not
        followed by a newer owner's fence is the last), else 0."""
        try:
            message = await self._conn.run(self._conn.js.get_last_msg, self.stream, self.subject)
        except nats.js.errors.NotFoundError:
            return 0
        if (message.headers or {}).get(api.Header.MSG_ID) != msg_id:
            return 0
        return int(message.seq or 0)

    async def resync(self) -> int:
        """Adopt the servers' last sequence (after :class:`AppendUncertain`), unless a newer
        epoch wrote it: after a newer owner's fence only that owner can append, so the last
        message carries the newest epoch, and a former owner learns here that it is fenced
        (:class:`Fenced`) instead of adopting the new owner's sequence.

        An uncertain publish (cancelled or unanswered) may still be in flight, and a read of
        the last sequence may come before it lands: then the next append would expect a
        sequence the in-flight message takes. So that message is sent again first, the same
        id and payload: de-duplication answers with its sequence if it landed, or it lands
        now, or its expectation is refused (someone appended since) and the read decides."""
        uncertain, self._uncertain = self._uncertain, None
        if uncertain is not None:
            kind, payload, expected = uncertain
            for _ in range(20):
                try:
                    self.last = await self._publish(kind, payload, expected, final=False)
                    return self.last
                except _NoAnswer:
                    await trio.sleep(IN_FLIGHT_PAUSE)
                except Fenced:
                    break
            else:
                self._uncertain = uncertain
                raise AppendUncertain(f"{self.subject}: an earlier publish stays unsettled")
        last, epoch = await self._last()
        if epoch > self.epoch:
            self.last = None
            raise Fenced(f"{self.subject}: epoch {epoch} wrote the last message (sequence "
                         f"{last}); epoch {self.epoch} is fenced")
        self.last = last
        return last

    async def fence(self, attempts: int = 10) -> int:
        """Publish this epoch's fence record after the subject's current last message;
        returns its sequence. A former owner appending between the read and the fence makes
        the fence's own check fail: read again and retry (that append is before the fence,
        so it is replayed)."""
        for _ in range(attempts):
            expected = await self.last_sequence()
            try:
                self.last = await self._publish(FENCE, b"", expected)
                return self.last
            except Fenced:
                continue
        raise Fenced(f"{self.subject}: could not fence in {attempts} attempts; the subject "
                     "keeps moving (is another owner still appending?)")

    async def append(self, records: Sequence[JournalRecord], *, attempts: int = 3) -> int:
        """Publish one group commit; returns its stream sequence once JetStream acknowledged
        it (stored on a majority of the replicas). Raises :class:`Fenced` if another owner
        fenced the subject, :class:`AppendUncertain` if no attempt got an answer,
        :class:`Unsynced` if this writer does not know where the subject ends.

        A publish that gets no answer is sent again, the same message with the same
        expectation and message id: if the first had landed, the stream's de-duplication
        answers with the first one's sequence (it checks the id before the expected
        sequence), so a retry never writes a second copy nor is refused by its own first
        copy. An append cancelled while in flight is uncertain too: :meth:`resync` first.
        """
        return await self.append_payload(encode_records(records, self.partition),
                                         attempts=attempts)

    async def append_payload(self, payload: bytes, *, attempts: int = 3) -> int:
        """:meth:`append` of a payload already encoded (frames seeded with the partition,
        as :func:`encode_records` makes them): the group-commit loop's path."""
        if self.last is None:
            raise Unsynced(f"{self.subject}: no fence or resync yet; this writer may not append")
        for _ in range(attempts - 1):
            try:
                return await self._publish(RECORDS, payload, self.last, final=False)
            except _NoAnswer:
                await trio.sleep(IN_FLIGHT_PAUSE)
        return await self._publish(RECORDS, payload, self.last)

    async def _publish(self, kind: str, payload: bytes, expected: int, *,
                       final: bool = True) -> int:
        msg_id = f"{self.partition}:{self.epoch}:{expected}:{crc32(payload):08x}"
        headers = {
            api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected),
            # One id per (partition, epoch, position): only one message of an epoch can
            # follow ``expected`` on this subject, and the id lets a retry find out whether
            # it already did. The stream de-duplicates across all its subjects, hence the
            # partition (a test caught two partitions' fences sharing "epoch:0").
            # And the payload's checksum: after an uncertain publish, a different payload
            # at the same position must never be answered as a duplicate of the first.
            api.Header.MSG_ID: msg_id,
            KIND_HEADER: kind,
            EPOCH_HEADER: str(self.epoch),
        }
        try:
            ack = await self._conn.run(self._conn.js.publish, self.subject, payload,
                                       timeout=self.timeout, stream=self.stream, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                if self._uncertain == (kind, payload, expected):
                    # A retry of a publish that got no answer. Under load the server may
                    # check the expectation before the id, and answer a retry whose first
                    # copy landed "wrong last sequence": the subject's last message says.
                    landed = await self._landed(msg_id)
                    self._uncertain = None  # landed, or refused: it will never land
                    if landed:
                        self.last = landed
                        return landed
                raise Fenced(f"{self.subject}: epoch {self.epoch} expected last sequence "
                             f"{expected}, refused: {exc.description}") from None
            if exc.err_code == DUPLICATE_IN_PROCESS:
                self._uncertain = (kind, payload, expected)
                if not final:
                    raise _NoAnswer from exc
                self.last = None
                raise AppendUncertain(f"{self.subject}: still in flight ({exc.description})") \
                    from exc
            raise
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            self._uncertain = (kind, payload, expected)
            if not final:
                raise _NoAnswer from exc
            self.last = None
            raise AppendUncertain(f"{self.subject}: no publish-ack ({type(exc).__name__})") \
                from exc
        except BaseException:
            # Cancelled (or worse) while the message may be on its way: as uncertain as a
            # timeout, so no next append on a guess; resync first.
            self._uncertain = (kind, payload, expected)
            self.last = None
            raise
        self._uncertain = None
        self.last = int(ack.seq)
        return self.last

    async def replay(self, start: int = 1) -> list[Entry]:
        """Every message of the subject from stream sequence ``start`` (the checkpoint's
        successor) up to its last one now, in order.

        One "next message on this subject" get per message, answered by the stream's leader:
        no consumer, so a replay needs the stream's quorum only, not the JetStream meta
        leader that creating a consumer needs (a take-over happens when nodes are down). It
        costs a round trip per message; batched direct gets (nats-server 2.11+) are the way
        to speed it up once nats-py offers them.
        """
        end = await self.last_sequence()
        if end < start:
            return []
        js, stream, subj, partition = self._conn.js, self.stream, self.subject, self.partition

        async def read() -> list[Entry]:
            entries: list[Entry] = []
            seq = start
            while seq <= end:
                try:
                    m = await js.get_msg(stream, seq=seq, subject=subj, next=True)
                except nats.js.errors.NotFoundError:
                    break  # purged meanwhile: nothing more at or after ``seq``
                got = int(m.seq or 0)
                if got > end:
                    break
                entries.append(_entry(got, m.headers or {}, m.data or b"", partition))
                seq = got + 1
            return entries

        return await self._conn.run(read)

    async def purge(self, checkpoint: int) -> None:
        """Drop the subject's messages up to and including stream sequence ``checkpoint``
        (everything the store holds). The subject's last message is always kept: it anchors
        the expected-last-sequence check."""
        if self.last is None:
            raise Unsynced(f"{self.subject}: no fence or resync yet; this writer may not purge")
        keep_from = min(checkpoint + 1, self.last)  # the server purges below ``seq``
        await self._conn.run(self._conn.js.purge_stream, self.stream, seq=keep_from,
                             subject=self.subject)


def _entry(seq: int, headers: dict[str, str], data: bytes, partition: int) -> Entry:
    kind = headers.get(KIND_HEADER, "")
    epoch = int(headers.get(EPOCH_HEADER, "0"))
    records = tuple(decode_records(data, partition)) if kind == RECORDS else ()
    return Entry(seq, kind, epoch, records)
