"""Which events go where and when: an app's webhook targets, the batch per target, and the retry backoff."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from relay.backoff import backoff_delay
from relay.config import WebhookConfig, WebhookSettings
from relay.protocol.webhook_events import WebhookEvent, WebhookEventName
from relay.webhooks.model import JOIN_FOR_LEAVE, LEAVE_FOR_JOIN

ALL_EVENTS = "*"


@dataclass(frozen=True, slots=True)
class Target:
    """One configured webhook URL of an app, and what it wants."""

    url: str
    event_types: frozenset[str]  # empty: every type
    channel_prefix: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def from_config(cls, config: WebhookConfig) -> Target:
        return cls(config.url, frozenset(config.event_types), config.channel_prefix, config.headers)

    def wants(self, event: Mapping[str, str | int]) -> bool:
        if not self.wants_name(str(event.get("name", ""))):
            return False
        return str(event.get("channel", "")).startswith(self.channel_prefix)

    def wants_name(self, name: str) -> bool:
        # subscription_count is opt-in, as on Pusher: only a target that names it gets it (one per subscribe
        # and unsubscribe would flood a receiver that asked for "everything").
        if not self.event_types:
            return name != WebhookEventName.SUBSCRIPTION_COUNT
        return name in self.event_types


def interest(targets: tuple[Target, ...], leaves_held: bool) -> frozenset[str]:
    """Event names worth queueing for an app ({ALL_EVENTS} for every one but the opt-in subscription_count):
    what some target wants, plus the partner of a leave/join pair when leaves are held, because a join must
    still cancel a held leave (and a leave be held to cancel its join) even when a target wants only one of
    the two."""
    names: set[str] = set()
    for target in targets:
        names |= target.event_types or {ALL_EVENTS}
    if ALL_EVENTS in names:
        return frozenset({ALL_EVENTS} | (names & {WebhookEventName.SUBSCRIPTION_COUNT}))
    if leaves_held:
        names |= {LEAVE_FOR_JOIN[name] for name in names if name in LEAVE_FOR_JOIN}
        names |= {JOIN_FOR_LEAVE[name] for name in names if name in JOIN_FOR_LEAVE}
    return frozenset(names)


class Batch:
    """Events for one (app, URL) collected during batch_window."""

    __slots__ = ("events", "latest", "opened")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.events: list[WebhookEvent] = []
        # (name, channel) -> index in events, for cache_miss and subscription_count, which Pusher de-duplicates.
        self.latest: dict[tuple[str, str], int] = {}

    def add(self, event: WebhookEvent) -> bool:
        """Append `event`; False when it only replaced or repeated one already in the batch."""
        name = event.get("name")
        if name in (WebhookEventName.CACHE_MISS, WebhookEventName.SUBSCRIPTION_COUNT):
            slot = (str(name), str(event.get("channel", "")))
            index = self.latest.get(slot)
            if index is not None:
                self.events[index] = event  # the newest subscription_count wins
                return False
            self.latest[slot] = len(self.events)
        self.events.append(event)
        return True


def wanted(names: frozenset[str], name: str) -> bool:
    """Whether an app whose interest() is `names` queues events called `name`."""
    if name == WebhookEventName.SUBSCRIPTION_COUNT:
        return name in names
    return ALL_EVENTS in names or name in names


def first_backoff(settings: WebhookSettings) -> float:
    """The first retry delay: 1 s, or shorter when the whole retry window is short."""
    return max(0.01, min(1.0, settings.retry_for / 30))


def backoff(settings: WebhookSettings, attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: doubling from first_backoff up to a cap (about ten attempts in
    Pusher's 5 minutes), with ±20 % jitter so a receiver that comes back is not hit by every node at once."""
    first = first_backoff(settings)
    return backoff_delay(attempts, first, max(first, min(60.0, settings.retry_for / 4)), jitter=0.2)
