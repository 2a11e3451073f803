"""pytest fixtures over tests.support. Import them into a conftest.py, e.g.

    from tests.support.fixtures import redis_process, relay_factory  # noqa: F401

or register the module once in the top-level tests/conftest.py:
`pytest_plugins = ["tests.support.fixtures"]`. Every process a fixture starts is stopped by PID
at teardown, whether the test passed or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from .caddy import CaddyProcess, start_caddy
from .node import NodeClient, start_node
from .redis import RedisProcess, start_redis
from .relay import RelayProcess, start_relay


class RelayFactory(Protocol):
    def __call__(
        self,
        config: str | Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
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


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[RelayFactory]:
    """Starts relay processes (config as TOML text or dict); all are stopped at teardown."""
    started: list[RelayProcess] = []

    def start(
        config: str | Mapping[str, object] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> RelayProcess:
        workdir = tmp_path / f"relay-{len(started)}"
        process = start_relay(config, extra_args, env, workdir=workdir)
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
