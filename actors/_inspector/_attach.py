"""The inspector and the metrics endpoint as attachments: started beside a running cache
when its ``Config`` asks for them (``Config.inspector``, ``Config.metrics``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from .._core._addresses import parse_address
from .._runtime._cache import Cache
from ._metrics import serve_metrics
from ._server import serve_inspector


async def attach_inspector(cache: Cache, nursery: trio.Nursery) -> None:
    """Start the inspector ``Config.inspector`` asks for, as ``cache.inspector``."""
    if cache.config.inspector is not None:
        server = await _start(nursery, serve_inspector, cache, "inspector", "the inspector",
                              cache.config.inspector, cache.config.inspector_token)
        if server is not None:
            logging.getLogger("writebehind.inspector").info("inspector: %s", server.page_url)
        cache.inspector = server


async def attach_metrics(cache: Cache, nursery: trio.Nursery) -> None:
    """Start the endpoint ``Config.metrics`` asks for, as ``cache.metrics``."""
    if cache.config.metrics is not None:
        server = await _start(nursery, serve_metrics, cache, "metrics", "the metrics endpoint",
                              cache.config.metrics, cache.config.metrics_token)
        if server is not None:
            logging.getLogger("writebehind.metrics").info("metrics: %s", server.url)
        cache.metrics = server


async def _start(nursery: trio.Nursery, serve: Callable[..., Awaitable[None]], cache: Cache,
                 name: str, title: str, address: str, token: str | None) -> Any:
    """What ``serve`` started on ``address``, or None: a server that cannot start is logged,
    never raised, and the cache serves without it."""
    host, port = parse_address(address, what=f"Config.{name}")
    try:
        return await nursery.start(partial(serve, cache, host, port, token=token))
    except Exception:
        logging.getLogger(f"writebehind.{name}").exception(
            "%s could not start on %s; the cache runs without it", title, address
        )
        return None


#: What ``writebehind.open_cache`` starts beside every cache (each only if configured).
ATTACHMENTS = (attach_inspector, attach_metrics)
