"""relay inside the test's own event loop: the aiohttp app and its listener on an ephemeral loopback port.

`start_in_process(config)` is the one place tests build and start an in-process server; `config.transport`
picks the lean transport or aiohttp's. The `relay_server` fixture (tests.support.fixtures) runs every test
that uses it once per transport in TRANSPORTS. Tests that need signals or a second process start
`relay serve` instead (tests.support.relay.start_relay).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from aiohttp import web

from relay.adapters.base import Adapter
from relay.app import NODE_KEY
from relay.config import AppConfig, Config
from relay.node import Node
from relay.protocol.ids import AppId
from relay.server import Server, start_server
from tests.integration.wire import Client, connect, ws_url

from .timeouts import scaled

# Every transport `relay serve --transport` offers; in-process suites run once on each.
TRANSPORTS: Final = ("lean", "aiohttp")

# The credentials of tests.support.relay.DEFAULT_APP; the Python SDK refuses app ids that are not all digits.
APP: Final = AppConfig(id=AppId("1001"), key="app-key", secret="app-secret")


@dataclass
class RelayServer:
    """One running relay; stop() is the graceful shutdown `relay serve` runs on SIGTERM."""

    app: web.Application
    config: Config
    running: Server
    stopped: bool = False

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def node(self) -> Node:
        return self.app[NODE_KEY]

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, key: str = APP.key, query: str | None = None, path: str = "") -> str:
        """The URL pusher-js opens for app `key` (or one with `query` as its query string)."""
        if query is None:
            return ws_url(self.port, key, path=path)
        return ws_url(self.port, key, query=query, path=path)

    async def connect(self, key: str = APP.key, origin: str | None = None) -> Client:
        return await connect(self.ws_url(key), origin)

    async def stop(self) -> None:
        """Close every connection with 4200 and the port; safe to call twice."""
        if not self.stopped:
            self.stopped = True
            await self.running.stop()


async def start_in_process(config: Config, adapter: Adapter | None = None) -> RelayServer:
    """Start relay as `relay serve` would for `config` (without signals or workers), in this event loop.

    `adapter` replaces the one config.redis would choose. The caller must stop() the server.
    """
    running = await start_server(config, adapter)
    return RelayServer(running.app, config, running)


def server_config(*apps: AppConfig, transport: str, **settings: Any) -> Config:
    """A config on 127.0.0.1:0 serving `apps` (default APP), `settings` overriding Config's fields.

    Shutdown has no grace period (nothing asks /ready in between), closes every connection at once (no paced
    drain window) and waits briefly for them, so that stopping a server at teardown costs milliseconds; tests
    of the grace period or the paced drain set shutdown_grace or drain_window themselves.
    """
    config = Config(
        host="127.0.0.1",
        port=0,
        apps=apps or (APP,),
        transport=transport,
        shutdown_timeout=scaled(2.0),
        shutdown_grace=0.0,
        drain_window=0.0,
    )
    return replace(config, **settings)


class RelayServerFactory(Protocol):
    async def __call__(self, *apps: AppConfig, **settings: Any) -> RelayServer: ...
