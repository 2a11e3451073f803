"""What cluster-wide recovery costs Redis and the nodes (docs/recovery.md, "Several nodes"), in-process:
two RedisAdapters on one redis-server it starts, N events in a burst on one channel subscribed on both,
plain vs recovering (kept in the channel's Redis Stream). Prints Redis' own per-command figures, the
redis-server CPU, this process's CPU and the time until both nodes had every event.

    python -m bench.recovery_redis [N]
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from typing import Any

from redis import Redis

from relay.adapters.base import Envelope, EnvelopeKind, LocalSnapshot, LocalSubscription, Retention
from relay.config import RedisConfig
from relay.redis.adapter import RedisAdapter

APP = "1001"


class Counter:
    """A ClusterListener that counts deliveries per channel."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.changed = asyncio.Event()

    def deliver(self, envelope: Envelope) -> None:
        self.counts[envelope.channel] = self.counts.get(envelope.channel, 0) + 1
        self.changed.set()

    async def wait(self, channel: str, count: int) -> None:
        while self.counts.get(channel, 0) < count:
            self.changed.clear()
            await self.changed.wait()

    # The rest of ClusterListener: no clients here, so no presence to heal and nothing to write back.

    def heal_members(self, app_id: str, channel: str, members: Mapping[str, Any], gone: Collection[str]) -> set[str]:
        return set()

    def member_lost(self, app_id: str, channel: str, user_id: str) -> None: ...

    def channel_lost(self, app_id: str, channel: str) -> None: ...

    def local_snapshot(self) -> LocalSnapshot:
        return LocalSnapshot({}, ())

    def member_rejoined(self, member: LocalSubscription, removal_announced: bool) -> None: ...

    def presence_channels(self) -> list[tuple[str, str]]:
        return []


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def measure(count: int, port: int, pid: int) -> None:
    config = RedisConfig(url=f"redis://127.0.0.1:{port}/0")
    nodes = [(RedisAdapter(config, node_id=name), Counter()) for name in ("a", "b")]
    for adapter, listener in nodes:
        await adapter.start(listener)
    stats = Redis(port=port)
    publisher = nodes[0][0]
    try:
        for round_ in range(3):
            for mode in ("plain", "recovering"):
                channel = f"{mode}-{round_}"
                for adapter, _ in nodes:
                    adapter.channel_occupied_locally(APP, channel)
                    await adapter.settle()
                retention = Retention(1000, 240_000) if mode == "recovering" else None
                data = b'{\\"n\\":%d,\\"pad\\":\\"' + b"x" * 40 + b'\\"}'
                frames = [
                    b'{"event":"tick","channel":"%s","data":"%s"}' % (channel.encode(), data % n) for n in range(count)
                ]
                stats.config_resetstat()
                redis_cpu, started, process_cpu = cpu_seconds(pid), time.perf_counter(), time.process_time()
                for frame in frames:
                    publisher.publish(Envelope(EnvelopeKind.EVENT, APP, channel, frame, retention=retention))
                for _, listener in nodes:
                    await listener.wait(channel, count)
                elapsed = time.perf_counter() - started
                commands = {
                    name.removeprefix(
                        "cmdstat_"
                    ): f"{figures['calls'] / count:.3f}/event, {figures['usec_per_call']} µs"
                    for name, figures in stats.info("commandstats").items()
                    if name not in ("cmdstat_config|resetstat", "cmdstat_info")
                }
                redis_ms = (cpu_seconds(pid) - redis_cpu) * 1000
                nodes_ms = (time.process_time() - process_cpu) * 1000
                print(
                    f"{mode}: {count} events in {elapsed * 1000:.0f} ms, redis-server CPU {redis_ms:.0f} ms, "
                    f"nodes' CPU {nodes_ms:.0f} ms; commands: {commands}"
                )
    finally:
        stats.close()
        for adapter, _ in nodes:
            await adapter.close()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="relay-bench-redis-")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen([*argv, "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                Redis(port=port).ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        asyncio.run(measure(count, port, redis.pid))
    finally:
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
