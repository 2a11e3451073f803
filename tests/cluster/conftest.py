"""A real cluster for black-box tests: one redis-server and N `relay serve --redis-url` subprocesses.

`cluster` (three nodes, default settings) and `cluster_factory` (any node count, node timeout, app
settings or extra TOML) are function-scoped: every test starts from an empty Redis and fresh nodes, so a
test may SIGKILL a node or Redis. `shared_cluster` keeps one cluster per test module for tests that kill
nothing and use names of their own (`unique()`). Nodes start in parallel, then each must answer `GET /up`.

Helpers on Cluster: `connect(i)` (a tests/integration/wire.py Client on node i, closed at teardown),
`api(i)` (signed HTTP calls to node i), `request(i, method, *args)` (any request the official `pusher`
SDK builds, e.g. "trigger", "channels_info", "users_info", "terminate_user_connections", sent to node i),
`trigger(i, ...)`, `auth(...)` / `subscribe(client, channel, ...)` (private and presence signatures from
the SDK's own `authenticate`).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pusher  # type: ignore[import-untyped]
import pytest

from tests.integration.wire import Api, ApiResponse, Client, Frame, connect, ws_url
from tests.support.ports import free_port
from tests.support.redis import RedisProcess, start_redis
from tests.support.redis_cluster import RedisClusterProcesses, start_redis_cluster
from tests.support.relay import RelayProcess, to_toml
from tests.support.timeouts import STARTUP_TIMEOUT, scaled

# The Python SDK requires a numeric app id. Client events on, no rate limit: tests send bursts.
APP: Mapping[str, Any] = {
    "id": "1001",
    "key": "cluster-key",
    "secret": "cluster-secret",
    "enable_client_events": True,
    "client_event_rate": 0,
}

# Seconds of heartbeat silence before a node is presumed dead. Short so fault tests stay quick, yet
# several heartbeats long (they come every node_timeout/3) so a loaded machine does not evict live nodes.
DEFAULT_NODE_TIMEOUT = scaled(4.0)


@dataclass
class ClusterNode:
    """One relay node: `process` can be killed (SIGKILL), stopped (SIGTERM) or restarted on its port."""

    index: int
    process: RelayProcess

    @property
    def port(self) -> int:
        return self.process.port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http_url(self) -> str:
        return self.process.http_url

    def ws_url(self, key: str = str(APP["key"])) -> str:
        return ws_url(self.port, key)

    def kill(self) -> int | None:
        return self.process.kill()

    def stop(self) -> int | None:
        return self.process.stop()

    def restart(self) -> None:
        self.process.restart()


RedisBackend = RedisProcess | RedisClusterProcesses  # one redis-server, or a three-primary Redis Cluster


@dataclass
class Cluster:
    redis: RedisBackend
    nodes: list[ClusterNode]
    http: aiohttp.ClientSession
    app: Mapping[str, Any]
    prefix: str
    clients: list[Client] = field(default_factory=list)

    @property
    def app_id(self) -> str:
        return str(self.app["id"])

    @property
    def key(self) -> str:
        return str(self.app["key"])

    @property
    def secret(self) -> str:
        return str(self.app["secret"])

    async def connect(self, node: int) -> Client:
        """A Pusher WS client on node `node`, after connection_established; closed at teardown."""
        client = await connect(self.nodes[node].ws_url(self.key))
        self.clients.append(client)
        return client

    def api(self, node: int) -> Api:
        return Api(self.http, self.nodes[node].port)

    def sdk(self, node: int) -> Any:
        """The official SDK pointed at node `node` (its blocking calls: prefer request())."""
        return self.api(node).sdk(self.app_id, self.key, self.secret)

    async def request(self, node: int, method: str, *args: Any, **kwargs: Any) -> ApiResponse:
        """Build request `method` (a pusher.Pusher request method) with the SDK, send it to node `node`."""
        sdk = self.sdk(node)
        request = getattr(sdk._pusher_client, method).make_request(*args, **kwargs)
        return await self.api(node).send(request)

    async def trigger(
        self, node: int, channels: str | list[str], event: str, data: Any, socket_id: str | None = None
    ) -> ApiResponse:
        response = await self.request(node, "trigger", channels, event, data, socket_id)
        assert response.status == 200, f"trigger on node {node}: {response}"
        return response

    def auth(
        self, channel: str, socket_id: str, user_id: str | None = None, user_info: Mapping[str, Any] | None = None
    ) -> dict[str, str]:
        """{"auth", ["channel_data"]} for a private or presence channel, signed by the SDK."""
        custom: dict[str, Any] | None = None
        if user_id is not None:
            custom = {"user_id": user_id, "user_info": dict(user_info or {})}
        signed: dict[str, str] = pusher.Pusher(app_id=self.app_id, key=self.key, secret=self.secret).authenticate(
            channel=channel, socket_id=socket_id, custom_data=custom
        )
        return signed

    async def subscribe(
        self, client: Client, channel: str, user_id: str | None = None, user_info: Mapping[str, Any] | None = None
    ) -> Frame:
        """Subscribe (signing private-/presence- channels) and return subscription_succeeded."""
        if channel.startswith(("private-", "presence-")):
            signed = self.auth(channel, client.socket_id, user_id, user_info)
            return await client.subscribed(channel, signed["auth"], signed.get("channel_data"))
        return await client.subscribed(channel)

    async def close_clients(self) -> None:
        for client in self.clients:
            try:
                await client.close()
            except Exception:  # teardown: a node may be dead already
                pass
        self.clients.clear()


class ClusterFactory(Protocol):
    async def __call__(
        self,
        nodes: int = 3,
        node_timeout: float = DEFAULT_NODE_TIMEOUT,
        app: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        redis_cluster: bool = False,
    ) -> Cluster: ...


def child_env() -> dict[str, str]:
    """This environment minus RELAY_*/REVERB_* (so a developer's shell cannot change a test), unbuffered."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "REVERB_")) or k.startswith("RELAY_TEST_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def node_config(
    redis: RedisBackend, prefix: str, node_timeout: float, app: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[str, Any]:
    """TOML for one node; the Redis URL itself goes on the command line (`--redis-url`)."""
    document: dict[str, Any] = {"redis": {"prefix": prefix, "node_timeout": node_timeout}, "apps": [dict(app)]}
    for key, value in config.items():
        if isinstance(value, Mapping) and isinstance(document.get(key), Mapping):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return document


def spawn_node(
    workdir: Path, redis: RedisBackend, document: Mapping[str, Any], extra_args: Sequence[str]
) -> RelayProcess:
    """Start a node without waiting for it (callers start several, then wait for each)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"relay-{port}.toml"
    config_path.write_text(to_toml(document))
    argv = ["--redis-url", redis.url, *extra_args]
    return RelayProcess(port, config_path, argv, child_env(), workdir / f"relay-{port}.log")


def start_processes(
    workdir: Path,
    nodes: int = 3,
    node_timeout: float = DEFAULT_NODE_TIMEOUT,
    app: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    redis_cluster: bool = False,
) -> tuple[RedisBackend, list[RelayProcess], dict[str, Any], str]:
    """redis-server (or a Redis Cluster), then `nodes` relay nodes started together; returns once every
    node answers GET /up.

    On a failure everything started so far is stopped before the error propagates.
    """
    redis: RedisBackend = start_redis_cluster(workdir) if redis_cluster else start_redis(workdir)
    relays: list[RelayProcess] = []
    try:
        prefix = f"relay-test-{uuid.uuid4().hex[:8]}"
        merged_app = {**APP, **(app or {})}
        document = node_config(redis, prefix, node_timeout, merged_app, config or {})
        for index in range(nodes):
            relays.append(spawn_node(workdir / f"node-{index}", redis, document, extra_args))
        for relay in relays:
            relay.wait_ready(STARTUP_TIMEOUT)
    except BaseException:
        stop_processes(redis, relays)
        raise
    return redis, relays, merged_app, prefix


def stop_processes(redis: RedisBackend, relays: Sequence[RelayProcess]) -> None:
    for relay in reversed(relays):
        relay.stop()
    redis.stop()
    for relay in relays:
        _print_log_on_failure(relay)


@pytest.fixture
async def cluster_factory(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Starts clusters (each its own redis-server, or with `redis_cluster` its own three-primary Redis Cluster);
    all processes are stopped at teardown."""
    started: list[tuple[Cluster, RedisBackend, list[RelayProcess]]] = []
    async with aiohttp.ClientSession() as http:

        async def start(
            nodes: int = 3,
            node_timeout: float = DEFAULT_NODE_TIMEOUT,
            app: Mapping[str, Any] | None = None,
            config: Mapping[str, Any] | None = None,
            extra_args: Sequence[str] = (),
            redis_cluster: bool = False,
        ) -> Cluster:
            workdir = tmp_path / f"cluster-{len(started)}"
            redis, relays, merged_app, prefix = start_processes(
                workdir, nodes, node_timeout, app, config, extra_args, redis_cluster
            )
            cluster = Cluster(
                redis=redis,
                nodes=[ClusterNode(index, relay) for index, relay in enumerate(relays)],
                http=http,
                app=merged_app,
                prefix=prefix,
            )
            started.append((cluster, redis, relays))
            return cluster

        try:
            yield start
        finally:
            for cluster, redis, relays in reversed(started):
                await cluster.close_clients()
                stop_processes(redis, relays)


def _print_log_on_failure(process: RelayProcess) -> None:
    # Shown by pytest only for failing tests (captured output); cheap insight into what a node logged.
    tail = process.log_tail(20)
    if tail:
        print(f"--- {process.name} log tail ---\n{tail}", file=sys.stderr)


@pytest.fixture
async def cluster(cluster_factory: ClusterFactory) -> Cluster:
    """Three relay nodes sharing one fresh redis-server; default app APP. For tests that kill or stop parts."""
    return await cluster_factory()


@pytest.fixture(scope="module", params=["redis", "redis-cluster"])
def module_processes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RedisBackend, list[RelayProcess], dict[str, Any], str]]:
    """The shared suite runs twice: on one redis-server, and on a three-primary Redis Cluster."""
    workdir = tmp_path_factory.mktemp("shared-cluster")
    redis, relays, app, prefix = start_processes(workdir, redis_cluster=request.param == "redis-cluster")
    try:
        yield redis, relays, app, prefix
    finally:
        stop_processes(redis, relays)


