"""The store worker's pipe protocol, with no pipe: frames, requests, answers and errors."""

from __future__ import annotations

import pickle
import sqlite3
import struct
from pathlib import Path

import pytest

from writebehind._core._errors import (
    ConfigError,
    LeaseHeld,
    SchemaMismatch,
    StoreFenced,
    StoreUnavailable,
)
from writebehind._core._messages import Fence, Rejection, StoreRecord, Superseded
from writebehind._stores import _wire
from writebehind._stores._registry import SQLiteFactory


def payloads(data: bytes, step: int) -> list[object]:
    """Feed ``data`` ``step`` bytes at a time; every message that comes out."""
    buffer = _wire.FrameBuffer()
    found = []
    for start in range(0, len(data), step):
        buffer.feed(data[start:start + step])
        while (payload := buffer.next_payload()) is not None:
            found.append(_wire.load(payload))
    assert buffer.pending == 0
    return found


@pytest.mark.parametrize("step", [1, 3, 5, 64, 10_000])
def test_frames_come_out_whole_however_the_bytes_arrive(step: int) -> None:
    messages = [("ok", None), ("connect", ()), ("ok", b"x" * 300), ("ok", ())]
    data = b"".join(_wire.frame(m) for m in messages)
    assert payloads(data, step) == messages


def test_a_partly_arrived_frame_stays_buffered() -> None:
    data = _wire.frame(("ok", 7))
    buffer = _wire.FrameBuffer()
    buffer.feed(data[:-1])
    assert buffer.next_payload() is None
    assert buffer.pending == len(data) - 1
    buffer.feed(data[-1:])
    assert _wire.load(buffer.next_payload() or b"") == ("ok", 7)


def test_a_frame_of_another_protocol_version_is_refused() -> None:
    data = bytearray(_wire.frame(("ok", 1)))
    data[0] = _wire.PROTOCOL_VERSION + 1
    buffer = _wire.FrameBuffer()
    buffer.feed(bytes(data))
    with pytest.raises(_wire.WireError, match="protocol version 2, this end speaks 1"):
        buffer.next_payload()


def test_a_frame_announcing_too_many_bytes_is_refused() -> None:
    buffer = _wire.FrameBuffer()
    buffer.feed(struct.pack(">BI", _wire.PROTOCOL_VERSION, _wire.MAX_FRAME + 1))
    with pytest.raises(_wire.WireError, match="over"):
        buffer.next_payload()


def test_a_payload_that_does_not_unpickle_is_a_wire_error() -> None:
    with pytest.raises(_wire.WireError, match="does not unpickle"):
        _wire.load(b"not a pickle")


def test_write_batch_records_travel_as_plain_tuples_and_come_back_as_records() -> None:
    records = (StoreRecord("a", b"1", 5), StoreRecord("b", None, 6))
    (message,) = payloads(_wire.request("write_batch", records), 7)
    assert message == ("write_batch", ((("a", b"1", 5), ("b", None, 6)),))
    method, (rows,) = _wire.parse_request(message)
    assert method == "write_batch"
    assert [(r.key, r.value, r.version, r.deleted) for r in rows] == [
        (r.key, r.value, r.version, r.deleted) for r in records
    ]


def test_a_fenced_write_carries_its_fence() -> None:
    records = (StoreRecord("a", b"1", 5),)
    (message,) = payloads(_wire.request("write_batch_fenced", records, Fence(7, 3)), 5)
    assert message == ("write_batch_fenced", ((("a", b"1", 5),), (7, 3)))
    method, (rows, fence) = _wire.parse_request(message)
    assert (method, [(r.key, r.version) for r in rows], fence) == (
        "write_batch_fenced", [("a", 5)], Fence(7, 3))


def test_a_fenced_out_batch_crosses_with_its_partition_and_epochs() -> None:
    error = StoreFenced("partition 7 is at epoch 4", partition=7, epoch=3, current=4)
    (message,) = payloads(_wire.error(error), 100)
    ok, rebuilt = _wire.parse_reply(message)
    assert not ok and isinstance(rebuilt, StoreFenced)
    assert (str(rebuilt), rebuilt.partition, rebuilt.epoch, rebuilt.current) == (
        str(error), 7, 3, 4)


