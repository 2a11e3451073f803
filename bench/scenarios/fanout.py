"""fan-out: N subscribers on one public channel, ~100-byte events published at a fixed rate through
POST /events; delivered messages/s, loss, publish-to-receive latency, server CPU and RSS."""

from bench.publisher import Publisher, events_builder
from bench.results import Result
from bench.scenarios.base import (
    DELIVERY_RATIOS,
    Context,
    measure_delivery,
    receivers_for,
    server_capacity,
    subscribe_all,
    warm_up,
)

CHANNEL = "bench-fanout"


async def fanout(ctx: Context, name: str, subscribers: int, rate: float, seconds: float) -> Result:
    target = ctx.server.targets[0]
    connected = await subscribe_all(ctx, CHANNEL, subscribers)
    publisher = Publisher(target, connections=16)
    try:
        await publisher.open()
        build = events_builder(target, lambda _: (CHANNEL,))
        await warm_up(ctx, publisher, build, int(connected["subscribers"]))
        delivery = await measure_delivery(
            ctx,
            lambda: publisher.at_rate(build, rate, int(rate * seconds), seconds * 2 + 5),
            copies=int(connected["subscribers"]),
        )
    finally:
        publisher.close()
        await ctx.pool.close_connections()
    metrics = {**connected, "events_per_s": rate, **delivery.metrics()}
    short = f" ({connected['connect_failed']} failed to connect)" if connected["connect_failed"] else ""
    line = f"{connected['subscribers']} subs{short} x {rate:g} ev/s: {delivery.line()}"
    return Result(ctx.server.name, name, metrics, line, DELIVERY_RATIOS)


async def fanout_small(ctx: Context) -> Result:
    s = ctx.sizes
    return await fanout(
        ctx,
        "fanout-1k" if s.fanout_small == 1000 else f"fanout-{s.fanout_small}",
        s.fanout_small,
        s.fanout_small_rate,
        s.seconds,
    )


async def fanout_large(ctx: Context) -> Result:
    s = ctx.sizes
    return await fanout(
        ctx,
        "fanout-5k" if s.fanout_large == 5000 else f"fanout-{s.fanout_large}",
        s.fanout_large,
        s.fanout_large_rate,
        s.seconds,
    )


async def fanout_huge(ctx: Context) -> Result:
    """20,000 subscribers, or as many as one server process may hold sockets (RLIMIT_NOFILE);
    the line and the metrics say when the count was capped."""
    s = ctx.sizes
    asked = s.fanout_huge
    count = min(asked, server_capacity(ctx))
    name = "fanout-20k" if asked == 20_000 else f"fanout-{asked}"
    async with receivers_for(ctx, count) as wide:
        result = await fanout(wide, name, count, s.fanout_huge_rate, s.seconds)
    if count < asked:
        result.metrics["capped_from"] = asked
        result.line += f"  (capped from {asked:,}: RLIMIT_NOFILE hard limit)"
    return result
