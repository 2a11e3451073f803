"""Listening sockets for a relay aiohttp application, with either transport, and their graceful stop."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from relay.app import HTTP_API_KEY, NODE_KEY
from relay.config import Config
from relay.drain import drain
from relay.node import Node
from relay.transport.lean import LeanConnection, LeanServer

logger = logging.getLogger(__name__)

BACKLOG = 4096


class RunningServer:
    """What start_server opened: aiohttp's runner, and with the lean transport its asyncio server."""

    __slots__ = ("config", "lean", "listener", "node", "runner")

    def __init__(
        self,
        config: Config,
        runner: web.AppRunner,
        node: Node,
        listener: asyncio.Server | None,
        lean: LeanServer | None,
    ) -> None:
        self.config = config
        self.runner = runner
        self.node = node
        self.listener = listener  # the lean transport's listening socket(s)
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
        timeout = self.config.shutdown_timeout
        # The port stays open, so load balancers see /ready answer 503 (and new WebSocket clients get
        # 4100) rather than a refused connection, and stop sending clients here before the drain.
        await asyncio.sleep(self.config.shutdown_grace)
        await drain(node, self.config.drain_window, self.config.webhook.leave_delay)
        grace = asyncio.ensure_future(asyncio.sleep(0))
        if self.listener is not None and self.lean is not None:
            node.close_connections()
            if not await self.lean.drain(timeout):
                # Clients that never read our close frame: their transports would never finish closing.
                for connection in list(node.connections.values()):
                    if isinstance(connection, LeanConnection):
                        connection.abort()
                await self.lean.drain(1.0)
        else:
            node.close_connections()
        await grace
        if self.listener is not None:
            self.listener.close()
        await self.runner.cleanup()
        if self.listener is not None:
            try:
                await asyncio.wait_for(self.listener.wait_closed(), 1.0)
            except TimeoutError:
                pass


async def start_server(config: Config, app: web.Application, reuse_port: bool = False) -> RunningServer:
    """Serve `app` on config.host:config.port; SO_REUSEPORT when `reuse_port` (several workers, one port)."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout, access_log=None)
    await runner.setup()
    node = app[NODE_KEY]
    if config.transport == "aiohttp":
        site = web.TCPSite(runner, config.host, config.port, reuse_port=reuse_port or None, backlog=BACKLOG)
        await site.start()
        return RunningServer(config, runner, node, None, None)
    http = runner.server
    assert http is not None
    loop = asyncio.get_running_loop()
    lean = LeanServer(
        node, http, config.path, config.max_outbound_buffer, loop, app[HTTP_API_KEY], config.max_request_size
    )
    try:
        listener = await loop.create_server(
            lean, config.host or None, config.port, reuse_port=reuse_port or None, backlog=BACKLOG
        )
    except BaseException:
        await runner.cleanup()
        raise
    return RunningServer(config, runner, node, listener, lean)
