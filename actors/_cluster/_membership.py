"""Cluster membership on a JetStream KV bucket (the I/O shell of ``_core/_membership.py``).

The bucket ``wb-<cluster>-members`` holds one key per live member (``member_key``), whose
value names it and the wall-clock time it lapses: ``ttl`` after it was written. The member
writes it again every ``renew_every``; a graceful leave deletes it. Who is live is read
from the bucket's stream (its subjects, then each key's last message); the rule is pure.
The bucket's ``max_age`` removes the keys of members that died long ago.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
import trio
from nats.js.kv import KeyValue

from .._core._membership import MemberValue, live_members, member_key
from ._bridge import NatsConnection

log = logging.getLogger("writebehind")


def members_bucket(cluster: str) -> str:
    return f"wb-{cluster}-members"


class Membership:
    """This member's key in the member bucket, and its view of the others'."""

    def __init__(self, conn: NatsConnection, kv: KeyValue, bucket: str, member: str, *,
                 ttl: float, renew_every: float, drift: float,
                 wall: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._kv = kv
        self.bucket = bucket
        self.member = member
        self.key = member_key(member)
        self.ttl = ttl
        self.renew_every = renew_every
        self.drift = drift
        self._wall = wall
        self.live: frozenset[str] = frozenset({member})  # as last read
        self.heartbeats = 0

    @classmethod
    async def open(cls, conn: NatsConnection, cluster: str, member: str, *, replicas: int,
                   ttl: float, renew_every: float, drift: float,
                   wall: Callable[[], float] = time.time) -> Membership:
        """The bucket (created if missing; keys of dead members age out after
        ``max(60 s, 20 ttl)``) and this member's side of it; not joined yet."""
        bucket = members_bucket(cluster)
        try:
            kv = await conn.run(conn.js.key_value, bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await conn.run(conn.js.create_key_value, bucket=bucket, history=1,
                                replicas=replicas, ttl=max(60.0, 20 * ttl))
        return cls(conn, kv, bucket, member, ttl=ttl, renew_every=renew_every, drift=drift,
                   wall=wall)

    async def heartbeat(self) -> None:
        """Write this member's key: live for ``ttl`` more (joining is the first one)."""
        value = MemberValue(self.member, self._wall() + self.ttl).encode()
        await self._conn.run(self._kv.put, self.key, value)
        self.heartbeats += 1

    async def read(self) -> frozenset[str]:
        """The live members now (this one always among them); also kept as :attr:`live`."""
        stream = f"KV_{self.bucket}"
        prefix = f"$KV.{self.bucket}."
        info = await self._conn.run(self._conn.js.stream_info, stream,
                                    subjects_filter=f"{prefix}>")
        values: list[MemberValue] = []
        for subject in sorted((info.state.subjects or {}).keys()):
            try:
                message = await self._conn.run(self._conn.js.get_last_msg, stream, subject)
            except nats.js.errors.NotFoundError:
                continue  # deleted or aged out since the listing
            if (message.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                continue
            value = MemberValue.decode(message.data or b"")
            if value is not None:
                values.append(value)
        self.live = live_members(values, me=self.member, now=self._wall(), drift=self.drift)
        return self.live

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Join, then renew the key every ``renew_every`` until cancelled. A failed renewal
        is logged and retried at the next tick (the others count this member live for
        ``ttl + drift`` after its last write)."""
        await self.heartbeat()
        task_status.started()
        while True:
            await trio.sleep(self.renew_every)
            try:
                await self.heartbeat()
            except nats.errors.Error as exc:
                log.warning("renewing membership of %r failed (%s); retrying", self.member, exc)

    async def leave(self) -> None:
        """Delete this member's key (a graceful leave): the others see it gone at their
        next read. Best effort: a key not deleted lapses after ``ttl``."""
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self._conn.run(self._kv.delete, self.key)
            except nats.errors.Error as exc:
                log.warning("leaving the membership failed (%s); the key lapses in %.1fs",
                            exc, self.ttl)
