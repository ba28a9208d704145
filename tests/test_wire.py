"""The routing wire format (``_core/_wire.py``): what goes in comes out, and anything that is
not a whole message of this version is refused, never half-read."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from writebehind._core._errors import (
    Overloaded,
    ShardCrashed,
    StoreRejected,
    Unstorable,
)
from writebehind._core._wire import (
    VERSION,
    Op,
    RemoteError,
    Reply,
    ReplyStatus,
    Request,
    WireError,
)

keys = st.text(min_size=1, max_size=20)
values = st.none() | st.binary(max_size=64)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    op = draw(st.sampled_from(Op))
    ks = tuple(draw(st.lists(keys, max_size=5)))
    vs: tuple[bytes | None, ...] = ()
    if op in (Op.WRITE, Op.WRITE_MANY) and ks:
        vs = tuple(draw(values) for _ in ks)
    return Request(op, draw(st.integers(0, 2**32 - 1)), ks, vs,
                   draw(st.integers(-(2**63), 2**63 - 1)), draw(st.integers(0, 2**64 - 1)),
                   draw(st.floats(allow_nan=False, allow_infinity=False)),
                   draw(st.binary(max_size=40)))


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    receipts = draw(st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1)) | st.text(),
        max_size=5))
    return Reply(draw(st.sampled_from(ReplyStatus)), tuple(receipts),
                 tuple(draw(st.lists(values, max_size=5))), draw(st.text(max_size=10)),
                 draw(st.text(max_size=30)))


@given(requests())
def test_a_request_round_trips(request: Request) -> None:
    assert Request.decode(request.encode()) == request


@given(replies())
def test_a_reply_round_trips(reply: Reply) -> None:
    assert Reply.decode(reply.encode()) == reply


@given(requests(), st.data())
def test_a_truncated_request_is_refused(request: Request, data: st.DataObject) -> None:
    encoded = request.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(WireError):
        Request.decode(encoded[:cut])


@given(replies(), st.data())
def test_a_truncated_reply_is_refused(reply: Reply, data: st.DataObject) -> None:
    encoded = reply.encode()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(WireError):
        Reply.decode(encoded[:cut])


@given(st.binary(max_size=80))
def test_garbage_is_refused_or_read_whole(garbage: bytes) -> None:
    for cls in (Request, Reply):
        try:
            decoded = cls.decode(garbage)  # type: ignore[attr-defined]
        except WireError:
            continue
        assert decoded.encode() == garbage  # only a well-formed message is ever accepted


def test_bytes_after_the_end_and_other_versions_are_refused() -> None:
    request = Request(Op.WRITE, 3, ("k",), (b"v",)).encode()
    with pytest.raises(WireError, match="1 bytes after its end"):
        Request.decode(request + b"x")
    other = request[:3] + bytes([VERSION + 1]) + request[4:]
    with pytest.raises(WireError, match=f"of version {VERSION + 1}; this writebehind reads"):
        Request.decode(other)
    with pytest.raises(WireError, match="not a writebehind routing request"):
        Request.decode(Reply(ReplyStatus.OK).encode())
    with pytest.raises(WireError, match="unknown op 9"):
        Request.decode(request[:4] + bytes([9]) + request[5:])
    with pytest.raises(WireError, match="expires is nan"):
        Request.decode(request[:-12] + struct.pack(">d", math.nan) + request[-4:])
    with pytest.raises(WireError, match="call name is marked absent"):
        Request.decode(request[:-4] + b"\xff" * 4)
    # A version-1 request (before the call name) is refused, not read without it.
    with pytest.raises(WireError, match=f"of version 1; this writebehind reads version {VERSION}"):
        Request.decode(request[:3] + bytes([1]) + request[4:-4])


def test_errors_come_back_as_the_same_types() -> None:
    for exc in (ValueError("bad key"), TypeError("not bytes"), Unstorable("NUL"),
                Overloaded("full"), ShardCrashed("crashed"), StoreRejected("no")):
        back = Reply.decode(Reply.failed(exc).encode()).exception()
        assert type(back) is type(exc) and str(back) == str(exc)
    unknown = Reply.decode(Reply.failed(KeyError("x")).encode()).exception()
    assert isinstance(unknown, RemoteError)
    assert str(unknown) == "the partition's owner failed the call: KeyError: 'x'"
