"""scale: idle subscribers on one public channel, added step by step (10k, 25k, 50k) to one server
(one process, or relay --workers N); at each step the server's RSS per connection, the connect
rate of that step's new connections, and a slow fan-out (1 event/s) to all of them with its
p50/p99. Where a figure stops growing linearly with the count is the knee.

A process may hold no more sockets than its hard RLIMIT_NOFILE, which the bench cannot raise
without CAP_SYS_RESOURCE: a step beyond what the server's processes may hold is capped to that,
and a step that would add nothing is skipped; the line says which."""

import asyncio
import time

from bench.procstat import descendants, rss_bytes
from bench.publisher import Publisher, events_builder
from bench.results import Metric, Result
from bench.scenarios.base import (
    Context,
    core_share,
    measure_delivery,
    receivers_for,
    server_capacity,
    share_line,
    subscribe_all,
    warm_up,
)

CHANNEL = "bench-scale"
SETTLE_SECONDS = 3.0


def _label(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


def _tree(pids: list[int]) -> list[int]:
    return [p for root in pids for p in descendants(root)]


async def scale(ctx: Context) -> Result:
    s = ctx.sizes
    capacity = server_capacity(ctx)
    steps = sorted(s.scale_steps)
    top = min(steps[-1], capacity)
    target = ctx.server.targets[0]
    baseline = rss_bytes(_tree(ctx.server.pids))
    metrics: dict[str, Metric] = {"server_capacity": capacity, "rss_baseline_mb": round(baseline / 2**20, 1)}
    ratios: dict[str, bool] = {}
    details: list[dict[str, Metric]] = []
    parts: list[str] = []
    held = 0
    async with receivers_for(ctx, top) as wide:
        publisher = Publisher(target, connections=4)
        try:
            await publisher.open()
            build = events_builder(target, lambda _: (CHANNEL,))
            for asked in steps:
                label = _label(asked)
                count = min(asked, capacity)
                if count <= held:
                    parts.append(f"{label}: skipped (the server may hold {capacity:,})")
                    details.append({"step": label, "asked": asked, "skipped": True})
                    continue
                server, generator = wide.server_sampler(), wide.generator_sampler()
                server.start()
                generator.start()
                started = time.monotonic()
                connected = await subscribe_all(wide, CHANNEL, count - held, first_index=held)
                connect_seconds = time.monotonic() - started
                connect_server, connect_generator = await server.stop(), await generator.stop()
                added = int(connected["subscribers"])
                held += added
                await asyncio.sleep(SETTLE_SECONDS)
                rss = rss_bytes(_tree(ctx.server.pids))
                await warm_up(wide, publisher, build, held)
                delivery = await measure_delivery(
                    wide,
                    lambda: publisher.at_rate(
                        build, s.scale_rate, int(s.scale_rate * s.scale_seconds), s.scale_seconds * 2 + 5
                    ),
                    copies=held,
                )
                step: dict[str, Metric] = {
                    "step": label,
                    "asked": asked,
                    "conns": held,
                    "connect_failed": connected["connect_failed"],
                    "connects_per_s": round(added / connect_seconds, 1),
                    "rss_mb": round(rss / 2**20, 1),
                    "rss_per_conn_kb": round((rss - baseline) / held / 1024, 2),
                    "server_cpu_pct_connecting": round(connect_server.cpu_pct, 1),
                    **{f"{k}_connecting": v for k, v in core_share(connect_server).items()},
                    "generator_cpu_pct_connecting": round(connect_generator.cpu_pct, 1),
                    "p50_ms": round(delivery.latency["p50_ms"], 3),
                    "p99_ms": round(delivery.latency["p99_ms"], 3),
                    "max_ms": round(delivery.latency["max_ms"], 3),
                    "loss_pct": round(100 * delivery.loss, 3),
                    "events": delivery.publish.ok,
                    "server_cpu_pct_fanout": round(delivery.server.cpu_pct, 1),
                    **{f"{k}_fanout": v for k, v in core_share(delivery.server).items()},
                    "generator_cpu_pct_fanout": round(delivery.generator.cpu_pct, 1),
                }
                details.append(step)
                for key in ("conns", "connects_per_s", "rss_per_conn_kb", "p50_ms", "p99_ms", "loss_pct"):
                    metrics[f"{label}_{key}"] = step[key]
                metrics[f"{label}_generator_cpu_pct"] = max(
                    float(step["generator_cpu_pct_connecting"]), float(step["generator_cpu_pct_fanout"])
                )
                ratios.update(
                    {f"{label}_connects_per_s": True, f"{label}_rss_per_conn_kb": False, f"{label}_p99_ms": False}
                )
                capped = f" (capped to {held:,})" if held < asked else ""
                parts.append(
                    f"{label}{capped}: {step['connects_per_s']:,.0f} conn/s, {step['rss_per_conn_kb']:.1f} KB/conn, "
                    f"1 ev/s p50 {step['p50_ms']:.0f} / p99 {step['p99_ms']:.0f} ms, loss {step['loss_pct']:g}%, "
                    f"server cpu {connect_server.cpu_pct:.0f}% ({share_line(connect_server)}) / "
                    f"{delivery.server.cpu_pct:.0f}%, "
                    f"gen cpu {step['generator_cpu_pct_connecting']:.0f}/{step['generator_cpu_pct_fanout']:.0f}%"
                )
        finally:
            publisher.close()
            await wide.pool.close_connections()
    metrics["held"] = held
    return Result(ctx.server.name, f"scale-{_label(steps[-1])}", metrics, "; ".join(parts), ratios, details)
