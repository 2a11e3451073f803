"""HTTP API: signed POST /events requests/s as fast as the server answers on several keep-alive
connections, to a channel with no subscribers and to one with some.

Every figure comes with the generator's own CPU and its connection churn (TCP connections opened
per request and per second): a server that answers with `Connection: close` (soketi) makes the
generator reconnect for every request, and a figure taken while the generator's core is full
would measure the generator. The C publisher (bench/c/publisher) is used when it is built."""

from __future__ import annotations

from bench.cpublisher import CPublishRun, publish_as_fast
from bench.publisher import Publisher, PublishReport, events_builder
from bench.results import Metric, Result, percentiles
from bench.scenarios.base import Context, core_share, measure_delivery, share_line, subscribe_all, warm_up

# A generator above this share of its core may be what limits the figure: the line says so.
GENERATOR_BOUND_PCT = 90.0


async def http_api(ctx: Context, subscribers: int) -> Result:
    s = ctx.sizes
    target = ctx.server.targets[0]
    channel = f"bench-http-{subscribers}"
    connected: dict[str, Metric] = {"subscribers": 0}
    # Warm-up always goes through the Python publisher: a handful of requests at a slow rate.
    publisher = Publisher(target, connections=min(s.http_connections, 16))
    c_run: CPublishRun | None = None

    async def publish_c() -> PublishReport:
        nonlocal c_run
        c_run = await publish_as_fast(target, channel, s.http_connections, s.http_requests, s.http_seconds)
        return PublishReport(c_run.sent, c_run.ok, c_run.failed, c_run.elapsed, 0.0, c_run.last_error)

    try:
        if subscribers:
            connected = await subscribe_all(ctx, channel, subscribers)
        build = events_builder(target, lambda _: (channel,))
        if subscribers:
            await publisher.open()
            await warm_up(ctx, publisher, build, int(connected["subscribers"]))
            publisher.close()
        if ctx.publisher == "c":
            delivery = await measure_delivery(ctx, publish_c, copies=int(connected["subscribers"]))
        else:
            publisher = Publisher(target, connections=s.http_connections)
            await publisher.open()
            publisher.pool.connects = 0  # count only what the measured requests cost
            delivery = await measure_delivery(
                ctx,
                lambda: publisher.as_fast(build, s.http_requests, s.http_seconds),
                copies=int(connected["subscribers"]),
            )
    finally:
        publisher.close()
        await ctx.pool.close_connections()
    report = delivery.publish
    rps = report.sent / report.elapsed if report.elapsed else 0.0
    # The window the generator's CPU was measured over (publishing, then waiting for deliveries).
    window = delivery.generator.seconds
    if c_run is not None:
        request_latency = {"p50_ms": c_run.p50_ms, "p99_ms": c_run.p99_ms, "max_ms": c_run.max_ms}
        connects = c_run.connects
        publisher_cpu = 100.0 * c_run.cpu_seconds / c_run.elapsed if c_run.elapsed else 0.0
        # The C publisher has exited by now, so /proc no longer shows it: add its own rusage.
        generator_cpu = delivery.generator.cpu_pct + 100.0 * c_run.cpu_seconds / max(window, 1e-9)
    else:
        request_latency = percentiles(publisher.request_latency_us)
        connects = publisher.pool.connects
        publisher_cpu = float("nan")  # in the parent process, inside generator_cpu
        generator_cpu = delivery.generator.cpu_pct
    per_request = connects / report.sent if report.sent else 0.0
    per_second = connects / report.elapsed if report.elapsed else 0.0
    bound = generator_cpu >= GENERATOR_BOUND_PCT
    # Steadier than req/s on a machine shared with other jobs: what one second of server CPU answers.
    server_cpu = delivery.server.cpu_pct
    per_cpu_second = rps / (server_cpu / 100) if server_cpu else 0.0
    metrics: dict[str, Metric] = {
        **connected,
        "publisher": ctx.publisher,
        "connections": s.http_connections,
        "requests": report.sent,
        "requests_per_s": round(rps, 1),
        "requests_per_server_cpu_s": round(per_cpu_second, 1),
        "request_p50_ms": round(request_latency["p50_ms"], 3),
        "request_p99_ms": round(request_latency["p99_ms"], 3),
        "generator_connects": connects,
        "generator_connects_per_request": round(per_request, 4),
        "generator_connects_per_s": round(per_second, 1),
        **{k: v for k, v in delivery.metrics().items() if not k.startswith(("p50", "p99", "max_ms"))},
        # Overrides delivery's figure: parent + receivers (from /proc) + the C publisher (its rusage).
        "generator_cpu_pct": round(generator_cpu, 1),
        "generator_bound": bound,
        **core_share(delivery.server),
        **{f"delivery_{k}": round(v, 3) for k, v in delivery.latency.items()},
    }
    if c_run is not None:
        metrics["publisher_cpu_pct"] = round(publisher_cpu, 1)
    line = (
        f"{rps:,.0f} req/s ({report.sent} requests, {report.failed} failed, {s.http_connections} conns, "
        f"{ctx.publisher} publisher)  "
        f"req p50 {request_latency['p50_ms']:.1f} ms p99 {request_latency['p99_ms']:.1f} ms  "
        f"churn {per_request:.2f} conn/req ({per_second:,.0f} conn/s)  "
    )
    if subscribers:
        line += (
            f"to {connected['subscribers']} subs: delivered {delivery.rate:,.0f} msg/s "
            f"loss {100 * delivery.loss:.2f}%  "
        )
    line += (
        f"server cpu {server_cpu:.0f}% ({per_cpu_second:,.0f} req per cpu-s; on its core "
        f"{share_line(delivery.server)})  gen cpu {generator_cpu:.0f}%"
    )
    if c_run is not None:
        line += f" (publisher {publisher_cpu:.0f}%)"
    if bound:
        line += "  GENERATOR-BOUND: a lower bound for the server"
    name = f"http-api-{subscribers}-subs"
    return Result(
        ctx.server.name,
        name,
        metrics,
        line,
        {
            "requests_per_s": True,
            "requests_per_server_cpu_s": True,
            "request_p99_ms": False,
            "generator_cpu_pct": False,
        },
    )


async def http_api_no_subscribers(ctx: Context) -> Result:
    return await http_api(ctx, 0)


async def http_api_with_subscribers(ctx: Context) -> Result:
    return await http_api(ctx, ctx.sizes.http_subscribers)
