"""Cluster mode on NATS JetStream (issue 14): the trio bridge to ``nats-py``, partition leases
on a KV bucket, the replicated journal, and a cache on them through the runtime's seams
(``_replicated.py``, ``_epochs.py``, ``_member.py``), which ``open_cache(Config(cluster=...))``
builds (``_cache.py``), with membership (``_membership.py``), the partitions each member
hosts (``_hosting.py``) and routing to their owners (``_routing.py``). ``specs/cluster.md``
says what exists and what does not."""
