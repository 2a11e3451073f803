"""The server factory: relay's aiohttp application and, with the lean transport, the listener in front of it.

create_server(config) → Server: build_app (node, HTTP API, aiohttp routes) and, on start(), the
listening socket: aiohttp's own (`transport = "aiohttp"`) or the lean listener, which serves
WebSockets and signed publishes itself and hands every other request to the same aiohttp app.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from relay.adapters.base import Adapter
from relay.app import build_app
from relay.config import Config
from relay.drain import drain
from relay.transport.handover import AiohttpHandover
from relay.transport.listener import LeanListener

logger = logging.getLogger(__name__)

BACKLOG = 4096


class Server:
    """One relay server: its aiohttp app, and once started its runner and (lean) listening socket."""

    __slots__ = ("app", "config", "http_api", "lean", "listener", "node", "runner")

    def __init__(self, config: Config, adapter: Adapter | None = None) -> None:
        built = build_app(config, adapter)
        self.config = config
        self.app = built.app
        self.node = built.node
        self.http_api = built.http_api
        self.runner = web.AppRunner(
            self.app, handle_signals=False, shutdown_timeout=config.shutdown_timeout, access_log=None
        )
        self.listener: asyncio.Server | None = None  # the lean transport's listening socket(s)
        self.lean: LeanListener | None = None

    async def start(self, reuse_port: bool = False) -> None:
        """Listen on config.host:config.port; SO_REUSEPORT when `reuse_port` (several workers, one port)."""
        config = self.config
        await self.runner.setup()
        if config.transport == "aiohttp":
            site = web.TCPSite(self.runner, config.host, config.port, reuse_port=reuse_port or None, backlog=BACKLOG)
            await site.start()
            return
        lean = LeanListener(
            self.node,
            config.path,
            config.max_outbound_buffer,
            AiohttpHandover(self.runner),
            self.http_api,
            config.max_request_size,
        )
        loop = asyncio.get_running_loop()
        try:
            self.listener = await loop.create_server(
                lean, config.host or None, config.port, reuse_port=reuse_port or None, backlog=BACKLOG
            )
        except BaseException:
            await self.runner.cleanup()
            raise
        self.lean = lean

    @property
    def port(self) -> int:
        if self.listener is not None and self.listener.sockets:
            port: int = self.listener.sockets[0].getsockname()[1]
            return port
        return self.runner.addresses[0][1] if self.runner.addresses else self.config.port

    async def stop(self) -> None:
        """Readiness false and new connections refused with 4100; after the grace period the connections
        are closed with 4200 spread over the drain window (relay.drain); then the port closes, state is
        cleaned up and the server stops."""
        node = self.node
        node.accepting = False
        # The port stays open, so load balancers see /ready answer 503 (and new WebSocket clients get
        # 4100) rather than a refused connection, and stop sending clients here before the drain.
        await asyncio.sleep(self.config.shutdown_grace)
        await drain(node, self.config.drain_window, self.config.webhook.leave_delay)
        node.close_connections()
        lean = self.lean
        if lean is not None and not await lean.drain(self.config.shutdown_timeout):
            # Clients that never read our close frame: their transports would never finish closing.
            lean.abort_connections()
            await lean.drain(1.0)
        if self.listener is not None:
            self.listener.close()
        await self.runner.cleanup()
        if self.listener is not None:
            try:
                await asyncio.wait_for(self.listener.wait_closed(), 1.0)
            except TimeoutError:
                pass


def create_server(config: Config, adapter: Adapter | None = None) -> Server:
    """relay's one server factory: the aiohttp app and, for the lean transport, its listener."""
    return Server(config, adapter)


async def start_server(config: Config, adapter: Adapter | None = None, reuse_port: bool = False) -> Server:
    """create_server(config, adapter) started."""
    server = create_server(config, adapter)
    await server.start(reuse_port)
    return server
