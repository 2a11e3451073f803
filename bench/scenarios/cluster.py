"""cross-node fan-out over Redis: subscribers split over two nodes sharing one Redis, events
published to node A only, so half of every delivery crosses Redis. Enabled with --cluster."""

from bench.procstat import Sampler
from bench.publisher import Publisher, events_builder
from bench.results import Metric, Result
from bench.scenarios.base import DELIVERY_RATIOS, Context, ScenarioError, measure_delivery, warm_up

CHANNEL = "bench-cluster"


async def cluster_fanout(ctx: Context) -> Result:
    s = ctx.sizes
    if len(ctx.server.targets) < 2:
        raise ScenarioError("needs two nodes (started with --cluster, or --target and --target-b)")
    node_a, node_b = ctx.server.targets[:2]
    half = s.cluster_subscribers // 2
    connected = 0
    redis = Sampler(ctx.server.redis_pids)
    publisher = Publisher(node_a, connections=16)
    try:
        for target, first, count in ((node_a, 0, half), (node_b, half, s.cluster_subscribers - half)):
            reply = await ctx.pool.connect(
                {**target.as_command(), "channel": CHANNEL, "first_index": first, "concurrency": s.connect_concurrency},
                count,
                timeout=60.0,
            )
            if reply["ok"] == 0:
                raise ScenarioError(f"no subscriber connected to port {target.port}: {reply['errors']}")
            connected += reply["ok"]
        await publisher.open()
        build = events_builder(node_a, lambda _: (CHANNEL,))
        await warm_up(ctx, publisher, build, connected)
        redis.start()
        delivery = await measure_delivery(
            ctx,
            lambda: publisher.at_rate(build, s.cluster_rate, int(s.cluster_rate * s.seconds), s.seconds * 2 + 5),
            copies=connected,
        )
        redis_usage = await redis.stop()
    finally:
        publisher.close()
        await ctx.pool.close_connections()
    metrics: dict[str, Metric] = {
        "subscribers": connected,
        "node_a_port": node_a.port,
        "node_b_port": node_b.port,
        "events_per_s": s.cluster_rate,
        **delivery.metrics(),
        "redis_cpu_pct": round(redis_usage.cpu_pct, 1),
    }
    line = (
        f"{connected} subs on 2 nodes x {s.cluster_rate:g} ev/s: {delivery.line()}  "
        f"redis cpu {redis_usage.cpu_pct:.0f}%"
    )
    return Result(ctx.server.name, "cluster-fanout", metrics, line, DELIVERY_RATIOS)
