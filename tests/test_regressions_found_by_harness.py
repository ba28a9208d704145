"""Runtime bugs the chaos harness found, each pinned by the rule it broke."""

from collections.abc import Sequence
from pathlib import Path

import pytest

from writebehind import (
    Config,
    Rejection,
    Seams,
    Store,
    StoreRecord,
    StoreRejected,
    open_cache,
)
from writebehind.harness import MemoryStore


class RefusingStore:
    """Refuses every record of one key for good; passes the rest through."""

    def __init__(self, inner: Store, key: str) -> None:
        self.inner = inner
        self.key = key
        self.blocking = inner.blocking

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write_batch(self, records: Sequence[StoreRecord]) -> tuple[Rejection, ...]:
        self.inner.write_batch([r for r in records if r.key != self.key])
        return tuple(Rejection(r.key, r.version, "refused") for r in records if r.key == self.key)


def memory_config(tmp_path: Path, **kw: object) -> Config:
    return Config(store="sqlite:///unused.db", journal_dir=tmp_path / "journal", **kw)  # type: ignore[arg-type]


async def test_regression_a_write_through_the_store_refused_is_never_acknowledged(
    tmp_path: Path,
) -> None:
    # ack='store' used to settle a refused record as committed and acknowledge the put.
    db = MemoryStore()
    seams = Seams(store_factory=db.factory, wrap_store=lambda s: RefusingStore(s, "poison"))
    async with open_cache(memory_config(tmp_path, ack="store"), seams=seams) as cache:
        with pytest.raises(StoreRejected, match="refused 'poison' for good"):
            await cache.put("poison", b"x")
        await cache.put("fine", b"y")
        assert await cache.get("poison") is None
    assert db.values() == {"fine": b"y"}
