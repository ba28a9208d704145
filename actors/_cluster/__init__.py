"""Cluster mode on NATS JetStream (issue 14), the foundation: the trio bridge to ``nats-py``,
partition leases on a KV bucket and the replicated journal primitive, and the first slice that
runs a cache on them through the runtime's seams (``_replicated.py``, ``_epochs.py``,
``_member.py``). Nothing here is public or reachable from ``Config`` yet;
``specs/cluster.md`` says what exists and what does not."""
