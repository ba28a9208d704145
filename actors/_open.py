"""The way in: a cache with what its ``Config`` asks to run beside it.

The top of the tree: it joins the runtime (``_runtime``) and the servers that watch it
(``_inspector``), which the runtime itself never imports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._core._config import Config
from ._inspector._attach import ATTACHMENTS
from ._runtime import _cache
from ._runtime._cache import Cache
from ._runtime._seams import Seams


async def serve_cache(
    config: Config | None = None,
    *,
    seams: Seams | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a cache in the caller's nursery: ``cache = await nursery.start(serve_cache, config)``.

    Journals replay before ``start`` returns. Stop it with ``await cache.aclose()`` (drains)
    or by cancelling the nursery (no drain: what is unflushed stays journaled).
    """
    await _cache.serve_cache(config, seams=seams, attachments=ATTACHMENTS, task_status=task_status)


@asynccontextmanager
async def open_cache(
    config: Config | None = None, *, seams: Seams | None = None
) -> AsyncIterator[Cache]:
    """Run a cache for the ``async with`` block; drains on the way out."""
    async with _cache.open_cache(config, seams=seams, attachments=ATTACHMENTS) as cache:
        yield cache
