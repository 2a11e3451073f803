"""The subscription_count throttle: on a busy channel, at most one count per interval, the newest one."""

from __future__ import annotations

from typing import Final

from relay.protocol.webhook_events import WebhookEvent

# subscription_count above this many subscribers is sent at most once per SUBSCRIPTION_COUNT_INTERVAL
# seconds per channel (docs/protocol.md §7, as Pusher); the newest count waits and is sent when the interval ends.
SUBSCRIPTION_COUNT_BUSY: Final = 100
SUBSCRIPTION_COUNT_INTERVAL: Final = 5.0

ChannelKey = tuple[str, str]  # (app_id, channel)


class SubscriptionCountThrottle:
    """Times are the event loop's clock, passed in by the caller."""

    def __init__(self) -> None:
        # When each channel's count was last let through, and the newest count held back for a busy channel.
        self._sent: dict[ChannelKey, float] = {}
        self._pending: dict[ChannelKey, WebhookEvent] = {}
        self._pruned = 0.0

    @property
    def active(self) -> bool:
        return bool(self._pending or self._sent)

    @property
    def holding(self) -> bool:
        """Some count is held back."""
        return bool(self._pending)

    def holds_back(self, app_id: str, event: WebhookEvent, now: float) -> bool:
        """True when this count must wait (busy channel, one sent less than an interval ago)."""
        key = (app_id, str(event.get("channel", "")))
        count = event.get("subscription_count")
        last = self._sent.get(key)
        busy = isinstance(count, int) and count > SUBSCRIPTION_COUNT_BUSY
        if busy and last is not None and now - last < SUBSCRIPTION_COUNT_INTERVAL:
            self._pending[key] = event  # only the newest count matters
            return True
        self._pending.pop(key, None)  # this newer count replaces the one held back
        self._sent[key] = now
        return False

    def release(self, now: float, final: bool) -> list[tuple[str, WebhookEvent]]:
        """Held-back counts whose interval ended (all of them when `final`), as (app_id, event)."""
        released: list[tuple[str, WebhookEvent]] = []
        for key, event in list(self._pending.items()):
            if final or now - self._sent.get(key, 0.0) >= SUBSCRIPTION_COUNT_INTERVAL:
                del self._pending[key]
                self._sent[key] = now
                released.append((key[0], event))
        if now - self._pruned >= SUBSCRIPTION_COUNT_INTERVAL:  # a sweep per interval, not per call
            self._pruned = now
            quiet = [key for key, sent in self._sent.items() if now - sent >= SUBSCRIPTION_COUNT_INTERVAL]
            for key in quiet:
                if key not in self._pending:
                    del self._sent[key]
        return released

    def waits(self, now: float) -> list[float]:
        """Seconds until each held-back count is due."""
        return [self._sent.get(key, 0.0) + SUBSCRIPTION_COUNT_INTERVAL - now for key in self._pending]
