"""Webhooks (docs/protocol.md §7): signed, batched, retried, held back for leave_delay, never blocking the node.

create_dispatcher() picks the store: Redis when the cluster has one (queue, held leaves and dead letters are
then shared by every node and survive restarts), memory otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.apps import AppDirectory
from relay.config import Config
from relay.metrics import Metrics
from relay.webhooks.counters import WebhookCounters
from relay.webhooks.dispatcher import WebhookDispatcher
from relay.webhooks.model import DeadLetter, Delivery
from relay.webhooks.sender import DELIVERY_ID_HEADER
from relay.webhooks.store import DeliveryStore, MemoryStore

if TYPE_CHECKING:  # only deployments with Redis import redis-py
    from relay.redis.heartbeat import Heartbeat

__all__ = [
    "DELIVERY_ID_HEADER",
    "DeadLetter",
    "Delivery",
    "DeliveryStore",
    "MemoryStore",
    "WebhookCounters",
    "WebhookDispatcher",
    "create_dispatcher",
]


def create_dispatcher(
    config: Config, apps: AppDirectory, metrics: Metrics | None = None, *, heartbeat: Heartbeat | None = None
) -> WebhookDispatcher:
    settings = config.webhook
    # Dead letters are capped like the queue: an operator reads them, they must not grow without bound.
    dead_letter_limit = settings.queue_limit
    if config.redis is not None and any(app.webhooks for app in apps):
        from relay.webhooks.redis_store import RedisStore  # only deployments with Redis import redis-py

        store: DeliveryStore = RedisStore(config.redis, settings.queue_limit, dead_letter_limit, heartbeat=heartbeat)
        return WebhookDispatcher(apps, settings, store, metrics, durable=True)
    return WebhookDispatcher(apps, settings, MemoryStore(dead_letter_limit), metrics)
