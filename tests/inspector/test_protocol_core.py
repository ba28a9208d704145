"""The pure core: addresses, access rules, message shapes and the per-client outbox."""

from __future__ import annotations

import json

import pytest

from writebehind import (
    CacheEvent,
    CacheStatistics,
    ClusterStatistics,
    ConfigError,
    PartitionLeaseStatistics,
    ShardStatistics,
    StoreStatistics,
)
from writebehind._core._addresses import dial_netloc, is_loopback, parse_address
from writebehind._inspector._protocol import (
    MAX_DETAIL_CHARS,
    ClientOutbox,
    Refusal,
    allowed_origins,
    check_bind,
    check_handshake,
    event_message,
    reply_to,
    state_message,
)


def shard(i: int, **kw: object) -> ShardStatistics:
    fields: dict[str, object] = dict(
        name=f"shard-{i}", shard=i, status="running", restarts=0, entries=3, dirty=2,
        inflight_batches=0, unpersisted=2, oldest_dirty_age=0.5, mailbox_depth=1, acked_seq=9,
        written_seq=9, synced_seq=8, persisted_seq=7, journal_bytes=400, journal_segments=1,
        batches_acked=1, records_persisted=7, evictions=0, quarantined=0, last_error=None,
    )
    fields.update(kw)
    return ShardStatistics(**fields)  # type: ignore[arg-type]


def stats(**kw: object) -> CacheStatistics:
    store = StoreStatistics(
        name="store-0", status="running", restarts=2, batches=1, records=7, errors=0,
        last_error=None,
    )
    fields: dict[str, object] = dict(
        ack="fsync", status="running", shards=(shard(0), shard(1, restarts=1)), stores=(store,),
        store_mailbox_depth=3, quarantined=0, alerts=0, last_alert=None,
    )
    fields.update(kw)
    return CacheStatistics(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8765", ("127.0.0.1", 8765)), ("[::1]:0", ("::1", 0)),
     ("localhost:80", ("localhost", 80)), ("0.0.0.0:9000", ("0.0.0.0", 9000))],
)
def test_addresses_parse_as_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["8765", "host:", ":80", "h:99999", "h:x1"])
def test_a_bad_address_names_the_field_and_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^Config.inspector must be 'HOST:PORT'.*" + text):
        parse_address(text, what="Config.inspector")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.4", False),
     ("example.org", False)],
)
def test_only_loopback_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("host", "netloc"), [
    ("127.0.0.1", "127.0.0.1:80"), ("0.0.0.0", "127.0.0.1:80"), ("", "127.0.0.1:80"),
    ("::", "127.0.0.1:80"), ("::1", "[::1]:80"), ("db.example", "db.example:80"),
])
def test_a_url_dials_a_wildcard_bind_on_loopback_and_brackets_ipv6(host: str, netloc: str) -> None:
    assert dial_netloc(host, 80) == netloc


def test_binding_beyond_loopback_without_a_token_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match=r"refuses to bind to '0\.0\.0\.0' without a token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "s3cret")
    check_bind("127.0.0.1", None)


ORIGINS = allowed_origins("127.0.0.1", 8765)


def test_a_tool_without_origin_or_token_may_connect_when_no_token_is_set() -> None:
    assert check_handshake("/ws", [], token=None, origins=ORIGINS) is None
    assert check_handshake("/", [], token=None, origins=ORIGINS) is None


def test_the_page_own_origin_is_allowed_and_a_foreign_one_refused() -> None:
    ok = [(b"Origin", b"http://localhost:8765")]
    assert check_handshake("/ws", ok, token=None, origins=ORIGINS) is None
    evil = [(b"origin", b"http://evil.example:8765")]
    assert check_handshake("/ws", evil, token=None, origins=ORIGINS) == Refusal(
        403, "origin 'http://evil.example:8765' may not connect to this inspector"
    )
    # A file:// page sends the opaque origin "null": refused too.
    assert check_handshake("/ws", [(b"origin", b"null")], token=None, origins=ORIGINS)


