"""Real relay servers on ephemeral loopback ports, started with relay.server.start_server, once per transport.

The fixtures have the names and shapes of tests/integration's (`relay_server`, `server`, `http`, `api`,
`sdk`), so protocol tests written for the aiohttp endpoint run unchanged against the lean transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiohttp
import pytest
import uvloop
from aiohttp import web

from relay.app import NODE_KEY, create_app
from relay.config import AppConfig, Config
from relay.node import Node
from relay.server import RunningServer, start_server
from tests.integration.wire import Api, Client, connect, ws_url

APP = AppConfig(id="1001", key="app-key", secret="app-secret")
TRANSPORTS = ("lean", "aiohttp")


@dataclass
class Stopper:
    """`server.server.close()` as with aiohttp's TestServer: a graceful stop (4200 to every client)."""

    running: RunningServer
    stopped: bool = False

    async def close(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.running.stop()


@dataclass
class RelayServer:
    app: web.Application
    config: Config
    server: Stopper

    @property
    def port(self) -> int:
        return self.server.running.port

    @property
    def node(self) -> Node:
        return self.app[NODE_KEY]

    def ws_url(self, key: str = APP.key, query: str | None = None, path: str = "") -> str:
        if query is None:
            return ws_url(self.port, key, path=path)
        return ws_url(self.port, key, query=query, path=path)

    async def connect(self, key: str = APP.key, origin: str | None = None) -> Client:
        return await connect(self.ws_url(key), origin)


class RelayServerFactory(Protocol):
    async def __call__(self, *apps: AppConfig, **settings: Any) -> RelayServer: ...


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Both loops: `relay serve` runs on uvloop, whose transports differ from asyncio's (set_protocol, types)."""
    if item.path.name == "test_transport_cli.py":
        return {"asyncio": asyncio.new_event_loop}  # the servers there are subprocesses, on uvloop already
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def relay_server(transport: str) -> AsyncIterator[RelayServerFactory]:
    started: list[RelayServer] = []

    async def start(*apps: AppConfig, **settings: Any) -> RelayServer:
        config = Config(host="127.0.0.1", port=0, apps=apps or (APP,), transport=transport, shutdown_timeout=2.0)
        config = replace(config, **settings)
        app = create_app(config)
        running = await start_server(config, app)
        started.append(RelayServer(app, config, Stopper(running)))
        return started[-1]

    try:
        yield start
    finally:
        for relay in reversed(started):
            await relay.server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server(relay_server: RelayServerFactory) -> RelayServer:
    """One server with the default app."""
    return await relay_server()


@pytest.fixture
def api(server: RelayServer, http: aiohttp.ClientSession) -> Api:
    return Api(http, server.port)


@pytest.fixture
def sdk(api: Api) -> Any:
    return api.sdk(APP.id, APP.key, APP.secret)
