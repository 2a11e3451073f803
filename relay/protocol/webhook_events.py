"""Webhook events as Pusher defines them (docs/protocol.md §7): the names, and one constructor per event.

The one place that spells an event's name or fields. An event is the JSON object a webhook body carries:
`name`, `channel` and the event's own fields, all strings except `subscription_count`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class WebhookEventName(StrEnum):
    CHANNEL_OCCUPIED = "channel_occupied"
    CHANNEL_VACATED = "channel_vacated"
    MEMBER_ADDED = "member_added"
    MEMBER_REMOVED = "member_removed"
    CLIENT_EVENT = "client_event"
    CACHE_MISS = "cache_miss"
    SUBSCRIPTION_COUNT = "subscription_count"


# What a webhook body carries for one event (encoded as JSON as it is).
WebhookEvent = dict[str, str | int]

WEBHOOK_EVENT_NAMES: Final = tuple(name.value for name in WebhookEventName)


def channel_occupied(channel: str) -> WebhookEvent:
    return {"name": WebhookEventName.CHANNEL_OCCUPIED.value, "channel": channel}


def channel_vacated(channel: str) -> WebhookEvent:
    return {"name": WebhookEventName.CHANNEL_VACATED.value, "channel": channel}


def member_added(channel: str, user_id: str) -> WebhookEvent:
    return {"name": WebhookEventName.MEMBER_ADDED.value, "channel": channel, "user_id": user_id}


def member_removed(channel: str, user_id: str) -> WebhookEvent:
    return {"name": WebhookEventName.MEMBER_REMOVED.value, "channel": channel, "user_id": user_id}


def cache_miss(channel: str) -> WebhookEvent:
    return {"name": WebhookEventName.CACHE_MISS.value, "channel": channel}


def subscription_count(channel: str, count: int) -> WebhookEvent:
    return {"name": WebhookEventName.SUBSCRIPTION_COUNT.value, "channel": channel, "subscription_count": count}


def client_event(channel: str, event: str, data: str, socket_id: str, user_id: str | None) -> WebhookEvent:
    """`data` is the client's data as a string, as Pusher documents it (docs/protocol.md §9.13)."""
    webhook: WebhookEvent = {
        "name": WebhookEventName.CLIENT_EVENT.value,
        "channel": channel,
        "event": event,
        "data": data,
        "socket_id": socket_id,
    }
    if user_id is not None:
        webhook["user_id"] = user_id
    return webhook