@pytest.mark.parametrize("order", ["foreign last", "foreign first"])
def test_a_handshake_with_several_origin_headers_is_refused(order: str) -> None:
    # Whichever one a check would read, the other could be the one a browser meant.
    own, foreign = (b"Origin", b"http://127.0.0.1:8765"), (b"origin", b"http://evil.example")
    headers = [own, foreign] if order == "foreign last" else [foreign, own]
    assert check_handshake("/ws", headers, token=None, origins=ORIGINS) == Refusal(
        403, "a handshake may carry one Origin header, not several"
    )
    assert check_handshake("/ws", [own, own], token=None, origins=ORIGINS) is not None


def test_extra_origins_are_allowed_only_when_named() -> None:
    origins = allowed_origins("127.0.0.1", 8765, ["https://dash.example"])
    hdr = [(b"origin", b"https://dash.example")]
    assert check_handshake("/ws", hdr, token=None, origins=origins) is None
    assert check_handshake("/ws", hdr, token=None, origins=ORIGINS) is not None


@pytest.mark.parametrize(
    ("target", "headers", "refused"),
    [("/ws", [], True), ("/ws?token=nope", [], True), ("/ws?token=s3cret", [], False),
     ("/ws", [(b"Authorization", b"Bearer s3cret")], False),
     ("/ws", [(b"authorization", b"Bearer s3cre")], True)],
)
def test_with_a_token_set_only_the_token_gets_in(
    target: str, headers: list[tuple[bytes, bytes]], refused: bool
) -> None:
    result = check_handshake(target, headers, token="s3cret", origins=ORIGINS)
    assert (result is not None) is refused
    if refused:
        assert result is not None and result.status == 401


def test_an_unknown_path_is_not_found() -> None:
    result = check_handshake("/admin", [], token=None, origins=ORIGINS)
    assert result is not None and result.status == 404


def test_a_snapshot_lists_the_supervisor_then_shards_then_stores() -> None:
    message = state_message("snapshot", stats(), seq=1, now=5.0, recent=[{"type": "event"}])
    json.dumps(message, allow_nan=False)  # the wire format is plain JSON
    names = [(a["name"], a["kind"], a["parent"]) for a in message["actors"]]
    assert names == [
        ("supervisor", "supervisor", None), ("shard-0", "shard", "supervisor"),
        ("shard-1", "shard", "supervisor"), ("store-0", "store", "supervisor"),
    ]
    supervisor, shard0 = message["actors"][0], message["actors"][1]
    assert supervisor["strategy"] == "one_for_one"
    assert supervisor["restarts"] == 3  # 0 + 1 shard restarts + 2 store restarts
    assert supervisor["children"] == ["shard-0", "shard-1", "store-0"]
    for field in ("mailbox_depth", "dirty", "oldest_dirty_age", "acked_seq", "synced_seq",
                  "persisted_seq", "journal_bytes", "journal_segments", "restarts", "last_error"):
        assert field in shard0, field
    assert message["actors"][3]["mailbox_depth"] == 3
    assert message["cache"]["unpersisted"] == 4
    assert message["events"] == [{"type": "event"}]
    update = state_message("update", stats(), seq=2, now=6.0)
    assert "events" not in update and update["actors"] == message["actors"]


def test_a_detached_inspector_shows_no_actors() -> None:
    message = state_message("update", None, seq=1, now=0.0)
    assert message["actors"] == [] and message["cache"] == {"status": "detached"}
    assert message["cluster"] is None


def cluster_view() -> ClusterStatistics:
    return ClusterStatistics(
        cluster="orders", member="host-a:12:ab", live=("host-a:12:ab", "host-b:7:cd"),
        partitions=4, hosted=(0, 2), starting=(3,),
        leases=(PartitionLeaseStatistics(partition=0, epoch=5, expires_in=8.5,
                                         acknowledge_for=6.5),
                PartitionLeaseStatistics(partition=2, epoch=1, expires_in=9.0,
                                         acknowledge_for=7.0)),
        acquisitions=3, takeovers=1, handovers=2, renewals=40, losses=0, routed_served=9,
        routed_refused=1,
    )


