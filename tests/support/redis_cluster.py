"""A real three-primary Redis Cluster on loopback: redis-server --cluster-enabled yes, joined by redis-cli.

Without replicas, a killed primary is restarted on its port with its nodes.conf (cluster membership
survives, data does not, as with a single Redis restarted empty). With one replica per primary (six
processes), a killed primary is replaced by its replica, at another address.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .ports import free_port
from .process import ProcessError, require_binary
from .redis import RedisServerProcess
from .timeouts import STARTUP_TIMEOUT

NODE_TIMEOUT_MS = 1000  # cluster-node-timeout: a dead primary turns the cluster to fail within about a second


class ClusterNodeProcess(RedisServerProcess):
    """One redis-server of the cluster, bound to 127.0.0.1:`port`, its bus on `bus_port`; restart() keeps its
    nodes.conf (cluster membership), not its data."""

    def __init__(self, port: int, bus_port: int, workdir: Path) -> None:
        super().__init__(
            "redis-cluster",
            port,
            workdir,
            "--cluster-enabled", "yes",
            "--cluster-port", str(bus_port),
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # A replica takes over however long ago it heard from its primary (a loaded test machine).
            "--cluster-replica-validity-factor", "0",
        )  # fmt: skip


class RedisClusterProcesses:
    """Three primaries covering every slot, each with `replicas` replicas. `.url` is relay's
    `redis+cluster://` URL for them."""

    def __init__(self, workdir: Path, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes: list[ClusterNodeProcess] = []
        try:
            for _ in range(3 * (1 + replicas)):
                port = free_port()
                self.nodes.append(ClusterNodeProcess(port, free_port(), workdir / f"redis-cluster-{port}"))
            for node in self.nodes:
                node.wait_ready()
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def _create(self) -> None:
        cli = require_binary("redis-cli", "install Debian's redis-tools (scripts/test does)")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        result = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise ProcessError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")

    def cli(self, port: int, *args: str) -> str:
        """Run redis-cli against one node and return its output."""
        cli = require_binary("redis-cli", "install Debian's redis-tools (scripts/test does)")
        result = subprocess.run(
            [cli, "-p", str(port), *args], capture_output=True, text=True, timeout=STARTUP_TIMEOUT, check=False
        )
        return result.stdout

    def is_ok(self) -> bool:
        """True when every running node reports cluster_state:ok."""
        running = [node for node in self.nodes if node.running]
        return all("cluster_state:ok" in self.cli(node.port, "CLUSTER", "INFO") for node in running)

    def wait_ok(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ok():
            if time.monotonic() > deadline:
                raise ProcessError("Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def shard_of(self, key: str) -> int:
        """Index (into .nodes) of the primary that serves `key`'s slot now."""
        alive = next(node for node in self.nodes if node.running)
        slot = int(self.cli(alive.port, "CLUSTER", "KEYSLOT", key).strip())
        for index, node in enumerate(self.nodes):
            if not node.running:
                continue
            for line in self.cli(node.port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "myself" in fields[2] and "master" in fields[2]:
                    for span in fields[8:]:
                        low, _, high = span.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return index
        raise ProcessError(f"no primary serves slot {slot}")

    def node_id(self, index: int) -> str:
        return self.cli(self.nodes[index].port, "CLUSTER", "MYID").strip()

    def move_empty_slot(self, key: str, to: int) -> None:
        """Reshard: hand the slot of `key` (which must hold no keys, e.g. a shard channel's) to primary `to`,
        the way redis-cli --cluster reshard does (IMPORTING, MIGRATING, then NODE on every primary)."""
        source = self.shard_of(key)
        slot = self.cli(self.nodes[0].port, "CLUSTER", "KEYSLOT", key).strip()
        target_id, source_id = self.node_id(to), self.node_id(source)
        self.cli(self.nodes[to].port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self.cli(self.nodes[source].port, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        for port in (self.nodes[to].port, self.nodes[source].port):
            self.cli(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:
            if node.running:
                self.cli(node.port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(workdir: Path, replicas: int = 0) -> RedisClusterProcesses:
    """Start the three primaries (and their replicas), join them, and return once the cluster is ok.
    The caller stops it."""
    return RedisClusterProcesses(workdir, replicas)
