"""relay.metrics and relay.metrics_share, read back with prometheus-client's own parsers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from relay.metrics import Metrics
from relay.metrics_share import WorkerShare, retire_worker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str, openmetrics: bool = False) -> Samples:
    parse = parse_openmetrics if openmetrics else parse_text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parse(text)
        for sample in family.samples
    }


def busy_metrics() -> Metrics:
    metrics = Metrics()
    app = metrics.app("1001")
    app.connections_opened += 3
    app.closed(4200)
    app.closed(4200)
    app.closed(1006)
    app.refused("over_quota")
    app.api_events += 5
    metrics.http_request("1001", "events", 200, 0.0007)
    metrics.http_request("1001", "events", 401, 0.02)
    metrics.publish_to_write.observe(0.003)
    metrics.add_gauge("relay_connections", "Open connections", ("app_id",), lambda: [(("1001",), 1.0)])
    metrics.add_gauge("relay_ready", "1 when ready", (), lambda: [((), 1.0)], merge="min")
    metrics.add_counter("relay_webhooks_sent", "Webhooks delivered", (), lambda: [((), 4.0)])
    return metrics


def test_text_output_parses_and_says_what_happened() -> None:
    body, content_type = busy_metrics().render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "# HELP relay_connections_opened_total WebSocket connections accepted" in text
    found = samples(text)
    assert found["relay_connections_opened_total", (("app_id", "1001"),)] == 3
    assert found["relay_connections_closed_total", (("app_id", "1001"), ("code", "4200"))] == 2
    assert found["relay_connections_closed_total", (("app_id", "1001"), ("code", "1006"))] == 1
    assert found["relay_connections_refused_total", (("app_id", "1001"), ("reason", "over_quota"))] == 1
    assert found["relay_http_requests_total", (("app_id", "1001"), ("endpoint", "events"), ("status", "401"))] == 1
    assert found["relay_http_request_duration_seconds_count", (("endpoint", "events"),)] == 2
    assert found["relay_http_request_duration_seconds_bucket", (("endpoint", "events"), ("le", "0.001"))] == 1
    assert found["relay_publish_to_write_seconds_bucket", (("le", "0.005"),)] == 1
    assert found["relay_webhooks_sent_total", ()] == 4
    assert found["relay_connections", (("app_id", "1001"),)] == 1


def test_openmetrics_when_the_scraper_asks() -> None:
    body, content_type = busy_metrics().render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    found = samples(body.decode(), openmetrics=True)
    assert found["relay_api_events_total", (("app_id", "1001"),)] == 5


def test_workers_add_up_and_a_dead_workers_counters_stay(tmp_path: Path) -> None:
    first, second = busy_metrics(), busy_metrics()
    second.app("1001").connections_opened += 10
    WorkerShare(tmp_path, second, pid=2).write()
    first.share = WorkerShare(tmp_path, first, pid=1)

    found = samples(first.render()[0].decode())
    assert found["relay_connections_opened_total", (("app_id", "1001"),)] == 3 + 13
    assert found["relay_connections", (("app_id", "1001"),)] == 2  # gauges add up by default
    assert found["relay_ready", ()] == 1  # min: ready only when every worker is
    assert found["relay_http_request_duration_seconds_count", (("endpoint", "events"),)] == 4

    retire_worker(tmp_path, 2)
    assert not (tmp_path / "2.json").exists()
    found = samples(first.render()[0].decode())
    assert found["relay_connections_opened_total", (("app_id", "1001"),)] == 3 + 13  # kept
    assert found["relay_connections", (("app_id", "1001"),)] == 1  # the dead worker's gauge is gone
