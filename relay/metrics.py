"""Prometheus metrics: plain counters on the hot path, exported through prometheus-client at /metrics.

The socket path only adds to plain ints (per app, per event, never per delivered frame): no lock, no
label lookup. prometheus-client turns them into its text or OpenMetrics output when scraped, through a
collector that reads them then. Gauges (connections open now, channels, queues, Redis state) are read
from their owners at scrape time through registered readers. Labels are bounded: `app_id` (configured
apps only), channel kind, close code, refusal reason, endpoint and status; never a channel, socket or
user. Under `--workers N` every worker shares its samples through `relay.metrics_share`, so one scrape
shows the whole process. Passed in, never a global.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from relay.alerts import Alerts
from relay.console.tap import ConsoleTap

# Seconds. HTTP API requests and publish-to-write are mostly sub-millisecond on loopback; the upper
# buckets catch a stalled event loop or a slow Redis.
LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WEBHOOK_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[str, ...]
Reading = Iterable[tuple[Labels, float]]
Merge = Literal["sum", "min", "max"]


class Histogram:
    """Fixed buckets counted in plain ints; `observe` is a bisect and three adds."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(_bound_text, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


def _bound_text(bound: float) -> str:
    return repr(float(bound))


@dataclass(slots=True)
class AppTraffic:
    """One app's counters. The transports, node and HTTP API add to these directly."""

    connections_opened: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    api_events: int = 0
    client_events: int = 0
    slow_consumer_disconnects: int = 0
    slow_consumer_bytes_dropped: int = 0
    closed_by_code: dict[int, int] = field(default_factory=dict)
    refused_by_reason: dict[str, int] = field(default_factory=dict)
    # (endpoint, status) → requests
    http_requests: dict[tuple[str, int], int] = field(default_factory=dict)

    def closed(self, code: int) -> None:
        self.closed_by_code[code] = self.closed_by_code.get(code, 0) + 1

    def refused(self, reason: str) -> None:
        self.refused_by_reason[reason] = self.refused_by_reason.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class _Reader:
    name: str
    documentation: str
    labels: Labels
    read: Callable[[], Reading]
    merge: Merge


# Connections refused before an app is known (unknown key, bad path) are counted under this app_id.
NO_APP: Final = ""


