"""The sending side: store queue → one task per request (at most MAX_CONCURRENT_REQUESTS) → ack / retry / dead letter.

Runs as one background task owned by the dispatcher, plus one task per request in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import aiohttp

from relay.alerts import AlertKind, url_host
from relay.backoff import Backoff, stop_if_cancelled
from relay.config import AppConfig, WebhookSettings
from relay.metrics import Metrics
from relay.webhooks.counters import WebhookCounters
from relay.webhooks.model import DeadLetter, Delivery
from relay.webhooks.sender import post_webhook, webhook_body, webhook_headers
from relay.webhooks.store import DeliveryStore, now_ms
from relay.webhooks.targets import Target, backoff

logger = logging.getLogger(__name__)

# Requests in flight per node; more receivers than this wait their turn, they never block the node.
MAX_CONCURRENT_REQUESTS: Final = 16


class Deliverer:
    """`closed` (set by the dispatcher at shutdown) stops retrying store writes that fail; `stopping` (set
    once the shutdown's flush is over) stops taking deliveries."""

    def __init__(
        self,
        apps: Mapping[str, AppConfig],
        targets: Mapping[str, tuple[Target, ...]],
        settings: WebhookSettings,
        store: DeliveryStore,
        counters: WebhookCounters,
        signal: Callable[[], None],
        poll_interval: float,
    ) -> None:
        self._apps = apps
        self._targets = targets
        self._settings = settings
        self._store = store
        self._counters = counters
        self._signal = signal
        self._poll_interval = poll_interval
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self.sending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.closed = False
        self.stopping = False
        # Delivery latency and operators' alerts; set by the dispatcher when metrics are wired.
        self.metrics: Metrics | None = None

    def open(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONCURRENT_REQUESTS))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        """Take deliveries from the store while a request slot is free; one task per request.

        Ends by itself once `stopping` is set, within one poll interval: redis-py can swallow the
        cancellation of a blocking command (redis/redis-py#2028), so cancelling this task alone is not
        enough to stop it. A delivery taken after `stopping` stays in flight; the store hands it back.
        """
        failures = Backoff(first=0.2, cap=5.0)
        while not self.stopping:
            await self._slots.acquire()
            try:
                delivery = await self._store.take(self._poll_interval)
            except Exception:
                self._slots.release()
                stop_if_cancelled()
                if self.closed:
                    return
                delay = failures.failed()
                logger.exception("webhooks: reading the queue failed (attempt %d)", failures.failures)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self._slots.release()
                raise
            failures.reset()
            if delivery is None or self.stopping:
                self._slots.release()
                continue
            task = asyncio.create_task(self._send(delivery), name=f"relay-webhook-send-{delivery.id}")
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

    def _target(self, app_id: str, url: str) -> Target | None:
        return next((target for target in self._targets.get(app_id, ()) if target.url == url), None)

    async def _send(self, delivery: Delivery) -> None:
        try:
            started = now_ms()
            attempt = dataclasses.replace(
                delivery, first_attempt_ms=delivery.first_attempt_ms or started, attempts=delivery.attempts + 1
            )
            app = self._apps.get(delivery.app_id)
            target = self._target(delivery.app_id, delivery.url)
            if app is None or target is None or self._session is None:
                # Configuration changed since it was queued (Redis keeps deliveries across restarts).
                await self._dead_letter(delivery, attempt, "the app or this webhook URL is no longer configured")
                return
            body = webhook_body(attempt, started)
            headers = webhook_headers(app.key, app.secret, body, delivery.id, target.headers)
            error = await post_webhook(self._session, delivery.url, body, headers, self._settings.request_timeout)
            if self.metrics is not None and self.metrics.tap.active:
                self.metrics.tap.webhook(delivery.app_id, url_host(delivery.url), delivery.events, error)
            if error is None:
                await self._store_call(lambda: self._store.ack(delivery))
                self._counters.delivered += 1
                if self.metrics is not None:
                    self.metrics.webhook_delivery.observe(max(now_ms() - delivery.created_ms, 0) / 1000)
                return
            self._counters.failed_attempts += 1
            if self.metrics is not None:
                # The URL's host only: a webhook URL may carry a token in its path or query.
                self.metrics.alerts.raise_alert(
                    AlertKind.WEBHOOK_FAILING, f"webhook target {url_host(delivery.url)} is failing: {error}"
                )
            now = now_ms()
            deadline = attempt.first_attempt_ms + int(self._settings.retry_for * 1000)
            if now >= deadline:
                await self._dead_letter(delivery, attempt, error)
                return
            due = min(now + int(backoff(self._settings, attempt.attempts) * 1000), deadline)
            logger.info(
                "webhooks: delivery %s to %s failed (%s), attempt %d; retrying in %dms",
                delivery.id,
                delivery.url,
                error,
                attempt.attempts,
                due - now,
            )
            await self._store_call(lambda: self._store.retry(delivery, attempt, due))
        except Exception:
            logger.exception("webhooks: delivery %s failed unexpectedly", delivery.id)
        finally:
            self._slots.release()
            self._signal()

    async def _dead_letter(self, delivery: Delivery, attempt: Delivery, error: str) -> None:
        letter = DeadLetter(attempt, now_ms(), error)
        await self._store_call(lambda: self._store.dead_letter(delivery, letter))
        self._counters.dead_lettered += 1
        if self.metrics is not None:
            self.metrics.alerts.raise_alert(
                AlertKind.WEBHOOK_DEAD_LETTERED,
                f"a webhook delivery to {url_host(delivery.url)} of app {delivery.app_id} was dead-lettered "
                f"after {attempt.attempts} attempts ({error}); replay it with the dead-letter API",
            )
        logger.warning(
            "webhooks: delivery %s to %s dead-lettered after %d attempts: %s",
            delivery.id,
            delivery.url,
            attempt.attempts,
            error,
        )

    async def _store_call(self, call: Callable[[], Awaitable[None]]) -> None:
        """Record an outcome, retrying while the store (Redis) is down; at worst the delivery stays in flight
        and is re-queued, to be sent again (at-least-once)."""
        failures = Backoff(first=0.2, cap=5.0)
        while True:
            try:
                await call()
                return
            except Exception:
                stop_if_cancelled()
                delay = failures.failed()
                if self.closed:
                    raise
                logger.exception("webhooks: recording a delivery outcome failed (attempt %d)", failures.failures)
                await asyncio.sleep(delay)
