"""In-process relay servers for integration tests: `create_app(config)` on an ephemeral loopback port.

`relay_server(*apps, **settings)` starts one (stopped at teardown); `api` signs requests with the
official `pusher` SDK and sends them with aiohttp so a test sees the exact status and JSON body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.app import NODE_KEY, create_app
from relay.config import AppConfig, Config
from relay.node import Node
from tests.integration.wire import Api, Client, connect, ws_url

# The Python SDK refuses app ids that are not all digits.
APP = AppConfig(id="1001", key="app-key", secret="app-secret")


@dataclass
class RelayServer:
    app: web.Application
    config: Config
    server: TestServer

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port

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


@pytest.fixture
async def relay_server() -> AsyncIterator[RelayServerFactory]:
    started: list[RelayServer] = []

    async def start(*apps: AppConfig, **settings: Any) -> RelayServer:
        config = Config(host="127.0.0.1", port=0, apps=apps or (APP,))
        config = replace(config, **settings)
        app = create_app(config)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        started.append(RelayServer(app, config, server))
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
