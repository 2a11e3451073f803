"""Heartbeat: one node's identity in Redis and the one timer that keeps it alive there.

Every node_timeout/3 each member beats: it refreshes this node's liveness keys and takes over what nodes
whose keys expired left behind (the adapter sweeps their cluster state and reports lost members and
channels; the webhook store puts their in-flight deliveries back in the shared queue). Members come and
go with their owners; the timer runs while there is at least one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeAlias

logger = logging.getLogger(__name__)

Beat: TypeAlias = Callable[[], Awaitable[None]]


def new_node_id() -> str:
    return secrets.token_hex(6)


class Heartbeat:
    def __init__(self, node_id: str | None, node_timeout: float) -> None:
        self.node_id = node_id or new_node_id()
        self.node_timeout = node_timeout  # a node silent this long is lost
        self.interval = max(node_timeout / 3, 0.05)
        self._members: list[Beat] = []
        self._timer: asyncio.Task[None] | None = None
        self._beating: dict[Beat, asyncio.Task[None]] = {}  # each member's beat in progress

    def join(self, beat: Beat) -> None:
        """Call `beat` on every tick from now on (it handles its own failures)."""
        self._members.append(beat)
        if self._timer is None:
            self._timer = asyncio.create_task(self._run(), name=f"relay-heartbeat-{self.node_id}")

    async def leave(self, beat: Beat) -> None:
        """Stop calling `beat` (a beat in progress is cancelled); the timer stops with its last member."""
        if beat in self._members:
            self._members.remove(beat)
        running = self._beating.pop(beat, None)
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        if not self._members and self._timer is not None:
            timer, self._timer = self._timer, None
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
            self._beating.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            # Side by side: a member waiting on a slow Redis does not delay the other's beat.
            for beat in self._members:
                self._beating[beat] = asyncio.create_task(self._call(beat))
            await asyncio.gather(*self._beating.values(), return_exceptions=True)
            self._beating.clear()

    async def _call(self, beat: Beat) -> None:
        try:
            await beat()
        except Exception:
            logger.exception("heartbeat of node %s: a member failed", self.node_id)
