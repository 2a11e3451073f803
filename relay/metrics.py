"""Counters and gauges, rendered in Prometheus' text format at /metrics. Passed in, never global."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Metrics:
    connections_opened: int = 0
    connections_closed: int = 0
    connections_refused: int = 0
    messages_received: int = 0
    frames_delivered: int = 0
    events_published: int = 0
    client_events: int = 0
    slow_consumers_closed: int = 0
    http_requests: int = 0
    http_errors: int = 0
    # Gauges read at render time (open connections, webhook queue, Redis state), by name.
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)

    def render(self) -> str:
        lines: list[str] = []
        for name in (
            "connections_opened",
            "connections_closed",
            "connections_refused",
            "messages_received",
            "frames_delivered",
            "events_published",
            "client_events",
            "slow_consumers_closed",
            "http_requests",
            "http_errors",
        ):
            metric = f"relay_{name}_total"
            lines.append(f"# TYPE {metric} counter")
            lines.append(f"{metric} {getattr(self, name)}")
        for name, read in sorted(self.gauges.items()):
            metric = f"relay_{name}"
            lines.append(f"# TYPE {metric} gauge")
            lines.append(f"{metric} {read()}")
        return "\n".join(lines) + "\n"
