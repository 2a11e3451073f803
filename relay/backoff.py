"""Exponential backoff: the one formula for every retry loop (webhook deliveries, store and Redis reconnects),
and the cancellation helpers those loops need."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection
from typing import Any

logger = logging.getLogger(__name__)


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


def stop_if_cancelled() -> None:
    """For a retry loop's `except Exception`: re-raise CancelledError when the running task was cancelled.

    redis-py can turn the CancelledError delivered during a command into a connection error. A loop that
    retries on errors would then swallow its own cancellation and run for ever, and whoever awaits the
    cancelled task (a shutdown, a test's teardown) with it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]], timeout: float) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait for them at most `timeout` seconds; the ones still running.

    Bounded because redis-py can swallow a cancellation outright (redis/redis-py#2028): a task blocked in
    a Redis read may go on running, and a shutdown that waited for it would never end. The caller closes
    the task's connection next, which ends it.
    """
    for task in tasks:
        task.cancel()
    if not tasks:
        return set()
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    if pending:
        logger.warning("%d tasks did not stop within %gs of being cancelled", len(pending), timeout)
    return pending
