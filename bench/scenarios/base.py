"""What every scenario gets (Context) and the shared publish-and-count measurement (measure_delivery)."""

from __future__ import annotations

import asyncio
import math
import os
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final

from bench.procstat import Sampler, Usage
from bench.publisher import Publisher, PublishReport, RequestBuilder
from bench.results import Metric, percentiles
from bench.servers import ServerHandle
from bench.sizes import Sizes
from bench.workers import WorkerPool


@dataclass(slots=True)
class Context:
    server: ServerHandle
    pool: WorkerPool
    sizes: Sizes
    log: Callable[[str], None]
    # Who sends the HTTP API scenarios' requests: "c" (bench/c/publisher) or "python" (bench/publisher.py).
    publisher: str = "python"

    def server_sampler(self) -> Sampler:
        return Sampler(self.server.pids, cores=self.server.cores)

    def generator_sampler(self) -> Sampler:
        return Sampler([os.getpid(), *self.pool.pids], descend=False)


@dataclass(frozen=True, slots=True)
class Delivery:
    publish: PublishReport
    expected: int
    received: int
    seconds: float
    latency: dict[str, float]
    server: Usage
    generator: Usage
    client_errors: int
    last_error: str

    @property
    def loss(self) -> float:
        return max(0.0, 1.0 - self.received / self.expected) if self.expected else 0.0

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    def metrics(self) -> dict[str, Metric]:
        return {
            "delivered_per_s": round(self.rate, 1),
            "expected": self.expected,
            "received": self.received,
            "loss_pct": round(100 * self.loss, 3),
            **{k: round(v, 3) for k, v in self.latency.items()},
            "published_ok": self.publish.ok,
            "publish_failed": self.publish.failed,
            "publish_max_lag_s": round(self.publish.max_lag, 3),
            "server_cpu_pct": round(self.server.cpu_pct, 1),
            **core_share(self.server),
            "server_rss_mb": round(self.server.rss_peak / 2**20, 1),
            "generator_cpu_pct": round(self.generator.cpu_pct, 1),
            "client_errors": self.client_errors,
            "last_error": self.last_error or self.publish.last_error,
        }

    def line(self) -> str:
        lat = self.latency
        return (
            f"delivered {self.rate:,.0f} msg/s  loss {100 * self.loss:.2f}%  "
            f"p50 {lat['p50_ms']:.1f} ms  p99 {lat['p99_ms']:.1f} ms  max {lat['max_ms']:.0f} ms  "
            f"server cpu {self.server.cpu_pct:.0f}% ({share_line(self.server)}) "
            f"rss {self.server.rss_peak / 2**20:.0f} MB  "
            f"gen cpu {self.generator.cpu_pct:.0f}%"
        )


def core_share(usage: Usage) -> dict[str, Metric]:
    """What else ran on the server's pinned cores over a window (see procstat.Usage)."""
    return {
        "others_on_server_cores_pct": round(usage.others_pct, 1),
        "interrupts_on_server_cores_pct": round(usage.interrupts_pct, 1),
        "steal_on_server_cores_pct": round(usage.steal_pct, 1),
    }


def share_line(usage: Usage) -> str:
    return f"others {usage.others_pct:.0f}%, irq {usage.interrupts_pct:.0f}%, steal {usage.steal_pct:.0f}%"


DELIVERY_RATIOS = {"delivered_per_s": True, "p99_ms": False, "server_cpu_pct": False, "server_rss_mb": False}


