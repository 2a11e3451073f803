"""The node's gauges at /metrics, read at scrape time: open connections, subscriptions and occupied channels
by kind, readiness and draining."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.metrics import Metrics, Reading
from relay.protocol.channels import channel_type
from relay.registry import ChannelRegistry

if TYPE_CHECKING:  # the node calls this module; only its type is needed here
    from relay.node import Node


def register_node_gauges(metrics: Metrics, node: Node) -> None:
    """What /metrics reads from the node at scrape time: open connections, subscriptions, readiness."""
    metrics.add_gauge("relay_connections", "WebSocket connections open now", ("app_id",), lambda: _connections(node))
    metrics.add_gauge(
        "relay_subscriptions",
        "Subscriptions on this node, by channel kind",
        ("app_id", "kind"),
        lambda: _by_kind(node.registry, subscribers=True),
    )
    metrics.add_gauge(
        "relay_channels",
        "Occupied channels on this node, by channel kind",
        ("app_id", "kind"),
        lambda: _by_kind(node.registry, subscribers=False),
    )
    metrics.add_gauge("relay_ready", "1 while /ready answers 200", (), lambda: [((), float(node.accepting))], "min")
    metrics.add_gauge(
        "relay_draining",
        "1 while connections are closed before a stop",
        (),
        lambda: [((), float(node.draining))],
        "max",
    )


def _connections(node: Node) -> Reading:
    counts = {app.id: 0 for app in node.apps}
    for connection in node.connections.values():
        counts[connection.app.id] = counts.get(connection.app.id, 0) + 1
    return [((app_id,), count) for app_id, count in sorted(counts.items())]


def _by_kind(registry: ChannelRegistry[Any], subscribers: bool) -> Reading:
    counts: dict[tuple[str, str], int] = {}
    for app_id, channels in registry.apps():
        for channel, count in channels:
            key = (app_id, channel_type(channel).kind.value)
            counts[key] = counts.get(key, 0) + (count if subscribers else 1)
    return [(key, value) for key, value in sorted(counts.items())]
