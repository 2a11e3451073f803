"""What the webhook machinery counts; read by /metrics, operators' tooling and tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class WebhookCounters:
    accepted: int = 0  # events taken by notify()
    delivered: int = 0  # requests answered 2XX
    failed_attempts: int = 0  # requests that failed (non-2XX, timeout, connection error)
    dropped: int = 0  # events: queue full, refused by the store's bound, or still queued when shutdown ended
    dead_lettered: int = 0  # requests whose retries ran out
    held: int = 0  # leaves (channel_vacated, member_removed) held back for leave_delay
    cancelled: int = 0  # held leaves dropped with their join because the channel or member came back in time
