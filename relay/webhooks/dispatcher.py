"""WebhookDispatcher: the node's WebhookSink. Filters and admits events, and owns the two stages behind them.

notify() runs on the socket path, so it only appends to a deque and sets an event: O(1), no await, no I/O.
Everything else happens in two background tasks:

  pump       accepted events → leave_delay holds/cancels → per-target batches → store queue  (pump.py)
  deliverer  store queue → one task per request → ack / retry / dead letter                  (deliverer.py)

Busy channels' subscription_count events are thinned out before they are admitted (throttle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final

from relay.backoff import cancel_and_wait
from relay.config import AppConfig, WebhookSettings
from relay.metrics import Metrics
from relay.protocol.webhook_events import WebhookEvent, WebhookEventName
from relay.webhooks.counters import WebhookCounters
from relay.webhooks.deliverer import Deliverer
from relay.webhooks.model import DeadLetter, webhook_event
from relay.webhooks.pump import Pump
from relay.webhooks.store import DeliveryStore
from relay.webhooks.targets import Target, first_backoff, interest, wanted
from relay.webhooks.throttle import SubscriptionCountThrottle

logger = logging.getLogger(__name__)

# Seconds close() waits for its cancelled tasks; the fetch task needs at most one poll interval (<= 1 s).
STOP_TIMEOUT: Final = 3.0


class WebhookDispatcher:
    """Implements node.WebhookSink. Owns its tasks: start() and close() from the app's cleanup context."""

    def __init__(
        self,
        apps: Iterable[AppConfig],
        settings: WebhookSettings,
        store: DeliveryStore,
        metrics: Metrics | None = None,
        durable: bool = False,
    ) -> None:
        # Keyed by plain str: deliveries read back from the store name their app as a str.
        self._apps: dict[str, AppConfig] = {app.id: app for app in apps}
        self._settings = settings
        self._store = store
        self._targets: dict[str, tuple[Target, ...]] = {
            app.id: tuple(Target.from_config(hook) for hook in app.webhooks) for app in self._apps.values()
        }
        self._interest = {
            app_id: interest(targets, settings.leave_delay > 0) for app_id, targets in self._targets.items() if targets
        }
        self.enabled = bool(self._interest)
        self.counters = WebhookCounters()
        self._poll_interval = min(1.0, max(0.05, first_backoff(settings)))
        self._waiters: list[asyncio.Future[None]] = []
        self._throttle = SubscriptionCountThrottle()
        # durable: the store outlives this process (Redis), so held leaves stay held at shutdown for the next
        # node to send, instead of being sent at once.
        self._pump = Pump(
            settings,
            store,
            self._targets,
            self.counters,
            self._throttle,
            self._enqueue,
            self._signal,
            self._poll_interval,
            durable,
        )
        self._deliverer = Deliverer(
            self._apps, self._targets, settings, store, self.counters, self._signal, self._poll_interval
        )
        self._pump_task: asyncio.Task[None] | None = None
        self._fetch_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._dropping = False
        if metrics is not None:
            self.register_gauges(metrics)

    async def reload_apps(self, apps: Iterable[AppConfig]) -> None:
        """New apps and webhook targets (SIGHUP). The dicts are shared with the pump and the deliverer,
        so they are updated in place; queued deliveries of a removed target are dead-lettered when due."""
        self._apps.clear()
        self._apps.update({app.id: app for app in apps})
        self._targets.clear()
        self._targets.update(
            {app.id: tuple(Target.from_config(hook) for hook in app.webhooks) for app in self._apps.values()}
        )
        self._interest.clear()
        self._interest.update(
            {
                app_id: interest(targets, self._settings.leave_delay > 0)
                for app_id, targets in self._targets.items()
                if targets
            }
        )
        self.enabled = bool(self._interest)
        if self.enabled and not self._started and not self._closed:
            await self.start()  # the first webhook target arrived with this reload

    def register_gauges(self, metrics: Metrics) -> None:
        """relay_webhook* at /metrics; failing targets and dead letters also go to the operators' alerts."""
        counters = self.counters
        self._deliverer.metrics = metrics
        metrics.add_gauge(
            "relay_webhooks_queued", "Webhook events waiting in this process", (), lambda: [((), self.queued)]
        )
        metrics.add_gauge(
            "relay_webhooks_backlog", "Webhook deliveries waiting in the store", (), lambda: [((), self._store.backlog)]
        )
        for name, documentation, read in (
            ("relay_webhooks_enqueued", "Webhook events queued", lambda: counters.accepted),
            ("relay_webhooks_sent", "Webhook requests the receiver accepted (2xx)", lambda: counters.delivered),
            (
                "relay_webhook_failed_attempts",
                "Webhook requests that failed; every retry counts",
                lambda: counters.failed_attempts,
            ),
            (
                "relay_webhooks_dead_lettered",
                "Webhook deliveries given up and kept for replay",
                lambda: counters.dead_lettered,
            ),
            (
                "relay_webhooks_dropped",
                "Webhook events dropped (queue full, or left at shutdown)",
                lambda: counters.dropped,
            ),
            (
                "relay_webhooks_leaves_cancelled",
                "Leave webhooks cancelled by a quick return",
                lambda: counters.cancelled,
            ),
        ):
            metrics.add_total(name, documentation, read)

    @property
    def queued(self) -> int:
        """Events waiting in this process (the queue_limit bound)."""
        return self._pump.local_events + self._store.local_events

    @property
    def idle(self) -> bool:
        """Nothing accepted is waiting in this process: no event, batch or held-back count."""
        return not (self._pump.intents or self._pump.batches or self._pump.unpushed or self._throttle.holding)

    # The socket path -----------------------------------------------------------------------------

    def wants(self, app: AppConfig, name: str) -> bool:
        names = self._interest.get(app.id)
        return names is not None and wanted(names, name)

    def notify(self, app: AppConfig, event: Mapping[str, Any]) -> None:
        """Queue one event for `app`'s webhooks. Never blocks: no await, no I/O."""
        name = event.get("name")
        if not isinstance(name, str) or not self.wants(app, name):
            return
        copy = webhook_event(event)
        if name == WebhookEventName.SUBSCRIPTION_COUNT and not self._closed:
            if self._throttle.holds_back(app.id, copy, asyncio.get_running_loop().time()):
                self._pump.wake.set()
                return
        self._enqueue(app.id, copy)

    def _enqueue(self, app_id: str, event: WebhookEvent) -> None:
        if self._closed or self.queued >= self._settings.queue_limit:
            self.counters.dropped += 1
            if not self._dropping:
                self._dropping = True
                logger.warning("webhooks: queue full (%d events), dropping events for app_id=%s", self.queued, app_id)
            self._signal()
            return
        self._dropping = False
        self._pump.add(app_id, event)
        self.counters.accepted += 1
        self._signal()

    # Life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        await self._store.start()
        self._deliverer.open()
        self._pump_task = asyncio.create_task(self._pump.run(), name="relay-webhook-pump")
        self._fetch_task = asyncio.create_task(self._deliverer.run(), name="relay-webhook-fetch")
        self._started = True

    async def close(self) -> None:
        """Send what is queued within shutdown_deadline, then stop. Call after the node stopped notifying."""
        if not self._started:
            self._closed = True
            return
        self._started = False
        deadline = asyncio.get_running_loop().time() + self._settings.shutdown_deadline
        self._pump.closing = True
        self._pump.wake.set()
        try:
            async with asyncio.timeout_at(deadline):
                if self._pump_task is not None:
                    await asyncio.gather(self._pump_task, return_exceptions=True)
                await self._pump.flush()
                self._close_intake()
                await self._drain()
        except TimeoutError:
            logger.warning(
                "webhooks: shutdown deadline (%gs) reached with %d events queued here, %d requests in flight",
                self._settings.shutdown_deadline,
                self.queued,
                len(self._deliverer.sending),
            )
        finally:
            self._close_intake()
            sending = self._deliverer.sending
            tasks = [task for task in (self._pump_task, self._fetch_task, *sending) if task is not None]
            self._deliverer.stopping = True
            # The fetch task ends within a poll interval even when redis-py swallowed its cancel
            # (Deliverer.run); past the bound the store's close() cuts its connections under it.
            await cancel_and_wait(tasks, STOP_TIMEOUT)
            given_up = await self._store.close() + self._pump.local_events
            self._pump.local_events = 0
            if given_up:
                self.counters.dropped += given_up
                logger.warning("webhooks: %d events were not delivered before shutdown", given_up)
            await self._deliverer.close()
            self._signal()

    def _close_intake(self) -> None:
        self._closed = True
        self._deliverer.closed = True

    async def _drain(self) -> None:
        while self._deliverer.sending or self._pump.unpushed or not await self._store.is_drained():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self.changed()

    # Observing progress --------------------------------------------------------------------------

    def _signal(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self) -> None:
        """Resolves at the next change of the counters or the queue (an event taken, a delivery outcome)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def wait_for(self, predicate: Callable[[WebhookCounters], bool]) -> None:
        """Wait until `predicate(counters)` holds; for operators' tooling and tests, bound it with a timeout."""
        while not predicate(self.counters):
            await self.changed()

    # Dead letters (webhook_api) ------------------------------------------------------------------

    async def dead_letters(self, app_id: str, limit: int) -> list[DeadLetter]:
        return await self._store.dead_letters(app_id, limit)

    async def replay(self, app_id: str, ids: Collection[str] | None) -> int:
        replayed = await self._store.replay(app_id, ids)
        if replayed:
            logger.info("webhooks: replaying %d dead letters for app_id=%s", replayed, app_id)
        return replayed
