"""Cluster mode on NATS JetStream (issue 14), the foundation: the trio bridge to ``nats-py``,
partition leases on a KV bucket and the replicated journal primitive. Nothing here is wired
into the cache yet; ``specs/cluster.md`` says what exists and what does not."""
