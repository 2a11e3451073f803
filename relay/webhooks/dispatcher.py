"""WebhookDispatcher: the node's WebhookSink. Filters, holds back leaves, batches, and posts with retries.

notify() runs on the socket path, so it only appends to a deque and sets an event: O(1), no await, no I/O.
Everything else happens in two background tasks:

  pump    intents → leave_delay holds/cancels (in the store) → per-target batches → store queue
  fetch   store queue → one task per request (at most MAX_CONCURRENT_REQUESTS) → ack / retry / dead letter

Events between notify() and the store (at most batch_window of them, plus what waits while Redis is down)
live only in this process; everything in the store survives as long as the store does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from relay.config import AppConfig, WebhookSettings
from relay.metrics import Metrics
from relay.webhooks.model import (
    JOIN_FOR_LEAVE,
    LEAVE_FOR_JOIN,
    SUBSCRIPTION_COUNT,
    Cancel,
    DeadLetter,
    Delivery,
    Hold,
    WebhookEvent,
    new_delivery_id,
    webhook_event,
)
from relay.webhooks.sender import post_webhook, webhook_body, webhook_headers
from relay.webhooks.store import DeliveryStore, now_ms
from relay.webhooks.targets import Batch, Target, backoff, first_backoff, interest, wanted

logger = logging.getLogger(__name__)

# Requests in flight per node; more receivers than this wait their turn, they never block the node.
MAX_CONCURRENT_REQUESTS: Final = 16
# Intents handled per pump pass, so a burst does not keep the loop busy in one go.
PUMP_BATCH: Final = 1000
# A hold released at shutdown without Redis: "due" at the end of time.
FOREVER_MS: Final = 2**62
# subscription_count above this many subscribers is sent at most once per SUBSCRIPTION_COUNT_INTERVAL
# seconds per channel (docs/protocol.md §7, as Pusher); the newest count waits and is sent when the interval ends.
SUBSCRIPTION_COUNT_BUSY: Final = 100
SUBSCRIPTION_COUNT_INTERVAL: Final = 5.0


@dataclass(slots=True)
class WebhookCounters:
    accepted: int = 0  # events taken by notify()
    delivered: int = 0  # requests answered 2XX
    failed_attempts: int = 0  # requests that failed (non-2XX, timeout, connection error)
    dropped: int = 0  # events: queue full, refused by the store's bound, or still queued when shutdown ended
    dead_lettered: int = 0  # requests whose retries ran out
    held: int = 0  # leaves (channel_vacated, member_removed) held back for leave_delay
    cancelled: int = 0  # held leaves dropped with their join because the channel or member came back in time


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
        self._apps = {app.id: app for app in apps}
        self._settings = settings
        self._store = store
        # True when the store outlives this process (Redis): held leaves then stay held at shutdown for the
        # next node to send, instead of being sent at once.
        self._durable = durable
        self._targets = {
            app.id: tuple(Target.from_config(hook) for hook in app.webhooks) for app in self._apps.values()
        }
        self._interest = {
            app_id: interest(targets, settings.leave_delay > 0) for app_id, targets in self._targets.items() if targets
        }
        self.enabled = bool(self._interest)
        self.counters = WebhookCounters()
        self._poll_interval = min(1.0, max(0.05, first_backoff(settings)))
        self._leave_delay_ms = int(settings.leave_delay * 1000)
        self._intents: deque[tuple[str, WebhookEvent]] = deque()
        self._batches: dict[tuple[str, str], Batch] = {}
        self._unpushed: list[Delivery] = []
        # Events accepted and not yet in the store: intents, batches, unpushed deliveries.
        self._local_events = 0
        self._next_poll_ms = 0
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        # subscription_count throttle: (app_id, channel) -> loop time it was last queued, and the newest
        # count held back for a busy channel.
        self._count_sent: dict[tuple[str, str], float] = {}
        self._count_pending: dict[tuple[str, str], WebhookEvent] = {}
        self._count_pruned = 0.0
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._sending: set[asyncio.Task[None]] = set()
        self._pump_task: asyncio.Task[None] | None = None
        self._fetch_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._started = False
        self._closing = False
        self._closed = False
        self._dropping = False
        if metrics is not None:
            self.register_gauges(metrics)

    def register_gauges(self, metrics: Metrics) -> None:
        counters = self.counters
        metrics.gauges["webhooks_queued"] = lambda: self.queued
        metrics.gauges["webhooks_backlog"] = lambda: self._store.backlog
        metrics.gauges["webhooks_delivered"] = lambda: counters.delivered
        metrics.gauges["webhooks_failed_attempts"] = lambda: counters.failed_attempts
        metrics.gauges["webhooks_dropped"] = lambda: counters.dropped
        metrics.gauges["webhooks_dead_lettered"] = lambda: counters.dead_lettered
        metrics.gauges["webhooks_leaves_cancelled"] = lambda: counters.cancelled

    @property
    def queued(self) -> int:
        """Events waiting in this process (the queue_limit bound)."""
        return self._local_events + self._store.local_events

    # The socket path -----------------------------------------------------------------------------

    def wants(self, app: AppConfig, name: str) -> bool:
        names = self._interest.get(app.id)
        return names is not None and wanted(names, name)

    def notify(self, app: AppConfig, event: Mapping[str, Any]) -> None:
        """Queue one event for `app`'s webhooks. Never blocks: no await, no I/O."""
        name = event.get("name")
        if not isinstance(name, str) or not self.wants(app, name):
            return
        if name == SUBSCRIPTION_COUNT and not self._closed and self._count_throttled(app.id, event):
            return
        self._enqueue(app.id, event)

    def _enqueue(self, app_id: str, event: Mapping[str, Any]) -> None:
        if self._closed or self.queued >= self._settings.queue_limit:
            self.counters.dropped += 1
            if not self._dropping:
                self._dropping = True
                logger.warning("webhooks: queue full (%d events), dropping events for app_id=%s", self.queued, app_id)
            self._signal()
            return
        self._dropping = False
        self._intents.append((app_id, webhook_event(event)))
        self._local_events += 1
        self.counters.accepted += 1
        self._wake.set()
        self._signal()

    def _count_throttled(self, app_id: str, event: Mapping[str, Any]) -> bool:
        """True when this subscription_count must wait (busy channel, sent less than an interval ago)."""
        key = (app_id, str(event.get("channel", "")))
        count = event.get("subscription_count")
        now = asyncio.get_running_loop().time()
        last = self._count_sent.get(key)
        busy = isinstance(count, int) and count > SUBSCRIPTION_COUNT_BUSY
        if busy and last is not None and now - last < SUBSCRIPTION_COUNT_INTERVAL:
            self._count_pending[key] = webhook_event(event)  # only the newest count matters
            self._wake.set()
            return True
        self._count_pending.pop(key, None)  # this newer count replaces the one held back
        self._count_sent[key] = now
        return False

    def _release_counts(self, final: bool) -> None:
        """Queue held-back subscription counts whose interval ended; forget channels quiet for an interval."""
        now = asyncio.get_running_loop().time()
        for key, event in list(self._count_pending.items()):
            if final or now - self._count_sent.get(key, 0.0) >= SUBSCRIPTION_COUNT_INTERVAL:
                del self._count_pending[key]
                self._count_sent[key] = now
                self._enqueue(key[0], event)
        if now - self._count_pruned >= SUBSCRIPTION_COUNT_INTERVAL:  # a sweep per interval, not per pass
            self._count_pruned = now
            quiet = [key for key, sent in self._count_sent.items() if now - sent >= SUBSCRIPTION_COUNT_INTERVAL]
            for key in quiet:
                if key not in self._count_pending:
                    del self._count_sent[key]

    # Life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            return
        await self._store.start()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONCURRENT_REQUESTS))
        self._pump_task = asyncio.create_task(self._pump(), name="relay-webhook-pump")
        self._fetch_task = asyncio.create_task(self._fetch(), name="relay-webhook-fetch")
        self._started = True

    async def close(self) -> None:
        """Send what is queued within shutdown_deadline, then stop. Call after the node stopped notifying."""
        if not self._started:
            self._closed = True
            return
        self._started = False
        deadline = asyncio.get_running_loop().time() + self._settings.shutdown_deadline
        self._closing = True
        self._wake.set()
        try:
            async with asyncio.timeout_at(deadline):
                if self._pump_task is not None:
                    await asyncio.gather(self._pump_task, return_exceptions=True)
                await self._final_pump()
                self._closed = True
                await self._drain()
        except TimeoutError:
            logger.warning(
                "webhooks: shutdown deadline (%gs) reached with %d events queued here, %d requests in flight",
                self._settings.shutdown_deadline,
                self.queued,
                len(self._sending),
            )
        finally:
            self._closed = True
            tasks = [task for task in (self._pump_task, self._fetch_task, *self._sending) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            given_up = await self._store.close() + self._local_events
            self._local_events = 0
            if given_up:
                self.counters.dropped += given_up
                logger.warning("webhooks: %d events were not delivered before shutdown", given_up)
            if self._session is not None:
                await self._session.close()
            self._signal()

    async def _final_pump(self) -> None:
        while True:
            try:
                await self._pump_once(final=True)
                return
            except Exception:
                logger.exception("webhooks: flushing at shutdown failed; trying again")
                await asyncio.sleep(self._poll_interval)

    async def _drain(self) -> None:
        while self._sending or self._unpushed or not await self._store.is_drained():
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

    # Pump: intents → holds → batches → store -----------------------------------------------------

    async def _pump(self) -> None:
        failures = 0
        while not self._closing:
            self._wake.clear()
            try:
                await self._pump_once(final=False)
                failures = 0
            except Exception:
                failures += 1
                logger.exception("webhooks: queueing failed (attempt %d); events wait in memory", failures)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(5.0, 0.1 * 2**failures)):
                        await self._wake.wait()
                continue
            if self._intents:
                await asyncio.sleep(0)  # a burst: let the sockets run between passes
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wake()):
                    await self._wake.wait()

    def _next_wake(self) -> float | None:
        loop_now = asyncio.get_running_loop().time()
        waits: list[float] = [batch.opened + self._settings.batch_window - loop_now for batch in self._batches.values()]
        waits.extend(
            self._count_sent.get(key, 0.0) + SUBSCRIPTION_COUNT_INTERVAL - loop_now for key in self._count_pending
        )
        due = self._store.next_due_ms()
        if due is not None:
            waits.append((due - now_ms()) / 1000)
        if self._durable:
            waits.append((self._next_poll_ms - now_ms()) / 1000)  # holds written by other nodes
        if self._unpushed:
            waits.append(self._poll_interval)
        return max(0.0, min(waits)) if waits else None

    async def _pump_once(self, final: bool) -> None:
        if self._count_pending or self._count_sent:
            self._release_counts(final)
        await self._settle_intents()
        now = now_ms()
        due = self._store.next_due_ms()
        if final or (due is not None and due <= now) or (self._durable and now >= self._next_poll_ms):
            # Without Redis nobody would send a held leave after we are gone: at shutdown they go now.
            until = FOREVER_MS if final and not self._durable else now
            for hold in await self._store.release_due(until):
                self._local_events += 1
                self._route(hold.app_id, hold.event)
            self._next_poll_ms = now + int(self._poll_interval * 1000)
        self._close_batches(final)
        await self._push()

    async def _settle_intents(self) -> None:
        if not self._intents:
            return
        intents = list(itertools.islice(self._intents, PUMP_BATCH))
        plan: list[Hold | Cancel | None] = []
        due_ms = now_ms() + self._leave_delay_ms
        for app_id, event in intents:
            name = event.get("name")
            if self._leave_delay_ms <= 0:
                plan.append(None)
            elif name in JOIN_FOR_LEAVE:
                plan.append(Hold(app_id, event, secrets.token_hex(8), due_ms))
            elif name in LEAVE_FOR_JOIN:
                plan.append(Cancel(app_id, event))
            else:
                plan.append(None)
        ops = [op for op in plan if op is not None]
        results = iter(await self._store.settle(ops) if ops else [])
        # Only now, with the store updated, are the intents consumed: a failure above leaves them queued.
        for _ in intents:
            self._intents.popleft()
        for (app_id, event), op in zip(intents, plan, strict=True):
            if op is None:
                self._route(app_id, event)
            elif isinstance(op, Hold):
                next(results)
                self._local_events -= 1  # the store holds it now
                self.counters.held += 1
            elif next(results):
                self._local_events -= 1  # back within leave_delay: drop the join, its leave is gone too
                self.counters.cancelled += 1
                logger.debug(
                    "webhooks: %s and its leave dropped for app_id=%s (back in time)", event.get("name"), app_id
                )
            else:
                self._route(app_id, event)
        self._signal()

    def _route(self, app_id: str, event: WebhookEvent) -> None:
        """Put one counted event into the batch of every target that wants it."""
        copies = 0
        loop_now = asyncio.get_running_loop().time()
        for target in self._targets.get(app_id, ()):
            if not target.wants(event):
                continue
            key = (app_id, target.url)
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches[key] = Batch(loop_now)
            copies += batch.add(event)
        self._local_events += copies - 1

    def _close_batches(self, final: bool) -> None:
        loop_now = asyncio.get_running_loop().time()
        window = self._settings.batch_window
        size = max(1, self._settings.batch_size)
        for (app_id, url), batch in list(self._batches.items()):
            if final or len(batch.events) >= size or loop_now >= batch.opened + window:
                del self._batches[(app_id, url)]
                created = now_ms()
                for start in range(0, len(batch.events), size):
                    events = tuple(batch.events[start : start + size])
                    self._unpushed.append(Delivery(new_delivery_id(), app_id, url, events, created))

    async def _push(self) -> None:
        if not self._unpushed:
            return
        deliveries = self._unpushed
        accepted = await self._store.push(deliveries)
        self._unpushed = []
        self._local_events -= sum(len(delivery.events) for delivery in deliveries)
        refused = sum(len(delivery.events) for delivery in deliveries[accepted:])
        if refused:
            self.counters.dropped += refused
            logger.warning("webhooks: shared queue is full; dropped %d events", refused)
        self._signal()

    # Fetch and send ------------------------------------------------------------------------------

    async def _fetch(self) -> None:
        failures = 0
        while True:
            await self._slots.acquire()
            try:
                delivery = await self._store.take(self._poll_interval)
            except Exception:
                self._slots.release()
                failures += 1
                logger.exception("webhooks: reading the queue failed (attempt %d)", failures)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            except BaseException:
                self._slots.release()
                raise
            failures = 0
            if delivery is None:
                self._slots.release()
                continue
            task = asyncio.create_task(self._send(delivery), name=f"relay-webhook-send-{delivery.id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

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
            if error is None:
                await self._store_call(lambda: self._store.ack(delivery))
                self.counters.delivered += 1
                return
            self.counters.failed_attempts += 1
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
        self.counters.dead_lettered += 1
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
        failures = 0
        while True:
            try:
                await call()
                return
            except Exception:
                failures += 1
                if self._closed:
                    raise
                logger.exception("webhooks: recording a delivery outcome failed (attempt %d)", failures)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))

    # Dead letters (webhook_api) ------------------------------------------------------------------

    async def dead_letters(self, app_id: str, limit: int) -> list[DeadLetter]:
        return await self._store.dead_letters(app_id, limit)

    async def replay(self, app_id: str, ids: Collection[str] | None) -> int:
        replayed = await self._store.replay(app_id, ids)
        if replayed:
            logger.info("webhooks: replaying %d dead letters for app_id=%s", replayed, app_id)
        return replayed