@pytest.fixture
async def shared_cluster(
    module_processes: tuple[RedisBackend, list[RelayProcess], dict[str, Any], str],
) -> AsyncIterator[Cluster]:
    """Three nodes and one Redis shared by every test of a module (starting them costs seconds).

    Tests must use channel and user names of their own (`unique()`) and must not kill or stop anything;
    their clients are closed at teardown.
    """
    redis, relays, app, prefix = module_processes
    for relay in relays:
        assert relay.running, f"{relay.name} died during an earlier test:\n{relay.log_tail()}"
    async with aiohttp.ClientSession() as http:
        cluster = Cluster(
            redis=redis,
            nodes=[ClusterNode(index, relay) for index, relay in enumerate(relays)],
            http=http,
            app=app,
            prefix=prefix,
        )
        try:
            yield cluster
        finally:
            await cluster.close_clients()


def unique(stem: str) -> str:
    """A channel or user name no other test uses."""
    return f"{stem}{uuid.uuid4().hex[:10]}"


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


async def barrier(cluster: Cluster, clients: Sequence[Client], channel: str) -> None:
    """Prove that nothing else is queued for `clients` on `channel`: an event triggered on each node in turn
    must be each client's very next frame.

    Anything published earlier on that channel (a duplicate, a late member event) travels ahead of these
    markers: through Redis from another node, or locally on the publishing node, so it would show up here.
    """
    for node in range(len(cluster.nodes)):
        marker = f"barrier-{node}-{uuid.uuid4().hex[:6]}"
        await cluster.trigger(node, channel, "barrier", marker)
        for client in clients:
            frame = await client.recv()
            assert frame == {"event": "barrier", "channel": channel, "data": marker}, (
                f"socket {client.socket_id}: expected barrier {marker} on {channel}, got {frame!r}"
            )
