"""Seeing a running cache: the inspector (live state over a websocket, a page and a terminal
client) and the Prometheus metrics endpoint. Above the runtime: they read a cache's
statistics and events, and the cache starts them through its attachment seam."""
