"""How big each scenario is: the full run and the `--quick` run (small counts, under ~2 minutes)."""

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Sizes:
    # fan-out: subscriber counts, and events/s for each so both deliver the same messages/s
    fanout_small: int = 1000
    fanout_large: int = 5000
    fanout_small_rate: float = 50.0
    fanout_large_rate: float = 10.0
    # 20,000 subscribers at 2.5 ev/s: the same 50,000 messages/s as the smaller fan-outs
    fanout_huge: int = 20_000
    fanout_huge_rate: float = 2.5
    seconds: float = 10.0
    # fan-out max: subscribers, first rate tried, bounded steps, seconds per step
    max_subscribers: int = 1000
    max_start_rate: float = 50.0
    max_steps: int = 10
    max_step_seconds: float = 5.0
    max_p99_ms: float = 100.0
    # many channels: connections (one channel each), events/s spread over them
    channels: int = 2000
    channels_rate: float = 1000.0
    # idle memory
    idle_connections: int = 10_000
    idle_channels: int = 100
    connect_concurrency: int = 200
    # connect rate: connections each subscribing to a channel of its own, handshakes in flight
    connect_rate_connections: int = 10_000
    connect_rate_in_flight: int = 100
    # scale: idle subscribers on one channel, added step by step up to each count; then a fan-out
    # of scale_rate ev/s to all of them for scale_seconds at each step
    scale_steps: tuple[int, ...] = (10_000, 25_000, 50_000)
    scale_rate: float = 1.0
    scale_seconds: float = 5.0
    # HTTP API: requests per variant (bounded by http_seconds too), concurrent keep-alive connections
    # (a window of ~1 s, as 20,000 requests gave at 18k req/s, swung ±50% on a shared machine)
    http_requests: int = 300_000
    http_seconds: float = 8.0
    http_connections: int = 50
    http_subscribers: int = 100
    # presence churn: churning connections, join/leave cycles each
    # Every join/leave is broadcast to every current member, churners included: 50 keeps the
    # generator's share of that work below the server's.
    churners: int = 50
    churn_cycles: int = 400
    churn_timeout: float = 60.0
    # cross-node fan-out (Redis)
    cluster_subscribers: int = 1000
    cluster_rate: float = 50.0


FULL = Sizes()
QUICK = replace(
    FULL,
    fanout_small=200,
    fanout_large=500,
    fanout_small_rate=20.0,
    fanout_large_rate=10.0,
    fanout_huge=1000,
    fanout_huge_rate=20.0,
    seconds=2.0,
    max_subscribers=200,
    max_start_rate=50.0,
    max_steps=3,
    max_step_seconds=1.5,
    channels=200,
    channels_rate=200.0,
    idle_connections=1000,
    connect_rate_connections=1000,
    scale_steps=(300, 600, 1000),
    scale_seconds=2.0,
    http_requests=2000,
    http_seconds=3.0,
    http_subscribers=20,
    http_connections=16,
    churners=20,
    churn_cycles=20,
    churn_timeout=20.0,
    cluster_subscribers=200,
    cluster_rate=20.0,
)
