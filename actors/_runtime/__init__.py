"""The runtime: trio actors around the kernel's cores.

Shard actors (one core, one journal, one flush mailbox each), store actors (one store
connection each, in a worker thread), the supervisor that restarts them, the cache that
routes calls to them, the lease and journal recovery. Thin shells: decisions are the kernel's,
I/O is the journal's and the stores'.
"""
