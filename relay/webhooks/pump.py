"""The pump: accepted events → leave_delay holds and cancels (in the store) → per-target batches → store queue.

Runs as one background task owned by the dispatcher. Events between notify() and the store (at most
batch_window of them, plus what waits while Redis is down) live only in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

from relay.backoff import Backoff, stop_if_cancelled
from relay.config import WebhookSettings
from relay.protocol.webhook_events import WebhookEvent
from relay.webhooks.counters import WebhookCounters
from relay.webhooks.model import JOIN_FOR_LEAVE, LEAVE_FOR_JOIN, Cancel, Delivery, Hold, new_delivery_id
from relay.webhooks.store import DeliveryStore, now_ms
from relay.webhooks.targets import Batch, Target
from relay.webhooks.throttle import SubscriptionCountThrottle

logger = logging.getLogger(__name__)

# Intents handled per pump pass, so a burst does not keep the loop busy in one go.
PUMP_BATCH: Final = 1000
# A hold released at shutdown without Redis: "due" at the end of time.
FOREVER_MS: Final = 2**62


class Pump:
    """`local_events` counts the events accepted and not yet in the store: intents, batches, unpushed deliveries."""

    def __init__(
        self,
        settings: WebhookSettings,
        store: DeliveryStore,
        targets: Mapping[str, tuple[Target, ...]],
        counters: WebhookCounters,
        throttle: SubscriptionCountThrottle,
        admit: Callable[[str, WebhookEvent], None],
        signal: Callable[[], None],
        poll_interval: float,
        durable: bool,
    ) -> None:
        self._settings = settings
        self._store = store
        self._targets = targets
        self._counters = counters
        self._throttle = throttle
        self._admit = admit  # the dispatcher's queue-limit check, for counts the throttle releases
        self._signal = signal
        self._poll_interval = poll_interval
        # Redis: held leaves stay held at shutdown for the next node to send, and other nodes' holds come due.
        self._durable = durable
        self._leave_delay_ms = int(settings.leave_delay * 1000)
        self.intents: deque[tuple[str, WebhookEvent]] = deque()
        self.batches: dict[tuple[str, str], Batch] = {}
        self.unpushed: list[Delivery] = []
        self.local_events = 0
        self._next_poll_ms = 0
        self.wake = asyncio.Event()
        self.closing = False

    def add(self, app_id: str, event: WebhookEvent) -> None:
        self.intents.append((app_id, event))
        self.local_events += 1
        self.wake.set()

    async def run(self) -> None:
        failures = Backoff(first=0.2, cap=5.0)
        while not self.closing:
            self.wake.clear()
            try:
                await self.pump_once(final=False)
                failures.reset()
            except Exception:
                stop_if_cancelled()
                delay = failures.failed()
                logger.exception("webhooks: queueing failed (attempt %d); events wait in memory", failures.failures)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
                continue
            if self.intents:
                await asyncio.sleep(0)  # a burst: let the sockets run between passes
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wake()):
                    await self.wake.wait()

    async def flush(self) -> None:
        """The last pass at shutdown: everything accepted goes to the store, whatever the windows say."""
        while True:
            try:
                await self.pump_once(final=True)
                return
            except Exception:
                stop_if_cancelled()
                logger.exception("webhooks: flushing at shutdown failed; trying again")
                await asyncio.sleep(self._poll_interval)

    def _next_wake(self) -> float | None:
        loop_now = asyncio.get_running_loop().time()
        waits: list[float] = [batch.opened + self._settings.batch_window - loop_now for batch in self.batches.values()]
        waits.extend(self._throttle.waits(loop_now))
        due = self._store.next_due_ms()
        if due is not None:
            waits.append((due - now_ms()) / 1000)
        if self._durable:
            waits.append((self._next_poll_ms - now_ms()) / 1000)  # holds written by other nodes
        if self.unpushed:
            waits.append(self._poll_interval)
        return max(0.0, min(waits)) if waits else None

    async def pump_once(self, final: bool) -> None:
        if self._throttle.active:
            for app_id, event in self._throttle.release(asyncio.get_running_loop().time(), final):
                self._admit(app_id, event)
        await self._settle_intents()
        now = now_ms()
        due = self._store.next_due_ms()
        if final or (due is not None and due <= now) or (self._durable and now >= self._next_poll_ms):
            # Without Redis nobody would send a held leave after we are gone: at shutdown they go now.
            until = FOREVER_MS if final and not self._durable else now
            for hold in await self._store.release_due(until):
                self.local_events += 1
                self._route(hold.app_id, hold.event)
            self._next_poll_ms = now + int(self._poll_interval * 1000)
        self._close_batches(final)
        await self._push()

    async def _settle_intents(self) -> None:
        if not self.intents:
            return
        intents = list(itertools.islice(self.intents, PUMP_BATCH))
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
            self.intents.popleft()
        for (app_id, event), op in zip(intents, plan, strict=True):
            if op is None:
                self._route(app_id, event)
            elif isinstance(op, Hold):
                next(results)
                self.local_events -= 1  # the store holds it now
                self._counters.held += 1
            elif next(results):
                self.local_events -= 1  # back within leave_delay: drop the join, its leave is gone too
                self._counters.cancelled += 1
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
            batch = self.batches.get(key)
            if batch is None:
                batch = self.batches[key] = Batch(loop_now)
            copies += batch.add(event)
        self.local_events += copies - 1

    def _close_batches(self, final: bool) -> None:
        loop_now = asyncio.get_running_loop().time()
        window = self._settings.batch_window
        size = max(1, self._settings.batch_size)
        for (app_id, url), batch in list(self.batches.items()):
            if final or len(batch.events) >= size or loop_now >= batch.opened + window:
                del self.batches[(app_id, url)]
                created = now_ms()
                for start in range(0, len(batch.events), size):
                    events = tuple(batch.events[start : start + size])
                    self.unpushed.append(Delivery(new_delivery_id(), app_id, url, events, created))

    async def _push(self) -> None:
        if not self.unpushed:
            return
        deliveries = self.unpushed
        accepted = await self._store.push(deliveries)
        self.unpushed = []
        self.local_events -= sum(len(delivery.events) for delivery in deliveries)
        refused = sum(len(delivery.events) for delivery in deliveries[accepted:])
        if refused:
            self._counters.dropped += refused
            logger.warning("webhooks: shared queue is full; dropped %d events", refused)
        self._signal()
