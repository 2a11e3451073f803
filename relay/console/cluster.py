"""ConsoleRelay: console traffic between the nodes of a cluster, over one Redis pub/sub channel.

A node with a console page open says so once a second ("watch"). Every other node that hears it
attaches a bounded outbox to its tap for a few seconds and publishes what it saw ("events", batched)
and its figures ("figures", once a second). Nobody watching: nothing is published, and the tap stays
off on every node. A dedicated small client, apart from the adapter's links: console traffic never
queues behind fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.backoff import Backoff
from relay.console.pages import ConsolePages
from relay.console.tap import ConsoleEvent, ConsoleTap, decode_object

logger = logging.getLogger(__name__)

WATCH_INTERVAL: Final = 1.0
# A node keeps forwarding this long after the last "watch" it heard.
WATCH_TTL: Final = 3.0
FLUSH_INTERVAL: Final = 0.2
# Events waiting for the next flush; beyond this they are dropped and counted.
OUTBOX_LIMIT: Final = 2_000
# Figures older than this belong to a node that stopped answering.
FIGURES_TTL: Final = 3.0


class Outbox:
    """This node's events for consoles on other nodes, bounded."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.events: list[ConsoleEvent] = []
        self.dropped = 0
        self._limit = limit

    def put(self, event: ConsoleEvent) -> None:
        if len(self.events) >= self._limit:
            self.dropped += 1
            return
        self.events.append(event)

    def take(self) -> list[ConsoleEvent]:
        events, self.events = self.events, []
        return events


class ConsoleRelay:
    def __init__(
        self,
        url: str,
        prefix: str,
        node: str,
        tap: ConsoleTap,
        pages: ConsolePages,
        figures: Callable[[], dict[str, Any]],
    ) -> None:
        self._url = url
        self._channel = f"{prefix}#console".encode()
        self._node = node
        self._tap = tap
        self._pages = pages
        self._figures = figures
        self._outbox = Outbox()
        self._watched_until = 0.0
        self._forwarding = False
        self._next_watch = 0.0
        self._next_flush = 0.0
        self._next_figures = 0.0
        # node -> (monotonic time received, its figures); node -> its outbox drops so far
        self.remote_figures: dict[str, tuple[float, dict[str, Any]]] = {}
        self.remote_dropped: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relay-console-relay")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._tap.detach(self._outbox)

    def fresh_figures(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [figures for at, figures in self.remote_figures.values() if now - at < FIGURES_TTL]

    @property
    def dropped(self) -> int:
        """Lines other nodes could not forward, since they started."""
        return sum(self.remote_dropped.values())

    async def _run(self) -> None:
        backoff = Backoff(first=0.2, cap=5.0)
        while True:
            try:
                await self._session(backoff)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                delay = backoff.failed()
                logger.warning("console: Redis link lost (%r); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
            except Exception:
                logger.exception("console: relay failed")
                await asyncio.sleep(backoff.failed())

    async def _session(self, backoff: Backoff) -> None:
        client: Redis = Redis.from_url(self._url, max_connections=2, socket_connect_timeout=5.0)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            backoff.reset()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=FLUSH_INTERVAL)
                if message is not None and message.get("type") == "message":
                    self._received(message["data"])
                await self._tick(client)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # untyped before redis-py 8
            await client.aclose()

    async def _tick(self, client: Redis) -> None:
        now = time.monotonic()
        if self._pages.pages and now >= self._next_watch:
            self._next_watch = now + WATCH_INTERVAL
            await self._publish(client, {"t": "watch"})
        if self._forwarding and now >= self._watched_until:
            self._forwarding = False
            self._tap.detach(self._outbox)  # nobody is watching any more
        if not self._forwarding:
            return
        if now >= self._next_flush:
            self._next_flush = now + FLUSH_INTERVAL
            events = self._outbox.take()
            if events:
                payload = [event.as_json() for event in events]
                await self._publish(client, {"t": "events", "events": payload, "dropped": self._dropped()})
        if now >= self._next_figures:
            self._next_figures = now + WATCH_INTERVAL
            await self._publish(client, {"t": "figures", "figures": self._figures(), "dropped": self._dropped()})

    def _dropped(self) -> int:
        """What this node could not forward: over its tap's budget, or beyond its outbox."""
        return self._tap.dropped + self._outbox.dropped

    async def _publish(self, client: Redis, message: dict[str, Any]) -> None:
        await client.publish(self._channel, orjson.dumps({**message, "node": self._node}))

    def _received(self, payload: bytes) -> None:
        message = decode_object(payload)
        if message is None:
            return
        node = message.get("node")
        if not isinstance(node, str) or node == self._node:
            return
        kind = message.get("t")
        dropped = message.get("dropped")
        if isinstance(dropped, int):
            self.remote_dropped[node] = dropped
        if kind == "watch":
            if not self._forwarding:
                self._forwarding = True
                self._tap.attach(self._outbox)
            self._watched_until = time.monotonic() + WATCH_TTL
        elif kind == "events" and isinstance(message.get("events"), list):
            for raw in message["events"]:
                event = ConsoleEvent.from_json(raw, node)
                if event is not None:
                    self._pages.put(event)
        elif kind == "figures" and isinstance(message.get("figures"), dict):
            self.remote_figures[node] = (time.monotonic(), message["figures"])