class Metrics:
    """Every figure of one process. `render` answers a scrape."""

    def __init__(self) -> None:
        self.apps: dict[str, AppTraffic] = {}
        self.http_latency: dict[str, Histogram] = {}
        self.publish_to_write = Histogram(LATENCY_BUCKETS)
        self.webhook_delivery = Histogram(WEBHOOK_BUCKETS)
        self._counters: list[_Reader] = []
        self._gauges: list[_Reader] = []
        # Under --workers: a function that merges this worker's families with the others'.
        self.share: Callable[[list[Metric]], list[Metric]] | None = None
        # Alerts ride along: every place that counts an incident can also tell a human about it.
        self.alerts = Alerts((), 0.0)
        # And the live console: every place that counts traffic can show it there while one is open.
        self.tap = ConsoleTap()
        self.add_counter(
            "relay_alerts_posted", "Operational alerts posted", (), lambda: [((), self.alerts.counts.posted)]
        )
        self.add_counter(
            "relay_alerts_failed", "Alert posts that failed", (), lambda: [((), self.alerts.counts.failed)]
        )
        self.add_total(
            "relay_alerts_suppressed",
            "Alerts held back by the per-kind interval",
            lambda: self.alerts.counts.suppressed,
        )

    def app(self, app_id: str) -> AppTraffic:
        traffic = self.apps.get(app_id)
        if traffic is None:
            traffic = self.apps[app_id] = AppTraffic()
        return traffic

    def http_request(self, app_id: str, endpoint: str, status: int, seconds: float) -> None:
        requests = self.app(app_id).http_requests
        requests[endpoint, status] = requests.get((endpoint, status), 0) + 1
        histogram = self.http_latency.get(endpoint)
        if histogram is None:
            histogram = self.http_latency[endpoint] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def add_gauge(
        self, name: str, documentation: str, labels: Labels, read: Callable[[], Reading], merge: Merge = "sum"
    ) -> None:
        """`read()` gives (label values, value) pairs at scrape time; `merge` combines workers."""
        self._gauges.append(_Reader(name, documentation, labels, read, merge))

    def read_gauge(self, name: str) -> list[tuple[Labels, float]]:
        """A registered gauge's current (label values, value) pairs; empty when no owner registered it."""
        return [reading for gauge in self._gauges if gauge.name == name for reading in gauge.read()]

    def add_counter(self, name: str, documentation: str, labels: Labels, read: Callable[[], Reading]) -> None:
        """A monotonic count kept by its owner (webhooks, Redis); exported as `<name>_total`."""
        self._counters.append(_Reader(name, documentation, labels, read, "sum"))

    def add_total(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """An unlabelled count kept by its owner."""
        self.add_counter(name, documentation, (), lambda: [((), float(read()))])

    # Export ------------------------------------------------------------------------------------

    def families(self) -> list[Metric]:
        return [*self._traffic_families(), *self._histogram_families(), *self._reader_families()]

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape answer and its content type: OpenMetrics when the scraper asks for it."""
        encode, content_type = choose_encoder(accept)
        families = self.families()
        if self.share is not None:
            families = self.share(families)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(families))
        return encode(registry), content_type

    def _traffic_families(self) -> Iterator[Metric]:
        apps = sorted(self.apps.items())
        simple = (
            ("relay_connections_opened", "WebSocket connections accepted", "connections_opened"),
            ("relay_messages_received", "WebSocket messages received from clients", "messages_in"),
            ("relay_bytes_received", "Bytes of WebSocket messages received from clients", "bytes_in"),
            ("relay_messages_sent", "Event frames written to subscribers (counted per event)", "messages_out"),
            ("relay_bytes_sent", "Bytes of event frames written to subscribers", "bytes_out"),
            ("relay_api_events", "Events published through the HTTP API (one per channel)", "api_events"),
            ("relay_client_events", "Client events accepted from connections", "client_events"),
            ("relay_slow_consumer_disconnects", "Connections closed for not reading", "slow_consumer_disconnects"),
            ("relay_slow_consumer_bytes_dropped", "Bytes dropped for slow consumers", "slow_consumer_bytes_dropped"),
        )
        for name, documentation, attribute in simple:
            family = CounterMetricFamily(name, documentation, labels=("app_id",))
            for app_id, traffic in apps:
                family.add_metric((app_id,), getattr(traffic, attribute))
            yield family
        closed = CounterMetricFamily(
            "relay_connections_closed", "Connections closed, by close code", labels=("app_id", "code")
        )
        refused = CounterMetricFamily(
            "relay_connections_refused", "Connections refused, by reason", labels=("app_id", "reason")
        )
        requests = CounterMetricFamily(
            "relay_http_requests", "HTTP API requests, by endpoint and status", labels=("app_id", "endpoint", "status")
        )
        for app_id, traffic in apps:
            for code, count in sorted(traffic.closed_by_code.items()):
                closed.add_metric((app_id, str(code)), count)
            for reason, count in sorted(traffic.refused_by_reason.items()):
                refused.add_metric((app_id, reason), count)
            for (endpoint, status), count in sorted(traffic.http_requests.items()):
                requests.add_metric((app_id, endpoint, str(status)), count)
        yield closed
        yield refused
        yield requests

    def _histogram_families(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "relay_http_request_duration_seconds", "HTTP API request latency, by endpoint", labels=("endpoint",)
        )
        for endpoint, histogram in sorted(self.http_latency.items()):
            latency.add_metric((endpoint,), histogram.cumulative(), histogram.sum)
        yield latency
        for name, documentation, histogram in (
            (
                "relay_publish_to_write_seconds",
                "Time from accepting a publish to writing it to this node's subscribers",
                self.publish_to_write,
            ),
            (
                "relay_webhook_delivery_seconds",
                "Time from queueing a webhook to its accepted delivery",
                self.webhook_delivery,
            ),
        ):
            family = HistogramMetricFamily(name, documentation)
            family.add_metric((), histogram.cumulative(), histogram.sum)
            yield family

    def _reader_families(self) -> Iterator[Metric]:
        for reader in self._counters:
            counter = CounterMetricFamily(reader.name, reader.documentation, labels=reader.labels)
            for labels, value in reader.read():
                counter.add_metric(labels, value)
            yield counter
        for reader in self._gauges:
            gauge = GaugeMetricFamily(reader.name, reader.documentation, labels=reader.labels)
            for labels, value in reader.read():
                gauge.add_metric(labels, value)
            yield gauge

    def merge_modes(self) -> dict[str, Merge]:
        """How each gauge combines across workers (counters and histograms always add)."""
        return {reader.name: reader.merge for reader in self._gauges}


class _Fixed(Collector):
    """Hands prometheus-client's encoders families that were already collected."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
