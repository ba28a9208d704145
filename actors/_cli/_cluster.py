"""``writebehind cluster status --cluster nats://h:p[,...]``: is the NATS cluster fit to hold
a writebehind cluster's leases and journals?

Reports each server (reachable, version, name), the JetStream meta leader, the journal stream
and the lease bucket of ``--name`` if they exist, and a WARNING for every server that syncs
lazily (the default ``sync_interval`` of two minutes) or whose policy it cannot read. The
policy comes from each server's HTTP monitoring endpoint (``/varz``): ``--monitor`` names them
in the order of ``--cluster``; by default port 8222 on each server's host. Exit status 0 when
every server answers and a meta leader is known, 1 otherwise; warnings alone do not fail.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .._cluster._status import ClusterStatus


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cluster", help="inspect the NATS cluster a writebehind cluster runs on",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", help="servers, meta leader, stream, bucket, fsync")
    status.add_argument("--cluster", required=True,
                        help="NATS servers, comma-separated: nats://host:4222,...")
    status.add_argument("--monitor", default=None,
                        help="their monitoring URLs, comma-separated, in the same order "
                             "(default: http://<host>:8222 for each)")
    status.add_argument("--name", default="writebehind",
                        help="the writebehind cluster's name (its stream and bucket)")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds per server")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:  # on use: the command line loads without the optional nats-py
        from .._cluster._bridge import split_servers
        from .._cluster._status import cluster_status
    except ImportError as exc:
        print(f"writebehind cluster: {exc}; install the extra: pip install "
              "'writebehind[cluster]'", file=sys.stderr)
        return 2
    servers = split_servers(args.cluster)
    monitors = None
    if args.monitor:
        monitors = [m.strip() for m in args.monitor.split(",")]
        if len(monitors) != len(servers):
            print(f"writebehind cluster status: {len(servers)} servers but {len(monitors)} "
                  "monitoring URLs", file=sys.stderr)
            return 2
    status = trio.run(lambda: cluster_status(servers, monitors=monitors, cluster=args.name,
                                             timeout=args.timeout))
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        print(render(status))
    return 0 if status.ok else 1


def render(status: ClusterStatus) -> str:
    lines = [f"cluster {status.cluster!r} on {len(status.servers)} NATS servers"]
    for s in status.servers:
        if s.reachable:
            fsync = ("fsync always" if s.sync_always else
                     "fsync unknown" if s.sync_always is None else "fsync LAZY")
            lines.append(f"  {s.url}  up  {s.name or '?'}  nats-server {s.version}  {fsync}")
        else:
            lines.append(f"  {s.url}  DOWN  {s.error}")
    lines.append(f"JetStream meta leader: {status.meta_leader or 'none known'}")
    for label, asset in (("journal stream", status.stream), ("lease bucket", status.bucket)):
        if asset is None:
            lines.append(f"{label}: not created yet")
        else:
            lines.append(f"{label}: {asset['name']}, {asset['replicas']} replicas, "
                         f"{asset['messages']} messages, leader {asset['leader']}")
    lines += [f"WARNING: {w}" for w in status.warnings()]
    return "\n".join(lines)
