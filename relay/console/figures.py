"""Per-app live figures of this node, sampled once a second from relay.metrics while a console watches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from relay.metrics import Metrics

# Counters of AppTraffic shown as per-second rates.
RATES: Final = ("messages_in", "messages_out", "api_events", "client_events")
# Node-wide gauges shown with every app (the webhook queue is shared by the node's apps).
NODE_GAUGES: Final = {"webhooks_queued": "relay_webhooks_queued", "webhooks_backlog": "relay_webhooks_backlog"}


@dataclass(slots=True)
class _Sample:
    at: float
    counts: dict[str, dict[str, int]]


class FigureSampler:
    """Turns the node's counters into rates: each `sample(now)` compares with the previous one."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._last: _Sample | None = None

    def _counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for app_id, traffic in self._metrics.apps.items():
            counts[app_id] = {name: getattr(traffic, name) for name in RATES}
            # Opened minus closed: the node counts both, so no walk over its connections.
            counts[app_id]["connections"] = traffic.connections_opened - sum(traffic.closed_by_code.values())
        return counts

    def sample(self, now: float) -> dict[str, Any]:
        """{"apps": {app_id: {connections, <rate>_per_s...}}, "webhooks_queued": n, "webhooks_backlog": n}."""
        counts = self._counts()
        last = self._last
        self._last = _Sample(now, counts)
        elapsed = now - last.at if last is not None else 0.0
        apps: dict[str, dict[str, float]] = {}
        for app_id, current in counts.items():
            figures: dict[str, float] = {"connections": current["connections"]}
            before = last.counts.get(app_id, {}) if last is not None else {}
            for name in RATES:
                delta = current[name] - before.get(name, current[name])
                figures[f"{name}_per_s"] = round(delta / elapsed, 1) if elapsed > 0 else 0.0
            apps[app_id] = figures
        result: dict[str, Any] = {"apps": apps}
        for key, gauge in NODE_GAUGES.items():
            result[key] = sum(value for _, value in self._metrics.read_gauge(gauge))
        return result


def add_figures(samples: list[dict[str, Any]], app_id: str) -> dict[str, float]:
    """One app's figures summed over the nodes' samples (the whole cluster)."""
    total: dict[str, float] = {"connections": 0, **{f"{name}_per_s": 0.0 for name in RATES}}
    total.update({key: 0 for key in NODE_GAUGES})
    for sample in samples:
        figures = sample.get("apps", {}).get(app_id, {})
        for name in total:
            value = figures.get(name) if name not in NODE_GAUGES else sample.get(name)
            if isinstance(value, int | float):
                total[name] += value
    total["nodes"] = len(samples)
    return total
