"""fan-out max: the highest delivery rate a server sustains to N subscribers of one channel with p99
under a bound and nothing lost. Doubles the publish rate until a step fails, then bisects, in a
bounded number of fixed-length steps."""

from collections.abc import Awaitable

from bench.publisher import Publisher, PublishReport, events_builder
from bench.results import Metric, Result
from bench.scenarios.base import Context, Delivery, measure_delivery, subscribe_all

CHANNEL = "bench-fanout-max"
# A step whose generator used more than this share of a core may have been limited by the generator.
GENERATOR_BUSY_PCT = 90.0


# A step whose publisher fell this far behind its schedule did not run at the rate it names.
MAX_PUBLISH_LAG_S = 0.5


def failures(d: Delivery, p99_bound_ms: float) -> list[str]:
    """Why a step does not count as sustained; empty when it passed."""
    why = []
    if d.loss > 0:
        why.append(f"loss {100 * d.loss:.2f}%")
    if d.publish.failed:
        why.append(f"{d.publish.failed} publish errors")
    if d.latency["p99_ms"] >= p99_bound_ms:
        why.append(f"p99 {d.latency['p99_ms']:.0f} ms")
    if d.publish.max_lag >= MAX_PUBLISH_LAG_S:
        why.append(f"publishing fell {d.publish.max_lag:.1f} s behind")
    return why


async def fanout_max(ctx: Context) -> Result:
    s = ctx.sizes
    target = ctx.server.targets[0]
    connected = await subscribe_all(ctx, CHANNEL, s.max_subscribers)
    subscribers = int(connected["subscribers"])
    publisher = Publisher(target, connections=32)
    build = events_builder(target, lambda _: (CHANNEL,))
    steps: list[dict[str, Metric]] = []
    best: Delivery | None = None
    best_rate, failed_rate = 0.0, 0.0
    rate = s.max_start_rate
    generator_bound = False
    try:
        await publisher.open()
        for _ in range(s.max_steps):
            step_rate = rate

            def publish(r: float = step_rate) -> Awaitable[PublishReport]:
                return publisher.at_rate(build, r, max(1, int(r * s.max_step_seconds)), s.max_step_seconds * 2 + 5)

            d = await measure_delivery(ctx, publish, copies=subscribers, drain_timeout=5.0, stall=1.0)
            why = failures(d, s.max_p99_ms)
            ok = not why
            steps.append({"events_per_s": rate, "passed": ok, "failed_because": ", ".join(why), **d.metrics()})
            ctx.log(f"  step {rate:g} ev/s -> {'pass' if ok else 'fail (' + ', '.join(why) + ')'}: {d.line()}")
            if ok:
                best_rate, best = rate, d
            else:
                failed_rate = rate
                generator_bound = generator_bound or d.generator.cpu_pct > GENERATOR_BUSY_PCT
            if failed_rate and best_rate and failed_rate / best_rate < 1.15:
                break
            rate = rate * 2 if not failed_rate else (best_rate + failed_rate) / 2 if best_rate else rate / 2
    finally:
        publisher.close()
        await ctx.pool.close_connections()
    metrics: dict[str, Metric] = {
        **connected,
        "max_events_per_s": best_rate,
        "max_delivered_per_s": best_rate * subscribers,
        "first_failed_events_per_s": failed_rate,
        "generator_bound": generator_bound,
        "p99_bound_ms": s.max_p99_ms,
        "steps": len(steps),
    }
    if best is not None:
        metrics.update({f"at_max_{k}": v for k, v in best.metrics().items()})
    note = "  (generator saturated on a failing step: treat as lower bound)" if generator_bound else ""
    if best is None:
        line = f"no rate passed (lowest tried {rate:g} ev/s x {subscribers} subs){note}"
    else:
        line = (
            f"{best_rate * subscribers:,.0f} msg/s ({best_rate:g} ev/s x {subscribers} subs; "
            f"{failed_rate:g} ev/s failed)  p99 {best.latency['p99_ms']:.1f} ms  "
            f"server cpu {best.server.cpu_pct:.0f}%  gen cpu {best.generator.cpu_pct:.0f}%{note}"
        )
    return Result(ctx.server.name, "fanout-max", metrics, line, {"max_delivered_per_s": True}, details=steps)
