"""The journal's byte format: segment headers and record frames (pure, no I/O).

A segment file is one :class:`SegmentHeader` followed by record frames::

    frame   := length:u32 crc:u32 kind:u8 payload[length]
    payload := seq:u64 version:i64 key_len:u32 key[key_len] value_len:u32 value[value_len]

All integers are little-endian. ``value_len == 0xFFFFFFFF`` is the tombstone (no value).
``crc`` is CRC-32 of ``length || kind || payload`` started from the CRC-32 of the segment's
generation salt, so bytes left over from another generation never validate.
See ``specs/journal-format.md`` for the full grammar and the recovery rules.
"""

from __future__ import annotations

import enum
import functools
import struct
import zlib

import attrs

from .._core._limits import MAX_PAYLOAD, RECORD_OVERHEAD

MAGIC = b"WBJOURNL"
FORMAT_VERSION = 1

_HEADER_BODY = struct.Struct("<8sHHIQQ")  # magic, format, flags, shard_id, salt, first_seq
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER_BODY.size + _CRC.size  # 36

_FRAME = struct.Struct("<IIB")  # length, crc, kind
FRAME_HEADER_SIZE = _FRAME.size  # 9
_FIXED = struct.Struct("<QqI")  # seq, version, key_len
_VALUE_LEN = struct.Struct("<I")
_TOMBSTONE = 0xFFFFFFFF
_TOMBSTONE_LEN = _VALUE_LEN.pack(_TOMBSTONE)
MIN_PAYLOAD = _FIXED.size + _VALUE_LEN.size  # 24
assert MIN_PAYLOAD == RECORD_OVERHEAD  # the configuration's size check counts on it


_LENGTH_KIND = struct.Struct("<IB")  # what the CRC covers before the payload
_FRONT = struct.Struct("<IIBQqI")  # a frame's header and its payload's fixed fields
assert _FRONT.size == FRAME_HEADER_SIZE + _FIXED.size


def encode_frame(
    seq: int, kind: int, key: bytes, value: bytes | None, version: int, seed: int
) -> bytes:
    """One record frame from its fields; ``seed`` is :func:`salt_seed` of the segment's salt.

    The journal's hot path calls this directly (no :class:`JournalRecord` per append).
    """
    if value is None:
        payload = b"".join((_FIXED.pack(seq, version, len(key)), key, _TOMBSTONE_LEN))
    else:
        payload = b"".join(
            (_FIXED.pack(seq, version, len(key)), key, _VALUE_LEN.pack(len(value)), value)
        )
    size = len(payload)
    if size > MAX_PAYLOAD:
        raise ValueError(f"record too large: {size} bytes > {MAX_PAYLOAD}")
    crc = zlib.crc32(payload, zlib.crc32(_LENGTH_KIND.pack(size, kind), seed))
    return _FRAME.pack(size, crc, kind) + payload


class RecordKind(enum.IntEnum):
    """What a journal record says happened."""

    PUT = 1
    DELETE = 2
    CHECKPOINT = 3

    def __repr__(self) -> str:
        # Valid Python, so Hypothesis can print failing steps as a replayable program.
        return f"RecordKind.{self.name}"


@functools.lru_cache(maxsize=64)
def salt_seed(salt: int) -> int:
    """The CRC starting value for frames of a segment with this generation salt."""
    return zlib.crc32(salt.to_bytes(8, "little"))


@attrs.frozen
class JournalRecord:
    """One journal entry. DELETE and CHECKPOINT carry no value; CHECKPOINT's key is ``""``
    and its ``version`` is the persisted mark ("everything <= version is in the store")."""

    seq: int
    kind: RecordKind
    key: str
    value: bytes | None
    version: int

    def __attrs_post_init__(self) -> None:
        if self.kind == RecordKind.PUT and self.value is None:
            raise ValueError(f"a PUT record needs a value, got value=None for key {self.key!r}")
        if self.kind != RecordKind.PUT and self.value is not None:
            raise ValueError(f"a {self.kind.name} record carries no value, got {self.value!r}")
        if self.kind == RecordKind.CHECKPOINT and self.key != "":
            raise ValueError(f"a CHECKPOINT record has key '', got {self.key!r}")
        if not 0 <= self.seq < 2**64:
            raise ValueError(f"seq must fit in 64 unsigned bits, got {self.seq!r}")
        if not -(2**63) <= self.version < 2**63:
            raise ValueError(f"version must fit in 64 signed bits, got {self.version!r}")

    def encode(self, salt: int) -> bytes:
        """The frame for this record in a segment whose generation salt is ``salt``."""
        return encode_frame(
            self.seq, self.kind, self.key.encode("utf-8"), self.value, self.version,
            salt_seed(salt),
        )

    @classmethod
    def decode(cls, buf: bytes | memoryview, offset: int, salt: int) -> DecodeResult:
        """Decode the frame at ``offset``: a :class:`Decoded`, :data:`INCOMPLETE` if the
        buffer ends inside it, or an :class:`Invalid` naming what is wrong."""
        return decode_frame(buf, offset, salt)


