"""Console: one node's tap, open pages, figures and (with Redis) cluster relay, with their lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, Final

from relay.config import Config
from relay.console.figures import FigureSampler, add_figures
from relay.console.pages import ConsolePages, LivePage
from relay.node import Node
from relay.protocol.channels import is_presence
from relay.protocol.ids import AppId

if TYPE_CHECKING:  # imported when there is Redis: an in-memory server never loads redis-py
    from relay.console.cluster import ConsoleRelay

logger = logging.getLogger(__name__)

# A page lists at most this many occupied channels, and the members of this many presence channels.
MAX_CHANNELS: Final = 200
MAX_PRESENCE_LISTED: Final = 20
MAX_MEMBERS: Final = 100


class Console:
    def __init__(self, node: Node, config: Config) -> None:
        self.node = node
        self.tap = node.metrics.tap
        self.tap.node = self.name = f"{socket.gethostname()}:{config.port}:{os.getpid()}"
        self.pages = ConsolePages(self.tap)
        self._sampler = FigureSampler(node.metrics)
        self._figures: dict[str, Any] = {}
        self._sampling: asyncio.Task[None] | None = None
        self.relay: ConsoleRelay | None = None
        if config.redis is not None:
            from relay.console.cluster import ConsoleRelay  # only deployments with Redis import redis-py

            self.relay = ConsoleRelay(
                config.redis.url, config.redis.prefix, self.name, self.tap, self.pages, self.figures
            )

    def figures(self) -> dict[str, Any]:
        """This node's latest sample."""
        return self._figures

    async def start(self) -> None:
        self._sampling = asyncio.create_task(self._sample(), name="relay-console-figures")
        if self.relay is not None:
            self.relay.start()

    async def close(self) -> None:
        if self._sampling is not None:
            self._sampling.cancel()
            await asyncio.gather(self._sampling, return_exceptions=True)
        if self.relay is not None:
            await self.relay.close()

    async def _sample(self) -> None:
        """Once a second while anyone watches (the tap is on); a sleep and a boolean otherwise."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            if self.tap.active:
                self._figures = self._sampler.sample(loop.time())

    def open_page(self, app_id: str) -> tuple[LivePage, int]:
        """A new page, and the cluster's drop count it starts from."""
        if not self.tap.active:
            self._figures = self._sampler.sample(asyncio.get_running_loop().time())
        return self.pages.open(app_id), self.dropped()

    def dropped(self) -> int:
        """Lines the cluster's taps and relays could not pass on, since they started."""
        return self.tap.dropped + (0 if self.relay is None else self.relay.dropped)

    async def status(self, page: LivePage, dropped_before: int) -> dict[str, Any]:
        """What a page shows besides the log: figures and channels of the whole cluster, and what it missed."""
        samples = [self._figures, *([] if self.relay is None else self.relay.fresh_figures())]
        figures = add_figures(samples, page.app_id)
        status: dict[str, Any] = {"figures": figures, "node": self.name}
        try:
            channels = await self._channels(AppId(page.app_id))
            figures["channels"] = len(channels)
            status["channels"] = channels[:MAX_CHANNELS]
        except Exception as error:  # Redis away: the log and figures still flow
            logger.warning("console: reading channels of app_id=%s failed: %r", page.app_id, error)
            status["channels_error"] = "Cluster state is unavailable (Redis?)"
        status["dropped"] = page.dropped + self.dropped() - dropped_before
        return status

    async def _channels(self, app_id: AppId) -> list[dict[str, Any]]:
        adapter = self.node.adapter
        occupied = await adapter.channels(app_id)
        listed: list[dict[str, Any]] = []
        presence_listed = 0
        for channel, count in sorted(occupied.items()):
            entry: dict[str, Any] = {"name": channel, "subscription_count": count}
            if is_presence(channel) and presence_listed < MAX_PRESENCE_LISTED and len(listed) < MAX_CHANNELS:
                presence_listed += 1
                members = await adapter.members(app_id, channel)
                entry["user_count"] = len(members)
                entry["members"] = list(members)[:MAX_MEMBERS]
            listed.append(entry)
        return listed
