"""Operational alerts to Slack-compatible incoming webhooks, for the moments that need a human.

`Alerts.raise_alert` is synchronous and only appends to a bounded queue, so nothing on the socket path
ever waits for Slack. A background task posts `{"text": ...}` (the body Slack, Mattermost and
Rocket.Chat accept) to every configured URL. Each kind is rate-limited: the first alert of a kind is
posted at once; more of that kind within `min_interval` seconds are counted, not posted, and one summary
saying how many were suppressed follows when the interval ends. A failing alert URL is logged and
counted, never retried in a loop and never raised.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import aiohttp
from yarl import URL

logger = logging.getLogger(__name__)

# Alerts waiting to be posted; past this, new ones are dropped (and counted) rather than held.
QUEUE_LIMIT: Final = 100
POST_TIMEOUT: Final = 5.0


class AlertKind(StrEnum):
    REDIS_LOST = "redis_lost"
    REDIS_RECOVERED = "redis_recovered"
    WEBHOOK_FAILING = "webhook_failing"
    WEBHOOK_DEAD_LETTERED = "webhook_dead_lettered"
    APP_AT_CONNECTION_CAP = "app_at_connection_cap"
    SLOW_CONSUMERS = "slow_consumers"
    NODE_PRESUMED_DEAD = "node_presumed_dead"


@dataclass(slots=True)
class _KindWindow:
    """Rate-limit state of one kind: when the last post went out and what was held back since."""

    last_posted: float = float("-inf")
    suppressed: int = 0
    summary_scheduled: bool = False


@dataclass(slots=True)
class AlertCounts:
    """What happened to alerts, for /metrics."""

    posted: int = 0
    suppressed: int = 0
    failed: int = 0
    dropped: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Alerts:
    """Posts alerts for one relay process. Start with `start()`, stop with `close()`."""

    def __init__(
        self,
        urls: Sequence[str],
        min_interval: float,
        source: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._urls = tuple(urls)
        self._min_interval = min_interval
        self._source = source or socket.gethostname()
        self._clock = clock
        self._windows: dict[AlertKind, _KindWindow] = {}
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self.counts = AlertCounts()

    @property
    def enabled(self) -> bool:
        return bool(self._urls)

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._post_loop(), name="relay-alerts")

    def raise_alert(self, kind: AlertKind, text: str) -> None:
        """Queue `text` for posting unless its kind posted within min_interval. Never blocks, never raises."""
        if not self.enabled:
            return
        self.counts.by_kind[kind.value] = self.counts.by_kind.get(kind.value, 0) + 1
        window = self._windows.setdefault(kind, _KindWindow())
        now = self._clock()
        if now - window.last_posted >= self._min_interval:
            window.last_posted = now
            self._enqueue(f"relay {self._source}: {text}")
            return
        window.suppressed += 1
        self.counts.suppressed += 1
        if not window.summary_scheduled:
            window.summary_scheduled = True
            delay = window.last_posted + self._min_interval - now
            self._schedule_summary(kind, max(delay, 0.0))

    def _schedule_summary(self, kind: AlertKind, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # raised from a thread without a loop: the summary comes with the next alert
            return
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            self._post_summary(kind)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _post_summary(self, kind: AlertKind) -> None:
        window = self._windows[kind]
        window.summary_scheduled = False
        if window.suppressed == 0:
            return
        count, window.suppressed = window.suppressed, 0
        window.last_posted = self._clock()
        plural = "alert" if count == 1 else "alerts"
        self._enqueue(
            f"relay {self._source}: {count} more {kind.value} {plural} in the last "
            f"{self._min_interval:g} s (suppressed; see the logs and /metrics)"
        )

    def _enqueue(self, text: str) -> None:
        if len(self._queue) >= QUEUE_LIMIT:
            self.counts.dropped += 1
            return
        self._queue.append(text)
        self._wake.set()

    async def _post_loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self._post(session, self._queue.popleft())

    async def _post(self, session: aiohttp.ClientSession, text: str) -> None:
        for url in self._urls:
            try:
                async with session.post(url, json={"text": text}) as response:
                    if response.status >= 300:
                        raise aiohttp.ClientResponseError(
                            response.request_info, response.history, status=response.status
                        )
                self.counts.posted += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                self.counts.failed += 1
                # The URL itself is a credential (Slack's hooks are bearer URLs): log its host only.
                logger.warning("alert not delivered to %s: %s", url_host(url), _describe(error))

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Post what is queued (bounded by flush_timeout), then stop."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._task is None:
            return
        deadline = time.monotonic() + flush_timeout
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None


def url_host(url: str) -> str:
    """What may be said of a URL in a log line or an alert: its host, never its path or query."""
    try:
        return URL(url).host or "?"
    except ValueError:
        return "?"


def _describe(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientResponseError):
        return f"HTTP {error.status}"
    return type(error).__name__