@attrs.frozen
class Decoded:
    """A complete, checksum-valid frame: the record and the offset just past it."""

    record: JournalRecord
    end: int


@attrs.frozen
class Invalid:
    """The bytes at this offset are not a valid frame."""

    reason: str


class _Incomplete(enum.Enum):
    INCOMPLETE = "incomplete"

    def __repr__(self) -> str:
        return "INCOMPLETE"


INCOMPLETE = _Incomplete.INCOMPLETE
"""The buffer ends inside this frame: leave it untouched until more bytes arrive."""

DecodeResult = Decoded | Invalid | _Incomplete
_KIND_BY_BYTE = {int(kind): kind for kind in RecordKind}  # cheaper than RecordKind(byte)


def decode_frame(buf: bytes | memoryview, offset: int, salt: int) -> DecodeResult:
    """See :meth:`JournalRecord.decode`."""
    if len(buf) - offset < FRAME_HEADER_SIZE:
        return INCOMPLETE
    length, crc, kind = _FRAME.unpack_from(buf, offset)
    if length < MIN_PAYLOAD or length > MAX_PAYLOAD:
        return Invalid(f"impossible record length {length}")
    start = offset + FRAME_HEADER_SIZE
    end = start + length
    if end > len(buf):
        return INCOMPLETE
    view = memoryview(buf)
    # Covers length || kind || payload, so a damaged length field fails the check too.
    actual = zlib.crc32(view[start:end], zlib.crc32(_LENGTH_KIND.pack(length, kind),
                                                     salt_seed(salt)))
    if actual != crc:
        return Invalid("checksum mismatch")
    return _decode_payload(view[start:end], kind, end)


def _decode_payload(payload: memoryview, kind_byte: int, end: int) -> DecodeResult:
    kind = _KIND_BY_BYTE.get(kind_byte)
    if kind is None:
        return Invalid(f"unknown record kind {kind_byte}")
    seq, version, key_len = _FIXED.unpack_from(payload, 0)
    pos = _FIXED.size
    if pos + key_len + _VALUE_LEN.size > len(payload):
        return Invalid("key length runs past the record")
    key_bytes = bytes(payload[pos : pos + key_len])
    pos += key_len
    (value_len,) = _VALUE_LEN.unpack_from(payload, pos)
    pos += _VALUE_LEN.size
    value: bytes | None
    if value_len == _TOMBSTONE:
        value = None
    elif pos + value_len != len(payload):
        return Invalid("value length does not match the record length")
    else:
        value = bytes(payload[pos:])
        pos += value_len
    if pos != len(payload):
        return Invalid("trailing bytes inside the record")
    try:
        key = key_bytes.decode("utf-8")
        record = JournalRecord(seq=seq, kind=kind, key=key, value=value, version=version)
    except ValueError as exc:
        return Invalid(f"malformed record: {exc}")
    return Decoded(record, end)


def decode_run(
    buf: bytes, offset: int, salt: int, first_seq: int, marks: list[int] | None = None
) -> tuple[list[JournalRecord], int]:
    """Decode the valid frames from ``offset`` on whose seqs run ``first_seq``, +1, ...;
    return them and the offset where the run stops; each CHECKPOINT's mark (its
    ``version``) is also appended to ``marks`` if given (a scan then needs no second pass
    over every record to find them).

    Recovery's fast path: it stops at the first frame it does not accept outright (the end,
    a torn or damaged frame, a sequence gap, anything unusual), and :func:`decode_frame`
    then says what is there. Every check :func:`decode_frame` and :class:`JournalRecord`
    make is made here too, so a frame is accepted by both or by neither.
    """
    records: list[JournalRecord] = []
    append = records.append
    size = len(buf)
    seed = salt_seed(salt)
    crc32, pack_head = zlib.crc32, _LENGTH_KIND.pack
    # The CRC of (length, kind) from the seed, per length and kind: records of one size
    # repeat it (one dict lookup instead of a pack and a CRC per record).
    heads: dict[int, int] = {}
    unpack_front, unpack_len = _FRONT.unpack_from, _VALUE_LEN.unpack_from
    put, delete, checkpoint = RecordKind.PUT, RecordKind.DELETE, RecordKind.CHECKPOINT
    new, record_class = _new, JournalRecord
    set_seq, set_kind, set_key, set_value, set_version = _SLOT_SETTERS
    expected = first_seq
    # Every valid frame holds at least the front (frame header + fixed fields), so a run
    # stops where one no longer fits: decode_frame explains what is there.
    while size - offset >= _FRONT.size:
        length, crc, kind_byte, seq, version, key_len = unpack_front(buf, offset)
        start = offset + FRAME_HEADER_SIZE
        end = start + length
        if length < MIN_PAYLOAD or length > MAX_PAYLOAD or end > size:
            break
        head = heads.get(length << 8 | kind_byte)
        if head is None:
            head = heads[length << 8 | kind_byte] = crc32(pack_head(length, kind_byte), seed)
        # A bytes slice is cheaper to make than a memoryview slice at these sizes.
        if crc32(buf[start:end], head) != crc:
            break
        key_end = start + _FIXED.size + key_len
        if seq != expected or key_end + _VALUE_LEN.size > end:
            break
        (value_len,) = unpack_len(buf, key_end)
        if value_len == _TOMBSTONE:
            if key_end + _VALUE_LEN.size != end:
                break
            value = None
            if kind_byte == 2:
                kind = delete
            elif kind_byte == 3 and key_len == 0:
                kind = checkpoint
                if marks is not None:
                    marks.append(version)
            else:
                break
        else:
            if kind_byte != 1 or key_end + _VALUE_LEN.size + value_len != end:
                break
            value = buf[key_end + _VALUE_LEN.size : end]
            kind = put
        try:
            key = buf[start + _FIXED.size : key_end].decode("utf-8")
        except UnicodeDecodeError:
            break
        # A JournalRecord whose fields were checked above, built through its slots: the
        # validating __init__ (or object.__setattr__ per field) costs twice as much.
        record = new(record_class)
        set_seq(record, seq)
        set_kind(record, kind)
        set_key(record, key)
        set_value(record, value)
        set_version(record, version)
        append(record)
        offset = end
        expected += 1
    return records, offset


