"""Fault tests for the Redis cluster (issue 4 §3 and §5), black-box: redis-server and relay nodes as
subprocesses, Pusher WebSocket clients over real sockets, the signed HTTP API via the official SDK.

1. a node killed with SIGKILL has its presence members removed cluster-wide, with member_removed,
   within node_timeout plus one sweep interval; the default bound stays within 30 s;
2. Redis killed and restarted mid-traffic: nodes keep serving local clients, count the outage, then
   resynchronise, and everything published after recovery reaches every subscriber exactly once, in
   order per publishing node;
3. Redis restarted during a publish burst leaves no node stuck;
4. presence changes made while Redis was away, and the members of a node cut off from Redis for
   longer than node_timeout, are announced to every node's clients when it returns;
5. Redis that hangs (SIGSTOP) instead of dying: no stuck node, bounded waits, clean recovery, and
   members swept as dead meanwhile announced again;
6. cache channels across a partition.

A gated TCP proxy in front of one node lets a test decide when that node reaches Redis. The figures
docs/redis.md quotes come from these tests (run with `-s` to see the measured lines).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from relay.config import load_config
from tests.integration.wire import Api, Client, Frame, build_request, connect, inner, ws_url
from tests.support.ports import free_port
from tests.support.process import ProcessError
from tests.support.redis import RedisProcess, redis_answers_ping, start_redis
from tests.support.redis_cluster import ClusterNodeProcess, RedisClusterProcesses, start_redis_cluster
from tests.support.relay import DEFAULT_APP, RelayProcess, http_status, to_toml
from tests.support.timeouts import STARTUP_TIMEOUT, scaled

APP_ID = str(DEFAULT_APP["id"])
KEY = str(DEFAULT_APP["key"])
SECRET = str(DEFAULT_APP["secret"])

# Short node timeouts so a dead node is noticed quickly; long enough that a node stalled for a
# second by a loaded 2-core machine is not presumed dead.
NODE_TIMEOUT = 3.0
# The adapter sweeps dead nodes every node_timeout/3, so a member can outlive its node by at most
# node_timeout (heartbeat expiry) plus one sweep interval.
REMOVAL_BOUND = NODE_TIMEOUT + NODE_TIMEOUT / 3
MARGIN = scaled(3.0)
WAIT = scaled(20.0)

pytestmark = pytest.mark.timeout(scaled(120))


# Processes ------------------------------------------------------------------------------------


@dataclass
class FaultCluster:
    redis: RedisProcess | RedisClusterProcesses
    nodes: list[RelayProcess]

    def redis_to_kill(self) -> RedisProcess | ClusterNodeProcess:
        """The redis-server, or on a Redis Cluster the primary serving relay's state keys (`{relay}`)."""
        if isinstance(self.redis, RedisClusterProcesses):
            return self.redis.nodes[self.redis.shard_of("{relay}")]
        return self.redis


