"""What a :class:`~writebehind._runtime._cache.Cache` routes a key's calls to: a shard.

Every shard of a single-process cache is a :class:`~writebehind._runtime._shard.ShardActor`
in this process. In cluster mode a shard (the cluster's partition) hosted by another member
is a stand-in with the same calls, which carries them to that member (``_cluster``
provides it; the runtime knows nothing of how). Either answers under the same contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._core._errors import StoreRejected
from .._core._messages import Receipt


class Partition(Protocol):
    """The calls the cache makes on the shard a key routes to."""

    @property
    def shard(self) -> int: ...

    async def write(self, key: str, value: bytes | None, raw_key: bytes) -> Receipt: ...

    async def write_many(
        self, items: Sequence[tuple[str, bytes | None, bytes]]
    ) -> list[Receipt | StoreRejected]: ...

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]: ...

    async def flush(self) -> None: ...

    async def wait_persisted(self, receipt: Receipt) -> None: ...

    def incarnation_serving(self) -> int | None: ...