def test_a_single_process_state_has_no_cluster_part_and_a_member_has_one() -> None:
    assert state_message("update", stats(), seq=1, now=0.0)["cluster"] is None
    message = state_message("snapshot", stats(cluster=cluster_view()), seq=1, now=0.0)
    json.dumps(message, allow_nan=False)
    assert message["cluster"] == {
        "cluster": "orders", "member": "host-a:12:ab",
        "live": ["host-a:12:ab", "host-b:7:cd"], "partitions": 4, "hosted": [0, 2],
        "starting": [3], "owned": [0, 2],
        "leases": [
            {"partition": 0, "epoch": 5, "expires_in": 8.5, "acknowledge_for": 6.5},
            {"partition": 2, "epoch": 1, "expires_in": 9.0, "acknowledge_for": 7.0},
        ],
        "acquisitions": 3, "takeovers": 1, "handovers": 2, "renewals": 40, "losses": 0,
        "routed_served": 9, "routed_refused": 1, "routed_expired": 0, "routed_repeats": 0,
    }
    assert cluster_view().assigned == (0, 2, 3)


def test_event_details_are_cut_to_a_bound() -> None:
    event = CacheEvent("crash", "shard-0", "x" * 10_000, 1.5)
    message = event_message(event, seq=4)
    assert len(message["detail"]) == MAX_DETAIL_CHARS + 1
    assert message["kind"] == "crash" and message["seq"] == 4 and message["time"] == 1.5


@pytest.mark.parametrize(
    ("text", "chaos", "expected_type"),
    [('{"type": "ping"}', False, "pong"), ("not json", False, "error"), ("[1]", False, "error"),
     ('{"type": "chaos", "action": "crash"}', False, "error"),
     ('{"type": "chaos", "action": "crash"}', True, "chaos"),
     ('{"type": "put", "key": "k"}', True, "error")],
)
def test_requests_are_read_only_unless_chaos_control_is_on(
    text: str, chaos: bool, expected_type: str
) -> None:
    assert reply_to(text, chaos_enabled=chaos)["type"] == expected_type


def test_the_outbox_coalesces_states_to_the_newest() -> None:
    box = ClientOutbox(interval=0.1, max_events=4)
    for seq in range(5):
        box.offer_state({"type": "update", "seq": seq})
    assert box.next_message(0.0) == {"type": "update", "seq": 4}
    assert box.next_message(0.0) is None


def test_states_leave_at_most_once_per_interval() -> None:
    box = ClientOutbox(interval=0.1, max_events=4)
    box.offer_state({"seq": 1})
    assert box.next_message(10.0) == {"seq": 1}
    box.offer_state({"seq": 2})
    assert box.next_message(10.05) == pytest.approx(10.1)  # not yet: the time it may go
    assert box.next_message(10.1) == {"seq": 2}


def test_events_go_first_in_order_and_overflow_drops_the_oldest_with_a_notice() -> None:
    box = ClientOutbox(interval=0.1, max_events=3)
    box.offer_state({"type": "update"})
    for seq in range(5):
        box.offer_event({"type": "event", "seq": seq})
    assert not box.too_far_behind()
    assert box.next_message(0.0) == {"type": "dropped", "events": 2}
    assert [box.next_message(0.0)["seq"] for _ in range(3)] == [2, 3, 4]  # type: ignore[index]
    assert box.next_message(0.0) == {"type": "update"}
    assert box.dropped_total == 2


def test_a_client_that_drops_more_than_a_queue_is_too_far_behind() -> None:
    box = ClientOutbox(interval=0.1, max_events=2)
    for seq in range(5):
        box.offer_event({"seq": seq})
    assert box.too_far_behind()
