"""Exponential backoff: the one formula for every retry loop (webhook deliveries, store and Redis reconnects)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, first: float, cap: float, jitter: float = 0.0) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry): `first`, doubling, at most `cap`.

    `jitter` spreads the delay by that fraction either way (0.2: ±20 %), so that many nodes retrying
    against one receiver that comes back do not all arrive at once.
    """
    delay = min(cap, first * 2 ** max(0, attempt - 1))
    if jitter:
        delay *= random.uniform(1 - jitter, 1 + jitter)
    return float(delay)


class Backoff:
    """A retry loop's failure count and the delay it calls for; `reset()` after a success."""

    __slots__ = ("cap", "failures", "first", "jitter")

    def __init__(self, first: float, cap: float, jitter: float = 0.0) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure; the seconds to wait before trying again."""
        self.failures += 1
        return backoff_delay(self.failures, self.first, self.cap, self.jitter)

    def reset(self) -> None:
        self.failures = 0
