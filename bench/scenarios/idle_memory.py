"""idle memory and connect rate: N subscribed connections that then stay idle; server RSS per
connection (RSS growth over the idle baseline / N) and connections/s while connecting (each
connection counted once its subscription_succeeded arrived)."""

import asyncio
import time

from bench.procstat import descendants, rss_bytes
from bench.results import Metric, Result
from bench.scenarios.base import Context, core_share, share_line, subscribe_all

# Let the server finish whatever connecting left behind (buffers, GC) before reading RSS.
SETTLE_SECONDS = 3.0


async def hold_idle(ctx: Context, name: str, count: int, pattern: str, channel_mod: int, concurrency: int) -> Result:
    server_pids = ctx.server.pids
    baseline = rss_bytes(_tree(server_pids))
    generator = ctx.generator_sampler()
    generator.start()
    server = ctx.server_sampler()
    server.start()
    started = time.monotonic()
    try:
        connected = await subscribe_all(ctx, pattern, count, concurrency, channel_mod=channel_mod)
        connect_seconds = time.monotonic() - started
        server_usage = await server.stop()
        generator_usage = await generator.stop()
        await asyncio.sleep(SETTLE_SECONDS)
        loaded = rss_bytes(_tree(server_pids))
        generator_rss = rss_bytes(ctx.pool.pids)
        still_open = (await ctx.pool.counters())["open"]
    finally:
        await ctx.pool.close_connections()
    n = int(connected["subscribers"])
    per_conn = (loaded - baseline) / n if n else 0.0
    rate = n / connect_seconds
    metrics: dict[str, Metric] = {
        **connected,
        "still_open": still_open,
        "connects_per_s": round(rate, 1),
        "connect_concurrency": concurrency,
        "rss_baseline_mb": round(baseline / 2**20, 1),
        "rss_loaded_mb": round(loaded / 2**20, 1),
        "rss_per_conn_kb": round(per_conn / 1024, 2),
        "server_cpu_pct_while_connecting": round(server_usage.cpu_pct, 1),
        **core_share(server_usage),
        "generator_cpu_pct": round(generator_usage.cpu_pct, 1),
        "generator_rss_per_conn_kb": round(generator_rss / max(n, 1) / 1024, 2),
        "channels": channel_mod or n,
    }
    line = (
        f"{n} conns, {channel_mod or n} channels, {concurrency} in flight ({still_open} open after "
        f"{SETTLE_SECONDS:g}s): connect {rate:,.0f} conn/s  {per_conn / 1024:.1f} KB/conn "
        f"(rss {baseline / 2**20:.0f} -> {loaded / 2**20:.0f} MB)  "
        f"server cpu {server_usage.cpu_pct:.0f}% ({share_line(server_usage)})  "
        f"gen cpu {generator_usage.cpu_pct:.0f}%"
    )
    ratios = {"rss_per_conn_kb": False, "connects_per_s": True, "generator_cpu_pct": False}
    return Result(ctx.server.name, name, metrics, line, ratios)


async def idle_memory(ctx: Context) -> Result:
    """Connections spread over 100 public channels, 200 handshakes in flight."""
    s = ctx.sizes
    return await hold_idle(
        ctx, "idle-memory", s.idle_connections, "bench-idle-{m}", s.idle_channels, s.connect_concurrency
    )


async def connect_rate(ctx: Context) -> Result:
    """Each connection subscribes to a channel of its own, 100 handshakes in flight."""
    s = ctx.sizes
    return await hold_idle(
        ctx, "connect-rate", s.connect_rate_connections, "bench-conn-{i}", 0, s.connect_rate_in_flight
    )


def _tree(pids: list[int]) -> list[int]:
    return [p for root in pids for p in descendants(root)]
