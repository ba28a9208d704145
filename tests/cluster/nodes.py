"""The NATS server processes of the cluster tests: ``writebehind._cluster._nodes``, which
``writebehind bench --cluster`` starts its cluster with too."""

from writebehind._cluster._nodes import NatsCluster, Node, free_ports, nats_server_binary

__all__ = ["NatsCluster", "Node", "free_ports", "nats_server_binary"]