def _spawn_node(redis_url: str, workdir: Path) -> RelayProcess:
    """A relay node on a free port, started but not waited for (so several start in parallel)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_path = workdir / f"relay-{port}.toml"
    config_path.write_text(to_toml({"apps": [dict(DEFAULT_APP)]}))
    # As start_relay does: no inherited RELAY_*/REVERB_* setting may change what the test runs.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "REVERB_")) or k.startswith("RELAY_TEST_")
    }
    env.update(PYTHONUNBUFFERED="1", RELAY_REDIS_NODE_TIMEOUT=str(NODE_TIMEOUT))
    return RelayProcess(port, config_path, ["--redis-url", redis_url], env, workdir / f"relay-{port}.log")


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[FaultCluster]:
    """Our own fixture (not tests/cluster/conftest.py's): these tests kill and restart Redis and nodes,
    and need a short, known node timeout."""
    yield from _fault_cluster(tmp_path, start_redis(tmp_path))


@pytest.fixture(params=["redis", "redis-cluster"])
def any_fault_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultCluster]:
    """fault_cluster on one redis-server, then on a three-primary Redis Cluster."""
    redis = start_redis_cluster(tmp_path) if request.param == "redis-cluster" else start_redis(tmp_path)
    yield from _fault_cluster(tmp_path, redis)


def _fault_cluster(tmp_path: Path, redis: RedisProcess | RedisClusterProcesses) -> Iterator[FaultCluster]:
    nodes: list[RelayProcess] = []
    try:
        for index in range(3):
            nodes.append(_spawn_node(redis.url, tmp_path / f"node-{index}"))
        for node in nodes:
            node.wait_ready()
        yield FaultCluster(redis, nodes)
    finally:
        for node in reversed(nodes):
            node.stop()
        redis.stop()


async def wait_up(node: RelayProcess) -> None:
    """RelayProcess.wait_ready without blocking the event loop (a proxy on it must keep serving)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not await asyncio.to_thread(node.is_up):
        assert node.running, f"{node.name} exited:\n{node.log_tail()}"
        assert time.monotonic() < deadline, f"{node.name} not up:\n{node.log_tail()}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def redis_back(redis: RedisProcess | ClusterNodeProcess) -> None:
    """Restart a killed Redis on its port. Spawned from the main thread (children die with the thread
    that started them); readiness is awaited without blocking the event loop."""
    redis.spawn()
    deadline = time.monotonic() + WAIT
    while not await asyncio.to_thread(redis_answers_ping, redis.port):
        assert redis.running, f"redis-server exited on restart:\n{redis.log_tail()}"
        assert time.monotonic() < deadline, "redis-server did not answer PING after restart"
        await asyncio.sleep(0.05)


# Clients --------------------------------------------------------------------------------------


class Sink:
    """Reads every frame of one connection in the background, so no test can miss or block on one."""

    def __init__(self, name: str, client: Client) -> None:
        self.name = name
        self.client = client
        self.frames: list[Frame] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                self.frames.append(await self.client.recv(timeout=3600))
        except ConnectionClosed as closed:
            self.error = closed
        except Exception as error:  # a test reports it; the reader just stops
            self.error = error

    def events(self, event: str, channel: str | None = None) -> list[Any]:
        """Decoded `data` of every frame named `event` (on `channel`), in arrival order."""
        return [
            inner(f)
            for f in self.frames
            if f.get("event") == event and (channel is None or f.get("channel") == channel)
        ]

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                tail = self.frames[-5:]
                raise AssertionError(
                    f"{self.name}: {what} not seen within {timeout:.0f}s (error={self.error!r}, {tail})"
                )
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.client.close()
        except Exception:
            pass


class Nodes:
    """Signed HTTP API calls and WebSocket clients for a set of relay nodes."""

    def __init__(self, http: aiohttp.ClientSession, nodes: list[RelayProcess]) -> None:
        self.nodes = nodes
        self.apis = [Api(http, node.port) for node in nodes]
        self.sinks: list[Sink] = []

    def _request(self, index: int, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        api = self.apis[index]
        return build_request(api.sdk(APP_ID, KEY, SECRET), method, path, params)

    async def trigger(self, index: int, channel: str, event: str, data: Any) -> int:
        params = {"name": event, "channels": [channel], "data": orjson.dumps(data).decode()}
        response = await self.apis[index].send(self._request(index, "POST", f"/apps/{APP_ID}/events", params))
        return response.status

    async def batch(self, index: int, channel: str, event: str, datas: list[Any]) -> int:
        batch = [{"name": event, "channel": channel, "data": orjson.dumps(d).decode()} for d in datas]
        request = self._request(index, "POST", f"/apps/{APP_ID}/batch_events", {"batch": batch})
        return (await self.apis[index].send(request)).status

    async def get(self, index: int, path: str, params: dict[str, Any] | None = None) -> Any:
        response = await self.apis[index].send(self._request(index, "GET", f"/apps/{APP_ID}{path}", params))
        assert response.status == 200, f"GET {path} on node {index}: {response.status} {response.body}"
        return response.body

    async def users(self, index: int, channel: str) -> set[str]:
        body = await self.get(index, f"/channels/{channel}/users")
        return {user["id"] for user in body["users"]}

    async def channels(self, index: int) -> dict[str, int]:
        body = await self.get(index, "/channels", {"info": "subscription_count"})
        return {name: attrs["subscription_count"] for name, attrs in body["channels"].items()}

    async def client(self, index: int, name: str) -> Sink:
        client = await connect(ws_url(self.nodes[index].port, KEY))
        sink = Sink(name, client)
        self.sinks.append(sink)
        return sink

    async def subscribe(self, sink: Sink, channel: str, user_id: str | None = None) -> Frame:
        """Subscribe (signing presence auth with the SDK) and wait for subscription_succeeded."""
        auth, channel_data = "", None
        if user_id is not None:
            signed = (
                self.apis[0]
                .sdk(APP_ID, KEY, SECRET)
                .authenticate(
                    channel=channel, socket_id=sink.client.socket_id, custom_data={"user_id": user_id, "user_info": {}}
                )
            )
            auth, channel_data = signed["auth"], signed["channel_data"]
        before = len(sink.frames)
        await sink.client.subscribe(channel, auth, channel_data)

        def done() -> bool:
            return any(
                f.get("channel") == channel and f.get("event") == "pusher_internal:subscription_succeeded"
                for f in sink.frames[before:]
            )

        await sink.wait(done, f"subscription_succeeded on {channel}")
        return next(f for f in sink.frames[before:] if f.get("event") == "pusher_internal:subscription_succeeded")

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()


async def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll an async check (returning a truthy value when satisfied) that no frame announces."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except AssertionError as error:
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s; last: {last!r}")
        await asyncio.sleep(0.1)


async def redis_metrics(http: aiohttp.ClientSession, node: RelayProcess) -> dict[str, float]:
    """The relay_redis_* lines of a node's /metrics, by name without the prefix."""
    async with http.get(f"{node.http_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        m.group(1).removesuffix("_total"): float(m.group(2))
        for m in re.finditer(r"(?m)^relay_redis_(\w+) ([0-9.e+-]+)$", text)
    }


async def connected_everywhere(nodes: Nodes, subscribers: list[tuple[int, Sink]], channel: str) -> None:
    """Wait until an event published on any node reaches the subscribers on every node, i.e. every
    node's links to Redis and its subscriptions work again. Probe rounds start after this call, so a
    probe queued during an outage cannot count."""
    rounds = itertools.count()
    deadline = time.monotonic() + WAIT
    pending = {(origin, sink.name) for origin in range(len(nodes.nodes)) for _, sink in subscribers}
    while pending:
        assert time.monotonic() < deadline, f"no cross-node delivery for (origin, subscriber) {sorted(pending)}"
        round_id = next(rounds)
        marker = f"{time.monotonic()}-{round_id}"
        for origin in range(len(nodes.nodes)):
            assert await nodes.trigger(origin, channel, "probe", {"origin": origin, "marker": marker}) == 200
        round_deadline = time.monotonic() + scaled(1.0)
        while pending and time.monotonic() < round_deadline:
            for _, sink in subscribers:
                for data in sink.events("probe", channel):
                    if data["marker"] == marker:
                        pending.discard((data["origin"], sink.name))
            await asyncio.sleep(0.02)


async def sequences_arrive_in_order(
    nodes: Nodes, subscribers: list[tuple[int, Sink]], channel: str, count: int
) -> None:
    """Publish `count` numbered events through every node at once; every subscriber gets each node's
    sequence exactly once, in order. A final probe round fences late duplicates (per publisher, Redis
    delivers in order)."""

    async def publish_sequence(origin: int) -> None:
        for n in range(count):
            assert await nodes.trigger(origin, channel, "seq", {"from": origin, "n": n}) == 200

    origins = range(len(nodes.nodes))
    await asyncio.gather(*(publish_sequence(origin) for origin in origins))
    for _, sink in subscribers:
        await sink.wait(lambda s=sink: len(s.events("seq", channel)) >= len(origins) * count, "the whole sequence")
    await connected_everywhere(nodes, subscribers, channel)
    for _, sink in subscribers:
        received = sink.events("seq", channel)
        for origin in origins:
            got = [d["n"] for d in received if d["from"] == origin]
            assert got == list(range(count)), f"{sink.name} from node {origin}: {got}"


# 1. A node dies without warning ---------------------------------------------------------------


def test_default_node_timeout_is_at_most_30_seconds() -> None:
    """The documented bound: by default a dead node's members are gone within 30 s, i.e. the heartbeat
    timeout plus one sweep interval (a third of it) stays within 30 s."""
    config = load_config(env={"RELAY_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert config.redis is not None
    assert config.redis.node_timeout * 4 / 3 <= 30.0
    assert config.redis.node_timeout > 0
    configured = load_config(env={"RELAY_REDIS_URL": "redis://127.0.0.1:1/0", "RELAY_REDIS_NODE_TIMEOUT": "2.5"})
    assert configured.redis is not None and configured.redis.node_timeout == 2.5


async def test_sigkill_node_members_removed_cluster_wide(
    any_fault_cluster: FaultCluster, http: aiohttp.ClientSession
) -> None:
    fault_cluster = any_fault_cluster
    nodes = Nodes(http, fault_cluster.nodes)
    room = "presence-room"
    try:
        # On the node to be killed (0): u-dead (only there), u-shared (also on node 1), and a public
        # channel nobody else has. Watchers are members too, one per surviving node.
        dead = await nodes.client(0, "dead")
        shared_on_dead = await nodes.client(0, "shared-on-dead")
        only_here = await nodes.client(0, "only-here")
        watcher1 = await nodes.client(1, "watcher1")
        shared_on_1 = await nodes.client(1, "shared-on-1")
        watcher2 = await nodes.client(2, "watcher2")
        await nodes.subscribe(watcher1, room, "u-w1")
        await nodes.subscribe(watcher2, room, "u-w2")
        await nodes.subscribe(dead, room, "u-dead")
        await nodes.subscribe(shared_on_dead, room, "u-shared")
        await nodes.subscribe(shared_on_1, room, "u-shared")
        await nodes.subscribe(only_here, "lonely")
        everyone = {"u-w1", "u-w2", "u-dead", "u-shared"}
        for watcher in (watcher1, watcher2):
            await watcher.wait(
                lambda w=watcher: (
                    {"u-dead", "u-shared"} <= {d["user_id"] for d in w.events("pusher_internal:member_added")}
                ),
                "member_added for u-dead and u-shared",
            )
        for index in (1, 2):
            await eventually(lambda i=index: _equal(nodes.users(i, room), everyone), f"node {index} lists everyone")
        assert "lonely" in await nodes.channels(1)

        killed_at = time.monotonic()
        fault_cluster.nodes[0].kill()

        for watcher in (watcher1, watcher2):
            await watcher.wait(
                lambda w=watcher: any(d["user_id"] == "u-dead" for d in w.events("pusher_internal:member_removed")),
                "member_removed for u-dead",
                timeout=REMOVAL_BOUND + MARGIN,
            )
        elapsed = time.monotonic() - killed_at
        print(f"\nmeasured: member_removed {elapsed:.2f}s after SIGKILL (node_timeout={NODE_TIMEOUT}s)")
        assert elapsed <= REMOVAL_BOUND + MARGIN

        survivors = {"u-w1", "u-w2", "u-shared"}
        for index in (1, 2):
            assert await nodes.users(index, room) == survivors
            info = await nodes.get(index, f"/channels/{room}", {"info": "user_count,subscription_count"})
            assert info["user_count"] == 3, info
            # watcher1, shared_on_1 and watcher2: the killed node's two connections are gone.
            assert info["subscription_count"] == 3, info
            channels = await nodes.channels(index)
            assert "lonely" not in channels, channels
            assert channels.get(room) == 3, channels

        # u-shared still has a connection on node 1: the cluster must not announce it gone.
        for watcher in (watcher1, watcher2):
            removed = [d["user_id"] for d in watcher.events("pusher_internal:member_removed")]
            assert removed == ["u-dead"], f"{watcher.name} got member_removed for {removed}"
    finally:
        await nodes.close()


async def _get(check: Any, key: str) -> Any:
    return (await check).get(key)


async def _equal(check: Any, expected: Any) -> bool:
    value = await check
    assert value == expected, value
    return True


# 2. Redis killed and restarted mid-traffic ----------------------------------------------------


@dataclass
class Traffic:
    """Events published in the background through every node, numbered per node."""

    nodes: Nodes
    channel: str
    sent: list[list[tuple[int, float]]] = field(default_factory=lambda: [[], [], []])
    statuses: list[int] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        counters = [0, 0, 0]
        for index in itertools.cycle(range(3)):
            if self.stop.is_set():
                return
            n = counters[index]
            counters[index] += 1
            at = time.monotonic()
            self.statuses.append(await self.nodes.trigger(index, self.channel, "bg", {"from": index, "n": n}))
            self.sent[index].append((n, at))
            await asyncio.sleep(0.01)


async def test_redis_outage_local_service_then_resync(
    any_fault_cluster: FaultCluster, http: aiohttp.ClientSession
) -> None:
    """On a Redis Cluster: the primary serving the state keys is killed (SIGKILL) mid-traffic and restarted
    empty on its port, rejoining the cluster with its slots; the same checks hold."""
    fault_cluster = any_fault_cluster
    redis = fault_cluster.redis_to_kill()
    nodes = Nodes(http, fault_cluster.nodes)
    traffic_channel, room = "traffic", "presence-room"
    try:
        subscribers: list[tuple[int, Sink]] = []
        members: list[Sink] = []
        for index in range(3):
            sink = await nodes.client(index, f"sub{index}")
            await nodes.subscribe(sink, traffic_channel)
            subscribers.append((index, sink))
            member = await nodes.client(index, f"member{index}")
            await nodes.subscribe(member, room, f"u{index}")
            members.append(member)
        await connected_everywhere(nodes, subscribers, traffic_channel)

        traffic = Traffic(nodes, traffic_channel)
        background = asyncio.create_task(traffic.run())
        await asyncio.sleep(scaled(0.5))
        log_marks = [len(node.log_text()) for node in fault_cluster.nodes]

        # --- Redis down ---------------------------------------------------------------------
        redis.kill()
        down_at = time.monotonic()
        assert not redis_answers_ping(redis.port)
        await asyncio.sleep(scaled(0.5))  # traffic keeps flowing through the nodes meanwhile

        # Existing connections: pings answered, events triggered on a node reach its own subscriber.
        for index, sink in subscribers:
            before = len(sink.frames)
            await sink.client.send({"event": "pusher:ping", "data": {}})
            await sink.wait(lambda s=sink, b=before: any(f.get("event") == "pusher:pong" for f in s.frames[b:]), "pong")
            assert await nodes.trigger(index, traffic_channel, "local", {"from": index}) == 200
            await sink.wait(
                lambda s=sink, i=index: any(d["from"] == i for d in s.events("local", traffic_channel)),
                "an event triggered on its own node during the outage",
            )
        # New connections and subscriptions work on node 0, public and presence.
        fresh = await nodes.client(0, "fresh")
        await nodes.subscribe(fresh, "fresh-channel")
        assert await nodes.trigger(0, "fresh-channel", "hello", {"n": 1}) == 200
        await fresh.wait(lambda: fresh.events("hello", "fresh-channel") == [{"n": 1}], "event on a new subscription")
        late = await nodes.client(0, "late")
        succeeded = await nodes.subscribe(late, room, "u-late")
        # Only the members this node holds: u1 and u2 on the other nodes are unknown while Redis is away.
        assert set(inner(succeeded)["presence"]["ids"]) == {"u0", "u-late"}
        await members[0].wait(
            lambda: any(d["user_id"] == "u-late" for d in members[0].events("pusher_internal:member_added", room)),
            "member_added for u-late on the same node",
        )
        # The HTTP API answers from what the node itself holds: its own members and subscriptions only.
        assert await nodes.users(0, room) == {"u0", "u-late"}
        assert await nodes.channels(1) == {traffic_channel: 1, room: 1}
        for node in fault_cluster.nodes:
            assert node.running, f"{node.name} died during the outage:\n{node.log_tail()}"
            await eventually(
                lambda n=node: _equal(_get(redis_metrics(http, n), "connected"), 0.0), "relay_redis_connected 0"
            )
            assert await asyncio.to_thread(http_status, f"{node.http_url}/up") == 200

        # --- Redis back (empty) ---------------------------------------------------------------
        up_at = time.monotonic()
        await redis_back(redis)
        await connected_everywhere(nodes, subscribers, traffic_channel)
        recovered_at = time.monotonic()
        traffic.stop.set()
        await background
        print(
            f"\nmeasured: outage {up_at - down_at:.2f}s; cross-node delivery back "
            f"{recovered_at - up_at:.2f}s after Redis answered PING"
        )

        # The outage is logged and counted by every node.
        for node, mark in zip(fault_cluster.nodes, log_marks, strict=True):
            metrics = await redis_metrics(http, node)
            assert metrics.get("outages", 0) >= 1 and metrics.get("connected") == 1.0, metrics
            new_log = node.log_text()[mark:]
            assert re.search(r"(?i)(lost|unreachable|down).*redis|redis.*(lost|unreachable|down)", new_log), (
                f"{node.name} logged nothing about the outage:\n{new_log[-2000:]}"
            )
            assert node.running

        # Presence and channel lists resynchronised: every node answers for the whole cluster.
        everyone = {"u0", "u1", "u2", "u-late"}
        expected_channels = {traffic_channel: 3, room: 4, "fresh-channel": 1}
        for index in range(3):
            await eventually(lambda i=index: _equal(nodes.users(i, room), everyone), f"node {index} lists members")
            await eventually(
                lambda i=index: _equal(nodes.channels(i), expected_channels), f"node {index} lists channels"
            )
            info = await nodes.get(index, f"/channels/{room}", {"info": "user_count"})
            assert info["user_count"] == 4, info
        # Do members on other nodes learn about u-late, who joined node 0 while Redis was away? Measured
        # here; test_presence_changes_during_outage_announced_after_recovery asserts it.
        late_seen = [any(d["user_id"] == "u-late" for d in m.events("pusher_internal:member_added")) for m in members]

        # Every background event was answered 200 and reached its own node's subscriber exactly once,
        # in order, Redis or not.
        assert set(traffic.statuses) == {200}, sorted(set(traffic.statuses))
        for index, sink in subscribers:
            own = [d["n"] for d in sink.events("bg", traffic_channel) if d["from"] == index]
            assert own == [n for n, _ in traffic.sent[index]], f"{sink.name} local delivery"

        # After recovery: a numbered sequence from every node reaches every subscriber exactly once, in order.
        await sequences_arrive_in_order(nodes, subscribers, traffic_channel, 40)

        # Measured for docs/redis.md: what other nodes got of the events published during the outage.
        for index, sink in subscribers:
            for origin in range(3):
                if origin == index:
                    continue
                got = [d["n"] for d in sink.events("bg", traffic_channel) if d["from"] == origin]
                assert len(got) == len(set(got)) and got == sorted(got), f"{sink.name} from {origin}: {got}"
                during = [n for n, at in traffic.sent[origin] if down_at <= at < up_at]
                print(
                    f"measured: {sink.name} got {len(set(during) & set(got))}/{len(during)} of the events "
                    f"published through node {origin} while Redis was down"
                )
        print(f"measured: member_added for u-late reached members on nodes {late_seen}")
    finally:
        await nodes.close()


async def test_redis_cluster_primary_replaced_by_its_replica(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """A Redis Cluster with one replica per primary: the primary serving relay's state keys is SIGKILLed
    mid-traffic and its replica (another address) takes over. The nodes find it through the slot map,
    write their share back and resynchronise; nothing published after recovery is lost or doubled."""
    redis = start_redis_cluster(tmp_path, replicas=1)
    cluster_gen = _fault_cluster(tmp_path, redis)
    fault = next(cluster_gen)
    nodes = Nodes(http, fault.nodes)
    channel, room = "traffic", "presence-room"
    try:
        subscribers: list[tuple[int, Sink]] = []
        for index in range(3):
            sink = await nodes.client(index, f"sub{index}")
            await nodes.subscribe(sink, channel)
            subscribers.append((index, sink))
            await nodes.subscribe(await nodes.client(index, f"member{index}"), room, f"u{index}")
        await connected_everywhere(nodes, subscribers, channel)
        traffic = Traffic(nodes, channel)
        background = asyncio.create_task(traffic.run())
        await asyncio.sleep(scaled(0.5))

        primary = fault.redis_to_kill()
        primary.kill()
        down_at = time.monotonic()

        def replica_took_over() -> bool:
            try:
                return redis.is_ok() and fault.redis_to_kill() is not primary
            except ProcessError:  # no running primary serves the slot yet
                return False

        await eventually(lambda: asyncio.to_thread(replica_took_over), "the replica promoted, cluster_state:ok")
        promoted_at = time.monotonic()
        await connected_everywhere(nodes, subscribers, channel)
        recovered_at = time.monotonic()
        traffic.stop.set()
        await background
        print(
            f"\nmeasured: replica promoted {promoted_at - down_at:.2f}s after the primary was killed; "
            f"cross-node delivery back {recovered_at - promoted_at:.2f}s after that"
        )

        assert set(traffic.statuses) == {200}, sorted(set(traffic.statuses))
        for index, sink in subscribers:
            own = [d["n"] for d in sink.events("bg", channel) if d["from"] == index]
            assert own == [n for n, _ in traffic.sent[index]], f"{sink.name} local delivery"
        for node in fault.nodes:
            metrics = await redis_metrics(http, node)
            assert metrics.get("outages", 0) >= 1 and metrics.get("connected") == 1.0, metrics
        for index in range(3):
            await eventually(lambda i=index: _equal(nodes.users(i, room), {"u0", "u1", "u2"}), f"node {index} users")
            await eventually(lambda i=index: _equal(nodes.channels(i), {channel: 3, room: 3}), f"node {index} channels")

        await sequences_arrive_in_order(nodes, subscribers, channel, 30)
        for _, sink in subscribers:
            for origin in range(3):
                got = [d["n"] for d in sink.events("bg", channel) if d["from"] == origin]
                assert len(got) == len(set(got)) and got == sorted(got), f"{sink.name} from {origin}: {got}"
    finally:
        await nodes.close()
        for _ in cluster_gen:  # the generator's teardown: stops the nodes and every redis-server
            pass


async def test_redis_cluster_resharding_a_channel_slot_heals(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """A channel's slot moves to another primary while nodes 0 and 1 subscribe to it: Redis SUNSUBSCRIBEs
    them, and node 2, which publishes without subscribing, has its next publish refused ("non local key").
    Each node takes that as an outage, reads the slot map again (0 and 1 re-subscribe on the new primary);
    events published after that through every node reach everyone once, in order."""
    redis = start_redis_cluster(tmp_path)
    cluster_gen = _fault_cluster(tmp_path, redis)
    fault = next(cluster_gen)
    nodes = Nodes(http, fault.nodes)
    channel = "moving"
    try:
        subscribers: list[tuple[int, Sink]] = []
        for index in range(2):
            sink = await nodes.client(index, f"sub{index}")
            await nodes.subscribe(sink, channel)
            subscribers.append((index, sink))
        await connected_everywhere(nodes, subscribers, channel)
        name = f"relay:ev:{APP_ID}:{channel}"
        before = redis.shard_of(name)
        target = (before + 1) % 3
        if target == redis.shard_of("{relay}"):
            target = (target + 1) % 3  # move it to a shard that serves neither the channel nor the state
        moved_at = time.monotonic()
        await asyncio.to_thread(redis.move_empty_slot, name, target)
        assert redis.shard_of(name) == target
        await connected_everywhere(nodes, subscribers, channel)
        print(f"\nmeasured: cross-node delivery back {time.monotonic() - moved_at:.2f}s after the slot moved")
        owner = redis.nodes[target]
        assert redis.cli(owner.port, "PUBSUB", "SHARDNUMSUB", name).split() == [name, "2"]

        await sequences_arrive_in_order(nodes, subscribers, channel, 30)
        for node in fault.nodes:  # node 2 included: only its publishes could tell it the slot moved
            metrics = await redis_metrics(http, node)
            assert metrics.get("outages", 0) >= 1 and metrics.get("connected") == 1.0, metrics
    finally:
        await nodes.close()
        for _ in cluster_gen:  # the generator's teardown: stops the nodes and every redis-server
            pass


# 3. Redis restarted during a publish burst ----------------------------------------------------


async def test_redis_restart_mid_burst_leaves_no_stuck_node(
    fault_cluster: FaultCluster, http: aiohttp.ClientSession
) -> None:
    redis = fault_cluster.redis_to_kill()
    nodes = Nodes(http, fault_cluster.nodes[:2])
    channel = "burst"
    try:
        subscribers = [(index, await nodes.client(index, f"sub{index}")) for index in range(2)]
        for _, sink in subscribers:
            await nodes.subscribe(sink, channel)
        await connected_everywhere(nodes, subscribers, channel)

        stop = asyncio.Event()
        sent: list[int] = []
        statuses: list[int] = []
        counter = itertools.count()

        async def burst() -> None:
            while not stop.is_set():
                batch = [next(counter) for _ in range(10)]
                statuses.append(await nodes.batch(0, channel, "burst", [{"n": n} for n in batch]))
                sent.extend(batch)

        workers = [asyncio.create_task(burst()) for _ in range(4)]
        await eventually(_async(lambda: len(sent) >= 500), "burst under way")
        redis.kill()
        await asyncio.sleep(scaled(0.5))
        await redis_back(redis)
        await asyncio.sleep(scaled(0.5))
        stop.set()
        async with asyncio.timeout(WAIT):  # every request of the burst was answered: nothing hangs
            await asyncio.gather(*workers)
        assert set(statuses) == {200}, sorted(set(statuses))
        print(f"\nmeasured: {len(sent)} burst events through node 0 around a Redis restart")

        node = fault_cluster.nodes[0]
        assert node.running, node.log_tail()
        assert await asyncio.to_thread(http_status, f"{node.http_url}/up") == 200
        # Local delivery never depended on Redis: node 0's subscriber has the whole burst (publish
        # order is per request, and requests ran concurrently, so compare as sets).
        local = subscribers[0][1]
        await local.wait(lambda: len(local.events("burst", channel)) >= len(sent), "the whole burst locally")
        got = [d["n"] for d in local.events("burst", channel)]
        assert sorted(got) == sorted(sent)

        # After recovery new events cross nodes both ways, and a new subscription works.
        await connected_everywhere(nodes, subscribers, channel)
        late = await nodes.client(1, "late")
        await nodes.subscribe(late, "after-burst")
        await eventually(
            lambda: _equal(nodes.channels(0), {channel: 2, "after-burst": 1}), "node 0 sees node 1's new channel"
        )
        await connected_everywhere(nodes, [(1, late)], "after-burst")
    finally:
        await nodes.close()


def _async(predicate: Callable[[], bool]) -> Callable[[], Any]:
    async def check() -> bool:
        return predicate()

    return check


# 4. Presence changes made while Redis was away ------------------------------------------------


class GatedProxy:
    """A TCP proxy to Redis that the test can shut: one node reaches Redis only through it, so the test
    decides when that node reconnects (the adapter's own backoff is random)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.open = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def cut(self) -> None:
        """Refuse new connections and close the open ones."""
        self.open = False
        for writer in list(self._writers):
            writer.close()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_presence_changes_during_outage_announced_after_recovery(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Node 1's member must end up with the member list the users API gives. While Redis is down u-late
    joins node 0 and u-leaver leaves it; Redis comes back; node 0 reconnects first (node 1 is held off by
    a proxy, as a slower backoff would), then node 1. Node 1's member must get member_added for u-late
    and member_removed for u-leaver."""
    redis = start_redis(tmp_path)
    proxy = GatedProxy(redis.port)
    await proxy.start()
    processes: list[RelayProcess] = []
    room, probe = "presence-room", "probe-channel"
    nodes: Nodes | None = None
    try:
        for index, url in enumerate((redis.url, proxy.url, redis.url)):
            processes.append(_spawn_node(url, tmp_path / f"node-{index}"))
        for process in processes:
            await wait_up(process)
        nodes = Nodes(http, processes)
        member0 = await nodes.client(0, "member0")
        member1 = await nodes.client(1, "member1")
        witness = await nodes.client(2, "witness")
        leaver = await nodes.client(0, "leaver")
        await nodes.subscribe(member0, room, "u0")
        await nodes.subscribe(member1, room, "u1")
        await nodes.subscribe(leaver, room, "u-leaver")
        for sink in (member0, member1, witness):
            await nodes.subscribe(sink, probe)
        await connected_everywhere(nodes, [(0, member0), (1, member1), (2, witness)], probe)
        await member1.wait(
            lambda: any(d["user_id"] == "u-leaver" for d in member1.events("pusher_internal:member_added", room)),
            "member_added for u-leaver across nodes",
        )

        proxy.cut()
        redis.kill()
        late = await nodes.client(0, "late")
        await nodes.subscribe(late, room, "u-late")
        await leaver.close()
        await member0.wait(
            lambda: any(d["user_id"] == "u-leaver" for d in member0.events("pusher_internal:member_removed", room)),
            "member_removed for u-leaver on its own node",
        )
        await redis_back(redis)
        # Nodes 0 and 2 are back (node 0 has flushed what it queued); node 1 is still cut off.
        only_direct = Nodes(http, [processes[0], processes[2]])
        await connected_everywhere(only_direct, [(0, member0), (1, witness)], probe)
        proxy.open = True
        await connected_everywhere(nodes, [(0, member0), (1, member1), (2, witness)], probe)
        for index in range(3):
            await eventually(
                lambda i=index: _equal(nodes.users(i, room), {"u0", "u1", "u-late"}), f"node {index} lists members"
            )

        def missing() -> list[str]:
            added = {d["user_id"] for d in member1.events("pusher_internal:member_added", room)}
            removed = {d["user_id"] for d in member1.events("pusher_internal:member_removed", room)}
            return ["member_added(u-late)"] * ("u-late" not in added) + ["member_removed(u-leaver)"] * (
                "u-leaver" not in removed
            )

        await member1.wait(
            lambda: not missing(), "presence changes made during the outage", timeout=REMOVAL_BOUND + MARGIN
        )
        # Everything each node published before this probe has arrived: no client heard a change twice,
        # though node 0 published member_added(u-late) twice (queued in the outage, and at its write-back).
        await connected_everywhere(nodes, [(0, member0), (1, member1), (2, witness)], probe)
        for sink in (member0, member1):
            for event in ("pusher_internal:member_added", "pusher_internal:member_removed"):
                users = [d["user_id"] for d in sink.events(event, room)]
                assert len(users) == len(set(users)), f"{sink.name} heard {event} twice: {users}"
        flaps = [d["user_id"] for d in member0.events("pusher_internal:member_removed", room) if d["user_id"] == "u1"]
        print(f"\nmeasured: node 0's member was told u1 left {len(flaps)} times while node 1 was held off")
    finally:
        if nodes is not None:
            await nodes.close()
        for process in reversed(processes):
            process.stop()
        await proxy.close()
        redis.stop()


async def test_partitioned_node_members_announced_again_when_it_returns(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Node 1 loses Redis (Redis itself stays up) for longer than the node timeout while its member
    u1 stays connected: node 0's member is told member_removed(u1) within the bound. When node 1 is
    back, the users API lists u1 again, so node 0's member must be told member_added(u1)."""
    redis = start_redis(tmp_path)
    proxy = GatedProxy(redis.port)
    await proxy.start()
    processes: list[RelayProcess] = []
    room, probe = "presence-room", "probe-channel"
    nodes: Nodes | None = None
    try:
        for index, url in enumerate((redis.url, proxy.url)):
            processes.append(_spawn_node(url, tmp_path / f"node-{index}"))
        for process in processes:
            await wait_up(process)
        nodes = Nodes(http, processes)
        member0 = await nodes.client(0, "member0")
        member1 = await nodes.client(1, "member1")
        await nodes.subscribe(member0, room, "u0")
        await nodes.subscribe(member1, room, "u1")
        for sink in (member0, member1):
            await nodes.subscribe(sink, probe)
        await connected_everywhere(nodes, [(0, member0), (1, member1)], probe)

        def removed_u1() -> bool:
            return any(d["user_id"] == "u1" for d in member0.events("pusher_internal:member_removed", room))

        assert not removed_u1()
        cut_at = time.monotonic()
        proxy.cut()
        await member0.wait(removed_u1, "member_removed for u1 of the cut-off node", timeout=REMOVAL_BOUND + MARGIN)
        print(f"\nmeasured: member_removed {time.monotonic() - cut_at:.2f}s after node 1 lost Redis")
        removed_at = len(member0.frames)
        assert await nodes.users(0, room) == {"u0"}
        # Node 1 answers from what it holds itself: its own member only.
        assert await nodes.users(1, room) == {"u1"}

        proxy.open = True
        await connected_everywhere(nodes, [(0, member0), (1, member1)], probe)
        for index in range(2):
            await eventually(lambda i=index: _equal(nodes.users(i, room), {"u0", "u1"}), f"node {index} lists u1")

        def added_u1_again() -> bool:
            return any(
                f.get("event") == "pusher_internal:member_added" and inner(f)["user_id"] == "u1"
                for f in member0.frames[removed_at:]
            )

        await member0.wait(
            added_u1_again, "member_added for u1 after its node returned", timeout=REMOVAL_BOUND + MARGIN
        )
        # Once only, and not to u1's own node, whose clients never heard it leave.
        await connected_everywhere(nodes, [(0, member0), (1, member1)], probe)
        again = [f for f in member0.frames[removed_at:] if f.get("event") == "pusher_internal:member_added"]
        assert [inner(f)["user_id"] for f in again] == ["u1"]
        assert member1.events("pusher_internal:member_added", room) == []
    finally:
        if nodes is not None:
            await nodes.close()
        for process in reversed(processes):
            process.stop()
        await proxy.close()
        redis.stop()


# 5. Redis hangs (SIGSTOP) instead of dying -----------------------------------------------------


async def test_redis_hang_no_stuck_node(fault_cluster: FaultCluster, http: aiohttp.ClientSession) -> None:
    """Redis stops answering (SIGSTOP) for longer than the node timeout, its sockets still open: nodes
    must notice by themselves, keep serving local clients without waiting forever on Redis, and
    recover when it resumes (with the keys it held, minus the heartbeats that expired meanwhile)."""
    redis = fault_cluster.redis_to_kill()
    nodes = Nodes(http, fault_cluster.nodes)
    channel, room = "hang", "presence-room"
    try:
        subscribers = [(index, await nodes.client(index, f"sub{index}")) for index in range(3)]
        for index, sink in subscribers:
            await nodes.subscribe(sink, channel)
            await nodes.subscribe(sink, room, f"u{index}")
        await connected_everywhere(nodes, subscribers, channel)
        marks = [len(sink.frames) for _, sink in subscribers]

        os.kill(redis.pid, signal.SIGSTOP)
        try:
            hung_at = time.monotonic()
            # Published without waiting on Redis: the node's own subscriber has it at once.
            for index, sink in subscribers:
                assert await nodes.trigger(index, channel, "local", {"from": index}) == 200
                await sink.wait(
                    lambda s=sink, i=index: any(d["from"] == i for d in s.events("local", channel)),
                    "an event triggered on its own node while Redis hangs",
                    timeout=scaled(2.0),
                )
            # A new connection and subscription need cluster state: they wait for Redis at most one
            # request timeout, then the node answers from its own state.
            started = time.monotonic()
            fresh = await nodes.client(0, "fresh")
            await nodes.subscribe(fresh, "fresh-channel")
            joined_in = time.monotonic() - started
            assert await nodes.trigger(0, "fresh-channel", "hello", {"n": 1}) == 200
            await fresh.wait(
                lambda: fresh.events("hello", "fresh-channel") == [{"n": 1}], "event on a new subscription"
            )
            for node in fault_cluster.nodes:
                assert await asyncio.to_thread(http_status, f"{node.http_url}/up") == 200
            # Longer than the node timeout, so the nodes must have given up on the hung links.
            await asyncio.sleep(max(0.0, hung_at + NODE_TIMEOUT + 1.0 - time.monotonic()))
            for node in fault_cluster.nodes:
                assert node.running, node.log_tail()
        finally:
            os.kill(redis.pid, signal.SIGCONT)
        resumed_at = time.monotonic()

        await connected_everywhere(nodes, subscribers, channel)
        print(
            f"\nmeasured: connect+subscribe took {joined_in:.2f}s while Redis hung; cross-node delivery "
            f"back {time.monotonic() - resumed_at:.2f}s after SIGCONT"
        )
        expected_channels = {channel: 3, room: 3, "fresh-channel": 1}
        for index in range(3):
            await eventually(lambda i=index: _equal(nodes.channels(i), expected_channels), f"node {index} channels")
            await eventually(lambda i=index: _equal(nodes.users(i, room), {"u0", "u1", "u2"}), f"node {index} users")

        await sequences_arrive_in_order(nodes, subscribers, channel, 30)
        for (index, sink), mark in zip(subscribers, marks, strict=True):
            removed = [
                inner(f)["user_id"] for f in sink.frames[mark:] if f.get("event") == "pusher_internal:member_removed"
            ]
            print(f"measured: sub{index} (still connected everywhere) got member_removed for {removed}")

            def healed(sink: Sink = sink, mark: int = mark) -> bool:
                """Every member removed by the sweep was announced again: the last word on each is member_added."""
                last: dict[str, str] = {}
                for f in sink.frames[mark:]:
                    if f.get("event") in ("pusher_internal:member_added", "pusher_internal:member_removed"):
                        last[inner(f)["user_id"]] = f["event"]
                return all(event == "pusher_internal:member_added" for event in last.values())

            await sink.wait(healed, "member_added for every member the sweep removed")
    finally:
        await nodes.close()


# 6. Cache channels while a node is cut off from Redis -----------------------------------------


async def test_cache_channel_across_a_partition(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """A cache channel's last event while node 1 cannot reach Redis (Redis itself stays up), and after."""
    redis = start_redis(tmp_path)
    proxy = GatedProxy(redis.port)
    await proxy.start()
    processes: list[RelayProcess] = []
    channel, probe = "cache-room", "probe-channel"
    nodes: Nodes | None = None
    try:
        for index, url in enumerate((redis.url, proxy.url)):
            processes.append(_spawn_node(url, tmp_path / f"node-{index}"))
        for process in processes:
            await wait_up(process)
        nodes = Nodes(http, processes)
        watchers = [(index, await nodes.client(index, f"watcher{index}")) for index in range(2)]
        for _, sink in watchers:
            await nodes.subscribe(sink, probe)
        await connected_everywhere(nodes, watchers, probe)

        async def first_cached(index: int) -> Frame:
            """What a new subscriber on node `index` gets right after subscription_succeeded."""
            sink = await nodes.client(index, f"cache-reader{len(nodes.sinks)}")
            before = len(sink.frames)
            await nodes.subscribe(sink, channel)
            await sink.wait(lambda: len(sink.frames) >= before + 2, "the cached event or cache_miss")
            frame = sink.frames[before + 1]
            await sink.close()
            return frame

        assert await nodes.trigger(0, channel, "state", {"v": 1}) == 200
        assert inner(await first_cached(1)) == {"v": 1}

        proxy.cut()
        await eventually(
            lambda: _equal(_get(redis_metrics(http, processes[1]), "connected"), 0.0), "node 1 notices it is cut off"
        )
        assert await nodes.trigger(1, channel, "state", {"v": 2}) == 200
        # Each side answers with the last event it knows of.
        assert inner(await first_cached(1)) == {"v": 2}
        assert inner(await first_cached(0)) == {"v": 1}

        proxy.open = True
        await connected_everywhere(nodes, watchers, probe)
        after = [inner(await first_cached(index)) for index in range(2)]
        print(f"\nmeasured: after the partition, new subscribers on nodes 0 and 1 get {after}")
        # Both nodes answer alike again, from Redis.
        assert after[0] == after[1], after
    finally:
        if nodes is not None:
            await nodes.close()
        for process in reversed(processes):
            process.stop()
        await proxy.close()
        redis.stop()
