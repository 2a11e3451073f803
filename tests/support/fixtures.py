"""pytest fixtures over tests.support, registered for every test folder by tests/conftest.py
(`pytest_plugins = ["tests.support.fixtures"]`).

In-process relay: `relay_server(*apps, **settings)` starts servers in the test's event loop. Its `transport` is
parametrized over TRANSPORTS (ids `lean` and `aiohttp`) and its tests run on the asyncio and uvloop loops
(pytest_asyncio_loop_factories), so each such test runs four times. A module pins one transport by defining its
own `transport` fixture. `server`, `http`, `api` and `sdk` build on it. Subprocesses (`relay serve`,
redis-server, Caddy, Node): every process a fixture starts is stopped by PID at teardown, whether the test
passed or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import uvloop

from relay.config import AppConfig
from tests.integration.wire import Api

from .caddy import CaddyProcess, start_caddy
from .inprocess import APP, TRANSPORTS, RelayServer, RelayServerFactory, server_config, start_in_process
from .node import NodeClient, start_node
from .redis import RedisProcess, start_redis
from .redis_cluster import RedisClusterProcesses, start_redis_cluster
from .relay import RelayProcess, start_relay


class RelayFactory(Protocol):
    def __call__(
        self,
        config: str | Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        config_file: bool = True,
    ) -> RelayProcess: ...


class CaddyFactory(Protocol):
    def __call__(self, upstream_port: int) -> CaddyProcess: ...


class NodeFactory(Protocol):
    async def __call__(self, script: Path, params: Mapping[str, Any], name: str | None = None) -> NodeClient: ...


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh redis-server on a free port; `.url` for clients."""
    process = start_redis(tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisProcess | RedisClusterProcesses]:
    """A fresh redis-server, then a fresh three-primary Redis Cluster: the test runs on each; `.url` for relay."""
    backend = start_redis_cluster(tmp_path) if request.param == "redis-cluster" else start_redis(tmp_path)
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[RelayFactory]:
    """Starts `relay serve` processes (tests.support.relay.start_relay); all are stopped at teardown."""
    started: list[RelayProcess] = []

    def start(
        config: str | Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        config_file: bool = True,
    ) -> RelayProcess:
        workdir = tmp_path / f"relay-{len(started)}"
        process = start_relay(config, extra_args, env, workdir=workdir, config_file=config_file)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture
def caddy_factory(tmp_path: Path) -> Iterator[CaddyFactory]:
    """Starts Caddy reverse proxies in front of a loopback port; all are stopped at teardown."""
    started: list[CaddyProcess] = []

    def start(upstream_port: int) -> CaddyProcess:
        process = start_caddy(upstream_port, workdir=tmp_path / f"caddy-{len(started)}")
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture
async def node_factory() -> AsyncIterator[NodeFactory]:
    """Starts Node client scripts; all are stopped at teardown."""
    started: list[NodeClient] = []

    async def start(script: Path, params: Mapping[str, Any], name: str | None = None) -> NodeClient:
        client = await start_node(script, params, name)
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in reversed(started):
            await client.stop()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Tests with an in-process server run on both event loops: `relay serve` runs on uvloop, whose transports
    differ from asyncio's (set_protocol, types), and asyncio's runs where uvloop has no wheel."""
    if "relay_server" in getattr(item, "fixturenames", ()):
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(params=TRANSPORTS, ids=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The transport in-process servers use: each test runs once per transport."""
    name: str = request.param
    return name


@pytest.fixture
async def relay_server(transport: str) -> AsyncIterator[RelayServerFactory]:
    """Starts in-process relays on `transport` (apps default to APP); all are stopped at teardown."""
    started: list[RelayServer] = []

    async def start(*apps: AppConfig, **settings: Any) -> RelayServer:
        settings.setdefault("transport", transport)  # a test comparing both transports names one itself
        started.append(await start_in_process(server_config(*apps, **settings)))
        return started[-1]

    try:
        yield start
    finally:
        for server in reversed(started):
            await server.stop()


@pytest.fixture
async def server(relay_server: RelayServerFactory) -> RelayServer:
    """One in-process server with the default app."""
    return await relay_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(server: RelayServer, http: aiohttp.ClientSession) -> Api:
    """Signed HTTP API calls to `server`."""
    return Api(http, server.port)


@pytest.fixture
def sdk(api: Api) -> Any:
    """The official `pusher` SDK for the default app, pointed at `server`."""
    return api.sdk(APP.id, APP.key, APP.secret)
