"""presence churn: connections that join and leave one presence channel over and over (authorised
joins, docs/protocol.md §5.1), while one watcher connection must see every member_added and member_removed.
Reports joins/s, leaves/s and whether the watcher saw them all."""

import asyncio
import time

from bench.results import Metric, Result
from bench.scenarios.base import Context, ScenarioError

CHANNEL = "presence-bench-churn"


async def presence_churn(ctx: Context) -> Result:
    s = ctx.sizes
    target = ctx.server.targets[0]
    pool = ctx.pool
    try:
        watcher = await pool.workers[0].call(
            {
                **target.as_command(),
                "cmd": "connect",
                "count": 1,
                "channel": CHANNEL,
                "user_prefix": "watcher-",
                "watcher": True,
                "timeout": 30.0,
            }
        )
        if watcher["ok"] != 1:
            raise ScenarioError(f"watcher could not join {CHANNEL}: {watcher['errors']} {watcher['last_error']}")
        # Churners connect without a channel; the churn command then drives their joins and leaves.
        churners = await pool.connect(
            {**target.as_command(), "channel": "", "concurrency": s.connect_concurrency}, s.churners, timeout=60.0
        )
        if churners["ok"] == 0:
            raise ScenarioError(f"no churner connected: {churners['errors']}")
        await pool.counters(reset=True)
        server, generator = ctx.server_sampler(), ctx.generator_sampler()
        server.start()
        generator.start()
        started = time.monotonic()
        # Each worker gets its own user id prefix so no two connections ever share a user.
        replies = await pool.each(
            [
                {
                    "cmd": "churn",
                    "channel": CHANNEL,
                    "cycles": s.churn_cycles,
                    "user_prefix": f"churn-w{k}-",
                    "timeout": s.churn_timeout,
                }
                for k in range(pool.size)
            ],
            timeout=s.churn_timeout + 30,
        )
        join_seconds = max(r["elapsed"] for r in replies)
        joins = sum(r["joins"] for r in replies)
        expected = sum(r["churners"] for r in replies) * s.churn_cycles
        # Leaves are confirmed only by the watcher's member_removed; wait for the last one.
        counters = await pool.counters()
        deadline = time.monotonic() + 10.0
        while counters["member_removed"] < joins and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            counters = await pool.counters()
        leave_seconds = time.monotonic() - started
        server_usage, generator_usage = await server.stop(), await generator.stop()
    finally:
        await pool.close_connections()
    added, removed = counters["member_added"], counters["member_removed"]
    saw_all = added == joins == expected and removed == joins
    # Each join and leave is broadcast to whoever is in the channel then: how many that is depends on how
    # long a churner stays out between its leave and its next join (queued in the same write), i.e. on the
    # server's scheduling. A server that runs the leave and the join an iteration or two apart has fewer
    # members to tell, so joins/s alone compares servers doing different amounts of work.
    frames = counters["member_frames"]
    per_change = frames / (joins + removed) if joins + removed else 0.0
    metrics: dict[str, Metric] = {
        "churners": churners["ok"],
        "cycles": s.churn_cycles,
        "expected_joins": expected,
        "joins": joins,
        "joins_per_s": round(joins / join_seconds, 1) if join_seconds else 0.0,
        "leaves_per_s": round(removed / leave_seconds, 1) if leave_seconds else 0.0,
        "watcher_member_added": added,
        "watcher_member_removed": removed,
        "watcher_saw_all": saw_all,
        "member_frames": frames,
        "member_frames_per_change": round(per_change, 1),
        "member_frames_per_s": round(frames / leave_seconds) if leave_seconds else 0,
        "server_cpu_pct": round(server_usage.cpu_pct, 1),
        "server_rss_mb": round(server_usage.rss_peak / 2**20, 1),
        "generator_cpu_pct": round(generator_usage.cpu_pct, 1),
        "client_errors": counters["errors"],
        "last_error": counters["last_error"],
    }
    line = (
        f"{churners['ok']} churners x {s.churn_cycles}: {metrics['joins_per_s']:,} joins/s "
        f"{metrics['leaves_per_s']:,} leaves/s  ({joins}/{expected} joins; watcher saw {added} added, "
        f"{removed} removed: {'all' if saw_all else 'NOT all'})  {per_change:.1f} member frames per change, "
        f"{metrics['member_frames_per_s']:,}/s  server cpu {server_usage.cpu_pct:.0f}%  "
        f"gen cpu {generator_usage.cpu_pct:.0f}%"
    )
    if counters["errors"]:
        line += f"  errors {counters['errors']}: {counters['last_error'][:120]}"
    return Result(
        ctx.server.name,
        "presence-churn",
        metrics,
        line,
        {"joins_per_s": True, "leaves_per_s": True, "member_frames_per_s": True, "server_cpu_pct": False},
    )
