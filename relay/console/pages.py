"""The open console pages of this node: each a bounded queue of log lines for one app, drained by its stream."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from relay.console.tap import ConsoleEvent, ConsoleTap

# Log lines a page may have waiting; beyond this it drops new ones and says so.
PAGE_QUEUE_LIMIT: Final = 2_000


class LivePage:
    """One open stream. `put` never blocks: a page that cannot keep up loses lines and counts them."""

    def __init__(self, app_id: str, limit: int = PAGE_QUEUE_LIMIT) -> None:
        self.app_id = app_id
        self.dropped = 0
        self._limit = limit
        self._queue: deque[ConsoleEvent] = deque()
        self._ready = asyncio.Event()

    def put(self, event: ConsoleEvent) -> None:
        if event.app_id != self.app_id:
            return
        if len(self._queue) >= self._limit:
            self.dropped += 1
            return
        self._queue.append(event)
        self._ready.set()

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def take(self) -> list[ConsoleEvent]:
        events = list(self._queue)
        self._queue.clear()
        self._ready.clear()
        return events

    async def wait(self, timeout: float) -> None:
        """Until a line arrives or `timeout` seconds pass."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            pass


class ConsolePages:
    """Every page open on this node; attached to the tap while there is one, and fed by the cluster relay."""

    def __init__(self, tap: ConsoleTap) -> None:
        self._tap = tap
        self.pages: set[LivePage] = set()

    def open(self, app_id: str) -> LivePage:
        page = LivePage(app_id)
        self.pages.add(page)
        self._tap.attach(self)
        return page

    def close(self, page: LivePage) -> None:
        self.pages.discard(page)
        if not self.pages:
            self._tap.detach(self)

    def put(self, event: ConsoleEvent) -> None:
        for page in self.pages:
            page.put(event)
