"""The NATS node helpers moved to :mod:`writebehind.harness._nats` (the cluster chaos suite
starts its servers with them too). Kept so that a test written against the old place still
imports; new tests import from the harness."""

from writebehind.harness._nats import NatsCluster, Node, free_ports, nats_server_binary

__all__ = ["NatsCluster", "Node", "free_ports", "nats_server_binary"]
