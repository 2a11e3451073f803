"""Adapter fixtures: nodes built on the `local` or the `redis` adapter (on one redis-server, or on a
three-primary Redis Cluster shared by the module's tests, each under a prefix of its own), and a recording
listener.

The listener stands where the Node stands in production. It is the adapter's caller, not a
double of the adapter under test: it records what the adapter hands back (deliveries, lost
members and channels) and holds the snapshot a node would report after an outage.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from relay.adapters.base import Adapter, Envelope, LocalSnapshot, LocalSubscription
from relay.adapters.local import LocalAdapter
from relay.config import RedisConfig
from relay.redis.adapter import RedisAdapter
from tests.support import TIMEOUT, RedisProcess
from tests.support.redis_cluster import RedisClusterProcesses, start_redis_cluster

APP = "1001"
# Short enough that dead-node tests finish in seconds; real deployments use 15 s.
TEST_NODE_TIMEOUT = 1.5


@dataclass
class RecordingListener:
    """A ClusterListener that remembers everything and lets tests await what they expect."""

    name: str
    delivered: list[Envelope] = field(default_factory=list)
    members_lost: list[tuple[str, str, str]] = field(default_factory=list)
    channels_lost: list[tuple[str, str]] = field(default_factory=list)
    members_rejoined: list[tuple[LocalSubscription, bool]] = field(default_factory=list)
    connections: dict[str, int] = field(default_factory=dict)
    subscriptions: dict[tuple[str, str, str], LocalSubscription] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, envelope: Envelope) -> None:
        self.delivered.append(envelope)
        self._changed.set()

    def member_lost(self, app_id: str, channel: str, user_id: str) -> None:
        self.members_lost.append((app_id, channel, user_id))
        self._changed.set()

    def channel_lost(self, app_id: str, channel: str) -> None:
        self.channels_lost.append((app_id, channel))
        self._changed.set()

    def local_snapshot(self) -> LocalSnapshot:
        return LocalSnapshot(dict(self.connections), tuple(self.subscriptions.values()))

    def member_rejoined(self, member: LocalSubscription, removal_announced: bool) -> None:
        self.members_rejoined.append((member, removal_announced))
        self._changed.set()

    def presence_channels(self) -> list[tuple[str, str]]:
        return []

    def heal_members(
        self, app_id: str, channel: str, members: Mapping[str, Any], vanished: Collection[str]
    ) -> set[str]:
        return set()

    def frames(self, channel: str) -> list[bytes]:
        return [e.frame for e in self.delivered if e.channel == channel]

    async def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        """Return as soon as `predicate()` holds; it is checked after every callback."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    if predicate():
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: not within {timeout:.1f}s: {what}") from None


@dataclass
class TestNode:
    """An adapter plus the bookkeeping a real node does around it."""

    __test__ = False  # not a test class, despite the name
    adapter: Adapter
    listener: RecordingListener

    async def connect(self, socket_id: str, app_id: str = APP) -> int:
        count = await self.adapter.add_connection(app_id, socket_id)
        self.listener.connections[app_id] = self.listener.connections.get(app_id, 0) + 1
        return count

    async def subscribe(
        self, channel: str, socket_id: str, user_id: str | None = None, user_info: Any = None, app_id: str = APP
    ) -> tuple[bool, bool]:
        """Join like Node._join; returns (first member anywhere, first subscription anywhere)."""
        first_member = False
        if user_id is not None:
            first_member = await self.adapter.add_member(app_id, channel, socket_id, user_id, user_info)
        occupied_here = not any(k[:2] == (app_id, channel) for k in self.listener.subscriptions)
        self.listener.subscriptions[(app_id, channel, socket_id)] = LocalSubscription(
            app_id, channel, socket_id, user_id, user_info
        )
        if occupied_here:
            self.adapter.channel_occupied_locally(app_id, channel)
        first_subscription = await self.adapter.add_subscription(app_id, channel, socket_id)
        return first_member, first_subscription

    async def unsubscribe(self, channel: str, socket_id: str, app_id: str = APP) -> tuple[bool, bool]:
        """Leave like Node._leave; returns (last member anywhere, last subscription anywhere)."""
        held = self.listener.subscriptions.pop((app_id, channel, socket_id))
        if not any(k[:2] == (app_id, channel) for k in self.listener.subscriptions):
            self.adapter.channel_vacated_locally(app_id, channel)
        last_member = False
        if held.user_id is not None:
            last_member = await self.adapter.remove_member(app_id, channel, socket_id, held.user_id)
        last_subscription = await self.adapter.remove_subscription(app_id, channel, socket_id)
        return last_member, last_subscription

    async def settle(self) -> None:
        """Wait until the adapter receives every channel it was asked to (a no-op in memory)."""
        if isinstance(self.adapter, RedisAdapter):
            await self.adapter.settle()


class NodeFactory(Protocol):
    async def __call__(
        self, name: str = "node", node_timeout: float = TEST_NODE_TIMEOUT, **kwargs: Any
    ) -> TestNode: ...


def redis_config(
    redis: RedisProcess | RedisClusterProcesses, node_timeout: float = TEST_NODE_TIMEOUT, prefix: str = "relay-test"
) -> RedisConfig:
    return RedisConfig(url=redis.url, prefix=prefix, node_timeout=node_timeout)


@pytest.fixture(params=["local", "redis", "redis-cluster"])
def adapter_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def module_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """One Redis Cluster for a module's tests (starting one costs seconds); tests use prefixes of their own."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def make_node(adapter_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[NodeFactory]:
    """Builds started nodes of the parametrized kind; all are closed at teardown."""
    nodes: list[TestNode] = []
    redis: RedisProcess | RedisClusterProcesses | None = None
    if adapter_kind == "redis":
        redis = request.getfixturevalue("redis_process")
    elif adapter_kind == "redis-cluster":
        redis = request.getfixturevalue("module_redis_cluster")
    prefix = f"relay-test-{uuid.uuid4().hex[:8]}"

    async def make(name: str = "node", node_timeout: float = TEST_NODE_TIMEOUT, **kwargs: Any) -> TestNode:
        adapter: Adapter
        if redis is None:
            assert not nodes, "the local adapter is one process: one node"
            adapter = LocalAdapter()
        else:
            adapter = RedisAdapter(redis_config(redis, node_timeout, prefix), node_id=name, **kwargs)
        node = TestNode(adapter, RecordingListener(name))
        await adapter.start(node.listener)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            await node.adapter.close()


@pytest.fixture
async def make_redis_node(redis_process: RedisProcess) -> AsyncIterator[NodeFactory]:
    """Like make_node, always on Redis: for what only a cluster can show."""
    nodes: list[TestNode] = []

    async def make(name: str = "node", node_timeout: float = TEST_NODE_TIMEOUT, **kwargs: Any) -> TestNode:
        adapter = RedisAdapter(redis_config(redis_process, node_timeout), node_id=name, **kwargs)
        node = TestNode(adapter, RecordingListener(name))
        await adapter.start(node.listener)
        assert adapter.connected, f"{name} did not connect to {redis_process.url}"
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            assert isinstance(node.adapter, RedisAdapter)
            await node.adapter.close()