async def measure_delivery(
    ctx: Context,
    publish: Callable[[], Awaitable[PublishReport]],
    copies: int,
    drain_timeout: float = 10.0,
    stall: float = 2.0,
) -> Delivery:
    """Run `publish` and count what the subscribers receive: each successful request should reach
    `copies` subscribers. Waits after publishing until everything arrived, nothing more arrived
    for `stall` seconds, or `drain_timeout` passed."""
    await ctx.pool.counters(reset=True)
    server, generator = ctx.server_sampler(), ctx.generator_sampler()
    server.start()
    generator.start()
    started = time.monotonic()
    report = await publish()
    expected = report.ok * copies
    received, last_change = 0, time.monotonic()
    deadline = last_change + drain_timeout
    while time.monotonic() < deadline:
        now_received = (await ctx.pool.counters())["received"]
        if now_received >= expected:
            received = now_received
            break
        if now_received != received:
            received, last_change = now_received, time.monotonic()
        elif time.monotonic() - last_change > stall:
            break
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - started
    server_usage, generator_usage = await server.stop(), await generator.stop()
    counters, latencies = await ctx.pool.collect(reset=True)
    return Delivery(
        report,
        expected,
        counters["received"],
        seconds,
        percentiles(latencies),
        server_usage,
        generator_usage,
        counters["errors"],
        counters["last_error"],
    )


async def warm_up(ctx: Context, publisher: Publisher, build: RequestBuilder, copies: int, limit: float = 15.0) -> None:
    """Publish single events until one reaches all `copies` subscribers.

    With several nodes or workers a subscriber's node may confirm the subscription before Redis
    has confirmed the node's SUBSCRIBE (relay, soketi alike), so the first events can miss it;
    measuring from then on would count that start-up as loss. Not counted in the figures."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await ctx.pool.counters(reset=True)
        await publisher.at_rate(build, 100.0, 1, 5.0)
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            if (await ctx.pool.counters())["received"] >= copies:
                await ctx.pool.collect(reset=True)
                return
            await asyncio.sleep(0.02)
    raise ScenarioError(f"no event reached all {copies} subscribers within {limit:g}s of warm-up")


class ScenarioError(Exception):
    """The scenario could not be measured (e.g. no connection could subscribe)."""


async def subscribe_all(
    ctx: Context, channel: str, count: int, concurrency: int = 0, **extra: Metric
) -> dict[str, Metric]:
    """Connect `count` subscribers to `channel` (a pattern with {i} / {m} for per-connection
    channels), at most `concurrency` handshakes at once (default: the sizes' connect_concurrency),
    and return connect metrics; a scenario measured on fewer subscribers than asked says so in
    its metrics."""
    target = ctx.server.targets[0]
    in_flight = concurrency or ctx.sizes.connect_concurrency
    reply = await ctx.pool.connect(
        {**target.as_command(), "channel": channel, "concurrency": in_flight, **extra},
        count,
        timeout=max(60.0, count / 50),
    )
    if reply["ok"] == 0:
        raise ScenarioError(f"no subscriber connected: {reply['errors']}")
    return {
        "subscribers": reply["ok"],
        "connect_failed": reply["failed"],
        "connect_seconds": round(reply["elapsed"], 3),
        "connect_errors": "; ".join(reply["errors"])[:300],
    }


# Files a process keeps besides client sockets (listeners, epoll, logs, node's own): kept free.
FD_MARGIN: Final = 150
# SO_REUSEPORT spreads connections by a hash, not evenly: leave room in each worker.
REUSEPORT_SLACK: Final = 0.95


def sockets_per_process() -> int:
    """Client sockets one process may hold: the hard RLIMIT_NOFILE (which a process cannot raise
    without CAP_SYS_RESOURCE; the bench raises the soft limit to it) less FD_MARGIN."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return (1 << 20 if hard == resource.RLIM_INFINITY else hard) - FD_MARGIN


def server_capacity(ctx: Context) -> int:
    """How many connections the server under test can hold on this machine."""
    n = ctx.server.serving_processes
    return sockets_per_process() if n == 1 else int(n * sockets_per_process() * REUSEPORT_SLACK)


@asynccontextmanager
async def receivers_for(ctx: Context, count: int) -> AsyncIterator[Context]:
    """A context whose worker pool can hold `count` connections: the scenario's own pool when it
    is big enough, else a larger pool of the same kind, stopped (by PID) on the way out."""
    needed = math.ceil(count / sockets_per_process())
    if needed <= ctx.pool.size:
        yield ctx
        return
    pool = WorkerPool(needed, ctx.pool.kind)
    try:
        await pool.start()
        yield replace(ctx, pool=pool)
    finally:
        try:
            await pool.close_connections()
        finally:
            await pool.stop()