_new = object.__new__
# The slot descriptors' setters of JournalRecord's fields (attrs.frozen makes a slotted class).
_SLOT_SETTERS = tuple(
    vars(JournalRecord)[field.name].__set__ for field in attrs.fields(JournalRecord)
)
assert len(_SLOT_SETTERS) == 5


@attrs.frozen
class SegmentHeader:
    """The first bytes of every segment file."""

    shard_id: int
    salt: int
    first_seq: int
    format_version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        """The header bytes, ending with their own CRC-32."""
        body = _HEADER_BODY.pack(
            MAGIC, self.format_version, 0, self.shard_id, self.salt, self.first_seq
        )
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def decode(cls, buf: bytes | memoryview) -> SegmentHeader | Invalid | _Incomplete:
        """Parse a header from the start of ``buf``."""
        if len(buf) < HEADER_SIZE:
            return INCOMPLETE
        body = bytes(buf[: _HEADER_BODY.size])
        magic, fmt, _flags, shard_id, salt, first_seq = _HEADER_BODY.unpack(body)
        if magic != MAGIC:
            return Invalid(f"bad magic {magic!r}, expected {MAGIC!r}")
        (crc,) = _CRC.unpack_from(buf, _HEADER_BODY.size)
        if zlib.crc32(body) != crc:
            return Invalid("segment header checksum mismatch")
        if fmt != FORMAT_VERSION:
            return Invalid(f"unsupported format version {fmt}, this build reads {FORMAT_VERSION}")
        return cls(shard_id=shard_id, salt=salt, first_seq=first_seq, format_version=fmt)


MANIFEST_MAGIC = b"WBNEWEST"


@attrs.frozen
class Manifest:
    """The journal's synced record of its newest segment (the ``MANIFEST`` file).

    Written atomically once segment ``newest_seq`` is durable, so a newest segment that later
    goes missing is found: recovery refuses a directory whose newest segment is older.
    Same layout as :class:`SegmentHeader`, with its own magic.
    """

    shard_id: int
    salt: int
    newest_seq: int

    def encode(self) -> bytes:
        """The manifest's bytes, ending with their own CRC-32."""
        body = _HEADER_BODY.pack(
            MANIFEST_MAGIC, FORMAT_VERSION, 0, self.shard_id, self.salt, self.newest_seq
        )
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def decode(cls, buf: bytes | memoryview) -> Manifest | Invalid:
        """Parse a whole manifest file; anything else than exactly one is :class:`Invalid`."""
        if len(buf) != HEADER_SIZE:
            return Invalid(f"manifest is {len(buf)} bytes long, expected {HEADER_SIZE}")
        body = bytes(buf[: _HEADER_BODY.size])
        magic, fmt, _flags, shard_id, salt, newest = _HEADER_BODY.unpack(body)
        if magic != MANIFEST_MAGIC:
            return Invalid(f"bad manifest magic {magic!r}, expected {MANIFEST_MAGIC!r}")
        (crc,) = _CRC.unpack_from(buf, _HEADER_BODY.size)
        if zlib.crc32(body) != crc:
            return Invalid("manifest checksum mismatch")
        if fmt != FORMAT_VERSION:
            return Invalid(f"unsupported manifest format {fmt}, this build reads {FORMAT_VERSION}")
        return cls(shard_id=shard_id, salt=salt, newest_seq=newest)