def test_other_calls_carry_their_arguments() -> None:
    (message,) = payloads(_wire.request("read", "k"), 100)
    assert _wire.parse_request(message) == ("read", ("k",))


def test_a_method_the_worker_does_not_serve_is_refused_at_both_ends() -> None:
    with pytest.raises(ValueError, match="no method 'drop_table'"):
        _wire.request("drop_table")
    with pytest.raises(_wire.WireError, match="not a store worker request"):
        _wire.parse_request(("drop_table", ()))
    with pytest.raises(_wire.WireError, match="not a store worker request"):
        _wire.parse_request("connect")


def test_the_hello_carries_the_factory_and_checks_the_version() -> None:
    factory = SQLiteFactory(Path("s.db"), "t", 1.0, "process")
    (message,) = payloads(_wire.hello(factory), 100)
    assert _wire.parse_hello(message) == factory
    with pytest.raises(_wire.WireError, match="speaks protocol 1, the client 9"):
        _wire.parse_hello(("hello", 9, factory))
    with pytest.raises(_wire.WireError, match="expected a hello"):
        _wire.parse_hello(("connect", ()))


def test_a_write_outcome_crosses_as_the_same_values() -> None:
    outcome = (Rejection("a", 3, "DataError: too big"), Superseded("b", 4))
    (message,) = payloads(_wire.ok(outcome), 100)
    assert _wire.parse_reply(message) == (True, outcome)


@pytest.mark.parametrize("error", [
    StoreUnavailable("SQLite write failed: disk I/O error"),
    SchemaMismatch("SQLite store 's.db' has schema version 9"),
    ConfigError("store table name must be an identifier, got 'a b'"),
    sqlite3.OperationalError("database is locked"),
    ValueError("bad"),
], ids=lambda e: type(e).__name__)
def test_a_store_error_crosses_as_the_same_type_and_message(error: Exception) -> None:
    (message,) = payloads(_wire.error(error, "Traceback: line 1\n"), 100)
    ok, rebuilt = _wire.parse_reply(message)
    assert not ok
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    assert rebuilt.__notes__ == ["in the store worker process:\nTraceback: line 1"]


def test_an_error_of_an_unknown_type_becomes_a_runtime_error_naming_it() -> None:
    class Strange(Exception):
        pass

    ok, rebuilt = _wire.parse_reply(_wire.load(_wire.error(Strange("odd"))[5:]))
    assert not ok and type(rebuilt) is RuntimeError
    assert str(rebuilt) == f"store worker raised {__name__}.{Strange.__qualname__}: odd"


def test_an_error_needing_more_than_a_message_becomes_a_runtime_error() -> None:
    ok, rebuilt = _wire.parse_reply(
        _wire.load(_wire.error(LeaseHeld("held", holder=None))[5:])
    )
    assert not ok and type(rebuilt) is RuntimeError
    assert "LeaseHeld: held" in str(rebuilt)


def test_only_known_modules_exception_types_are_looked_up() -> None:
    assert _wire.known_error("builtins", "KeyError") is KeyError
    assert _wire.known_error("builtins", "print") is None  # not an exception type
    assert _wire.known_error("os", "error") is None  # not a module the stores raise from
    assert _wire.known_error("writebehind._core._errors", "StoreUnavailable") is StoreUnavailable


def test_a_reply_of_neither_shape_is_a_wire_error() -> None:
    with pytest.raises(_wire.WireError, match="not a store worker reply"):
        _wire.parse_reply(("maybe", 1))


def test_the_factory_pickles_and_makes_the_same_store() -> None:
    factory = SQLiteFactory(Path("s.db"), "tbl", 2.0, "process")
    again = pickle.loads(pickle.dumps(factory))
    store = again()
    assert (store.path, store.table, store.timeout) == (factory.path, "tbl", 2.0)
