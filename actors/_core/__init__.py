"""The kernel: what the cache *is*, with no I/O.

Errors, messages, statistics, configuration, routing and versions, actor status and the
shard's state machine. Nothing here imports trio, ``os`` or a database driver: every layer
above (journal, stores, runtime, inspector, command line) builds on it, and its tests need no
event loop.
"""
