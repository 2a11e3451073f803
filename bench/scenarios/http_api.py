"""HTTP API: signed POST /events requests/s as fast as the server answers on several keep-alive
connections, to a channel with no subscribers and to one with some."""

from bench.publisher import Publisher, events_builder
from bench.results import Metric, Result, percentiles
from bench.scenarios.base import Context, measure_delivery, subscribe_all, warm_up


async def http_api(ctx: Context, subscribers: int) -> Result:
    s = ctx.sizes
    target = ctx.server.targets[0]
    channel = f"bench-http-{subscribers}"
    connected: dict[str, Metric] = {"subscribers": 0}
    publisher = Publisher(target, connections=s.http_connections)
    try:
        if subscribers:
            connected = await subscribe_all(ctx, channel, subscribers)
        await publisher.open()
        build = events_builder(target, lambda _: (channel,))
        if subscribers:
            await warm_up(ctx, publisher, build, int(connected["subscribers"]))
        delivery = await measure_delivery(
            ctx, lambda: publisher.as_fast(build, s.http_requests, s.http_seconds), copies=int(connected["subscribers"])
        )
    finally:
        publisher.close()
        await ctx.pool.close_connections()
    report = delivery.publish
    rps = report.sent / report.elapsed if report.elapsed else 0.0
    request_latency = percentiles(publisher.request_latency_us)
    metrics: dict[str, Metric] = {
        **connected,
        "connections": s.http_connections,
        "requests": report.sent,
        "requests_per_s": round(rps, 1),
        "request_p50_ms": round(request_latency["p50_ms"], 3),
        "request_p99_ms": round(request_latency["p99_ms"], 3),
        **{k: v for k, v in delivery.metrics().items() if not k.startswith(("p50", "p99", "max_ms"))},
        **{f"delivery_{k}": round(v, 3) for k, v in delivery.latency.items()},
    }
    line = (
        f"{rps:,.0f} req/s ({report.sent} requests, {report.failed} failed, {s.http_connections} conns)  "
        f"req p50 {request_latency['p50_ms']:.1f} ms p99 {request_latency['p99_ms']:.1f} ms  "
    )
    if subscribers:
        line += (
            f"to {connected['subscribers']} subs: delivered {delivery.rate:,.0f} msg/s "
            f"loss {100 * delivery.loss:.2f}%  "
        )
    line += f"server cpu {delivery.server.cpu_pct:.0f}%  gen cpu {delivery.generator.cpu_pct:.0f}%"
    name = f"http-api-{subscribers}-subs"
    return Result(ctx.server.name, name, metrics, line, {"requests_per_s": True, "request_p99_ms": False})


async def http_api_no_subscribers(ctx: Context) -> Result:
    return await http_api(ctx, 0)


async def http_api_with_subscribers(ctx: Context) -> Result:
    return await http_api(ctx, ctx.sizes.http_subscribers)
