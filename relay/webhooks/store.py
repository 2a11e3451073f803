"""Where deliveries wait: the DeliveryStore seam and its in-process implementation.

A store owns three things: the queue of deliveries (ready now, waiting for a retry, in flight), the held
leaves of leave_delay, and the dead letters. MemoryStore keeps them in this process; RedisStore
(redis_store.py) shares them between nodes and keeps them across restarts.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Collection, Sequence
from typing import Protocol

from relay.webhooks.model import Cancel, DeadLetter, Delivery, Hold


def now_ms() -> int:
    """Wall-clock milliseconds: shared by every node through Redis, and what receivers compare time_ms with."""
    return int(time.time() * 1000)


class DeliveryStore(Protocol):
    @property
    def local_events(self) -> int:
        """Events this store keeps in this process's memory; counted against queue_limit."""

    @property
    def backlog(self) -> int:
        """Deliveries waiting (ready, retrying, in flight), as last seen; a gauge, not a bound."""

    async def start(self) -> None: ...

    async def close(self) -> int:
        """Stop; in-flight deliveries go back to the queue where that survives us. Returns events given up."""

    async def settle(self, ops: Sequence[Hold | Cancel]) -> list[bool]:
        """Apply holds and cancels in order. For a Cancel: True when a hold for its key was pending (it is
        removed, and the caller drops the join too). For a Hold: always True."""

    async def release_due(self, until_ms: int) -> list[Hold]:
        """Holds due by `until_ms` that were not cancelled, each released exactly once cluster-wide."""

    def next_due_ms(self) -> int | None:
        """When the earliest hold this node knows of falls due (others' holds are found by polling)."""

    async def push(self, deliveries: Sequence[Delivery]) -> int:
        """Queue deliveries in order; returns how many were accepted (the rest hit the bound)."""

    async def take(self, timeout: float) -> Delivery | None:
        """The next delivery due, now in flight on this node; None when nothing came within `timeout` s."""

    async def ack(self, delivery: Delivery) -> None:
        """`delivery` (as take returned it) reached its receiver."""

    async def retry(self, delivery: Delivery, attempt: Delivery, due_ms: int) -> None:
        """`delivery` failed; queue `attempt` (its updated copy) again at `due_ms`."""

    async def dead_letter(self, delivery: Delivery, letter: DeadLetter) -> None:
        """`delivery` ran out of retries; keep `letter` for an operator."""

    async def dead_letters(self, app_id: str, limit: int) -> list[DeadLetter]:
        """The app's dead letters, oldest first, at most `limit`."""

    async def replay(self, app_id: str, ids: Collection[str] | None) -> int:
        """Queue the app's dead letters again (all of them, or those with these delivery ids); returns how many."""

    async def is_drained(self) -> bool:
        """Nothing is ready to send that shutdown should still wait for."""


class MemoryStore:
    """A single node's queue. What is left at close() is lost, and counted as dropped by the dispatcher."""

    def __init__(self, dead_letter_limit: int) -> None:
        self._ready: deque[Delivery] = deque()
        self._retrying: list[tuple[int, int, Delivery]] = []  # heap of (due_ms, seq, delivery)
        self._in_flight: dict[str, Delivery] = {}
        self._holds: dict[str, str] = {}  # hold key -> token of the pending hold
        self._due: list[tuple[int, int, Hold]] = []  # heap of (due_ms, seq, hold)
        self._dead: dict[str, deque[DeadLetter]] = {}
        self._dead_letter_limit = max(1, dead_letter_limit)
        self._seq = itertools.count()
        self._events = 0
        self._changed = asyncio.Event()

    @property
    def local_events(self) -> int:
        return self._events

    @property
    def backlog(self) -> int:
        return len(self._ready) + len(self._retrying) + len(self._in_flight)

    async def start(self) -> None:
        pass

    async def close(self) -> int:
        given_up = self._events
        self._ready.clear()
        self._retrying.clear()
        self._in_flight.clear()
        self._holds.clear()
        self._due.clear()
        self._events = 0
        return given_up

    # Held leaves ---------------------------------------------------------------------------------

    async def settle(self, ops: Sequence[Hold | Cancel]) -> list[bool]:
        results: list[bool] = []
        for op in ops:
            if isinstance(op, Hold):
                if op.key in self._holds:
                    self._events -= 1  # the newer hold replaces the older one (its heap entry goes stale)
                self._holds[op.key] = op.token
                heapq.heappush(self._due, (op.due_ms, next(self._seq), op))
                self._events += 1
                results.append(True)
            else:
                cancelled = self._holds.pop(op.key, None) is not None
                if cancelled:
                    self._events -= 1
                results.append(cancelled)
        return results

    async def release_due(self, until_ms: int) -> list[Hold]:
        released: list[Hold] = []
        while self._due and self._due[0][0] <= until_ms:
            _, _, hold = heapq.heappop(self._due)
            if self._holds.get(hold.key) == hold.token:
                del self._holds[hold.key]
                self._events -= 1
                released.append(hold)
        return released

    def next_due_ms(self) -> int | None:
        return self._due[0][0] if self._due else None

    # Deliveries ----------------------------------------------------------------------------------

    async def push(self, deliveries: Sequence[Delivery]) -> int:
        for delivery in deliveries:
            self._ready.append(delivery)
            self._events += len(delivery.events)
        if deliveries:
            self._changed.set()
        return len(deliveries)

    async def take(self, timeout: float) -> Delivery | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = now_ms()
            while self._retrying and self._retrying[0][0] <= now:
                self._ready.append(heapq.heappop(self._retrying)[2])
            if self._ready:
                delivery = self._ready.popleft()
                self._in_flight[delivery.id] = delivery
                return delivery
            wait = deadline - loop.time()
            if wait <= 0:
                return None
            if self._retrying:
                wait = min(wait, max(self._retrying[0][0] - now, 1) / 1000)
            self._changed.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def ack(self, delivery: Delivery) -> None:
        if self._in_flight.pop(delivery.id, None) is not None:
            self._events -= len(delivery.events)

    async def retry(self, delivery: Delivery, attempt: Delivery, due_ms: int) -> None:
        self._in_flight.pop(delivery.id, None)
        heapq.heappush(self._retrying, (due_ms, next(self._seq), attempt))
        self._changed.set()

    async def dead_letter(self, delivery: Delivery, letter: DeadLetter) -> None:
        if self._in_flight.pop(delivery.id, None) is not None:
            self._events -= len(delivery.events)
        letters = self._dead.setdefault(delivery.app_id, deque(maxlen=self._dead_letter_limit))
        letters.append(letter)

    async def dead_letters(self, app_id: str, limit: int) -> list[DeadLetter]:
        return list(itertools.islice(self._dead.get(app_id, ()), limit))

    async def replay(self, app_id: str, ids: Collection[str] | None) -> int:
        letters = self._dead.get(app_id)
        if not letters:
            return 0
        chosen = [letter for letter in letters if ids is None or letter.delivery.id in ids]
        kept = [letter for letter in letters if not (ids is None or letter.delivery.id in ids)]
        letters.clear()
        letters.extend(kept)
        return await self.push([letter.delivery.replayed() for letter in chosen])

    async def is_drained(self) -> bool:
        return not (self._ready or self._retrying or self._in_flight)
