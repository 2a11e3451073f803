"""many channels: N connections each subscribed to its own channel, events spread over the channels
at a fixed rate, once through POST /events (one event per request) and once through
POST /batch_events (BATCH events per request)."""

from bench.publisher import Publisher, batch_builder, events_builder
from bench.results import Result
from bench.scenarios.base import DELIVERY_RATIOS, Context, measure_delivery, subscribe_all

PATTERN = "bench-mc-{i}"
BATCH = 10


async def many_channels(ctx: Context, batch: bool) -> Result:
    s = ctx.sizes
    target = ctx.server.targets[0]
    connected = await subscribe_all(ctx, PATTERN, s.channels)
    n = s.channels
    publisher = Publisher(target, connections=16)
    if batch:
        # Request k carries events for channels 10k .. 10k+9 (mod n): every channel gets the same share.
        build = batch_builder(target, lambda k: [PATTERN.format(i=(k * BATCH + j) % n) for j in range(BATCH)])
        request_rate, copies = s.channels_rate / BATCH, BATCH
    else:
        build = events_builder(target, lambda k: (PATTERN.format(i=k % n),))
        request_rate, copies = s.channels_rate, 1
    try:
        await publisher.open()
        delivery = await measure_delivery(
            ctx,
            lambda: publisher.at_rate(build, request_rate, int(request_rate * s.seconds), s.seconds * 2 + 5),
            copies=copies,
        )
    finally:
        publisher.close()
        await ctx.pool.close_connections()
    name = "many-channels-batch" if batch else "many-channels-events"
    metrics = {**connected, "events_per_s": s.channels_rate, "requests_per_s": request_rate, **delivery.metrics()}
    how = f"batch_events x{BATCH}" if batch else "events"
    line = f"{connected['subscribers']} channels, {s.channels_rate:g} ev/s via {how}: {delivery.line()}"
    return Result(ctx.server.name, name, metrics, line, DELIVERY_RATIOS)


async def many_channels_events(ctx: Context) -> Result:
    return await many_channels(ctx, batch=False)


async def many_channels_batch(ctx: Context) -> Result:
    return await many_channels(ctx, batch=True)
