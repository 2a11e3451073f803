"""Missed-message recovery across nodes (docs/recovery.md, "Several nodes"), at the wire: a presence user
leaves node 0 and comes back on node 1, which replays from the channel's history in Redis with the ids
node 0 gave, or says `relay:gap` when the history no longer holds what it missed.

Each test runs on one redis-server and on a three-primary Redis Cluster; there the channel is one whose
shard channel (and so its history) is served by another primary than the state keys (departures, positions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

from tests.cluster.conftest import Cluster, ClusterFactory, barrier, unique
from tests.integration.wire import Client, inner, wait_until
from tests.support.redis_cluster import RedisClusterProcesses
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))

RECOVERY: dict[str, Any] = {"recovery": True, "recovery_window": 60}


@dataclass
class Recovering:
    """Two nodes, a client on their Redis (or Redis Cluster), and a recovering presence channel."""

    cluster: Cluster
    redis: Redis | RedisCluster
    channel: str

    def state_key(self, what: str) -> str:
        prefix = self.cluster.prefix
        if isinstance(self.cluster.redis, RedisClusterProcesses):
            prefix = "{" + prefix + "}"  # every state key in one slot
        return f"{prefix}:app:{self.cluster.app_id}:ch:{self.channel}:{what}"

    @property
    def shard_channel(self) -> str:
        return f"{self.cluster.prefix}:ev:{self.cluster.app_id}:{self.channel}"

    @property
    def history(self) -> str:
        if isinstance(self.cluster.redis, RedisClusterProcesses):
            return "{" + self.shard_channel + "}:history"  # in the shard channel's slot
        return self.state_key("history")


Start = Callable[[Mapping[str, Any]], Awaitable[Recovering]]


@pytest.fixture(params=["redis", "redis-cluster"])
async def start(request: pytest.FixtureRequest, cluster_factory: ClusterFactory) -> AsyncIterator[Start]:
    clients: list[Redis | RedisCluster] = []

    async def started(app: Mapping[str, Any]) -> Recovering:
        cluster = await cluster_factory(nodes=2, app=app, redis_cluster=request.param == "redis-cluster")
        backend = cluster.redis
        redis: Redis | RedisCluster
        if isinstance(backend, RedisClusterProcesses):
            redis = RedisCluster(host="127.0.0.1", port=backend.ports[0])
            state_shard = backend.shard_of("{" + cluster.prefix + "}")
            while True:
                recovering = Recovering(cluster, redis, unique("presence-room-"))
                if backend.shard_of(recovering.shard_channel) != state_shard:
                    break
            assert backend.shard_of(recovering.history) == backend.shard_of(recovering.shard_channel)
        else:
            redis = Redis.from_url(backend.url)
            recovering = Recovering(cluster, redis, unique("presence-room-"))
        clients.append(redis)
        return recovering

    yield started
    for client in clients:
        await client.aclose()


async def ticks(client: Client, channel: str, count: int, answer_pings: bool = False) -> list[dict[str, Any]]:
    """The next `count` tick events' data; relay's pings in between are skipped, or answered."""
    received: list[dict[str, Any]] = []
    while len(received) < count:
        frame = await client.recv()
        if frame["event"] == "pusher:ping":
            if answer_pings:
                await client.send({"event": "pusher:pong", "data": {}})
            continue
        assert (frame["event"], frame.get("channel")) == ("tick", channel), frame
        received.append(inner(frame))
    return received


async def trigger_ticks(cluster: Cluster, node: int, channel: str, numbers: range) -> None:
    for n in numbers:
        await cluster.trigger(node, channel, "tick", {"n": n})


async def leave_node_0(recovering: Recovering, client: Client) -> None:
    """Close `client` and wait until node 0 recorded in Redis where it stood."""
    await client.close()
    key = recovering.state_key("left:ann")

    async def recorded() -> bool:
        return bool(await recovering.redis.exists(key))

    await wait_until(recorded)


async def test_a_user_back_on_another_node_gets_what_it_missed_with_the_same_ids(start: Start) -> None:
    recovering = await start(RECOVERY)
    cluster, channel = recovering.cluster, recovering.channel
    first = await cluster.connect(0)
    await cluster.subscribe(first, channel, "ann")
    await trigger_ticks(cluster, 1, channel, range(3))
    live = await ticks(first, channel, 3)
    await leave_node_0(recovering, first)
    await trigger_ticks(cluster, 0, channel, range(3, 6))

    second = await cluster.connect(1)
    await cluster.subscribe(second, channel, "ann")
    # No ping was answered on node 0, so its position stayed at the subscribe: all six come (at least once).
    replayed = await ticks(second, channel, 6)
    await trigger_ticks(cluster, 0, channel, range(6, 7))
    after = await ticks(second, channel, 1)

    assert [data["n"] for data in [*replayed, *after]] == list(range(7))
    assert [data["relay_id"] for data in replayed[:3]] == [data["relay_id"] for data in live]
    assert len({data["relay_id"] for data in [*replayed, *after]}) == 7
    await barrier(cluster, [second], channel)  # nothing else, no duplicate of a live event
    assert await recovering.redis.xlen(recovering.history) == 7 + 2  # and the barrier's two events


async def test_events_published_during_the_replay_come_once_and_in_order(start: Start) -> None:
    """Events keep coming from both nodes while the returning user's history is read: the live ones held back
    during the read follow the replay, none twice, none out of order."""
    recovering = await start(RECOVERY)
    cluster, channel = recovering.cluster, recovering.channel
    first = await cluster.connect(0)
    await cluster.subscribe(first, channel, "ann")
    await leave_node_0(recovering, first)
    await trigger_ticks(cluster, 0, channel, range(20))

    second = await cluster.connect(1)
    subscribing = asyncio.create_task(cluster.subscribe(second, channel, "ann"))
    for n in range(20, 60, 2):  # while the subscribe and the history read run
        await asyncio.gather(
            cluster.trigger(0, channel, "tick", {"n": n}), cluster.trigger(1, channel, "tick", {"n": n + 1})
        )
    await subscribing
    received = await ticks(second, channel, 60)

    assert sorted(data["n"] for data in received) == list(range(60))
    ids = [data["relay_id"] for data in received]
    assert [int(each.partition("-")[2]) for each in ids] == list(range(1, 61))  # history order, each once
    await barrier(cluster, [second], channel)


async def test_a_user_back_on_another_node_after_its_events_left_the_history_gets_relay_gap(start: Start) -> None:
    recovering = await start({**RECOVERY, "recovery_max_events": 5})
    cluster, channel, redis = recovering.cluster, recovering.channel, recovering.redis
    first = await cluster.connect(0)
    await cluster.subscribe(first, channel, "ann")
    await leave_node_0(recovering, first)
    for batch in range(30):  # 300 events, far beyond the 5 (approximately: MAXLEN ~) kept
        events = [{"channel": channel, "name": "tick", "data": {"n": batch * 10 + i}} for i in range(10)]
        await cluster.request(0, "trigger_batch", events)
    assert 5 <= await redis.xlen(recovering.history) < 300  # bounded by count
    assert 0 < await redis.pttl(recovering.history) <= 2 * 60_000  # and goes two windows after its last event

    second = await cluster.connect(1)
    await cluster.subscribe(second, channel, "ann")
    gap = await second.expect("relay:gap", channel)
    assert inner(gap) == {"reason": "history"}
    await trigger_ticks(cluster, 1, channel, range(300, 301))
    assert [data["n"] for data in await ticks(second, channel, 1)] == [300]


async def test_live_delivery_goes_on_without_ids_while_redis_is_down(start: Start) -> None:
    recovering = await start(RECOVERY)
    cluster, channel = recovering.cluster, recovering.channel
    client = await cluster.connect(0)
    await cluster.subscribe(client, channel, "ann")
    await trigger_ticks(cluster, 0, channel, range(1))
    assert "relay_id" in (await ticks(client, channel, 1))[0]
    cluster.redis.stop()

    await trigger_ticks(cluster, 0, channel, range(1, 4))
    during = await ticks(client, channel, 3)

    assert [data["n"] for data in during] == [1, 2, 3]
    assert all("relay_id" not in data for data in during)  # not numbered: Redis keeps the history


async def test_a_user_still_subscribed_on_another_node_is_recovered_from_its_last_answered_ping(start: Start) -> None:
    """Node 0 has not noticed that the page's old connection is dead (or it is another tab of the user) when
    the user subscribes on node 1: node 1 starts from where node 0 last confirmed the old connection stood."""
    recovering = await start({**RECOVERY, "activity_timeout": 1})
    cluster, channel, redis = recovering.cluster, recovering.channel, recovering.redis
    first = await cluster.connect(0)
    await cluster.subscribe(first, channel, "ann")
    await trigger_ticks(cluster, 1, channel, range(3))
    confirmed = await ticks(first, channel, 3, answer_pings=True)
    await first.expect("pusher:ping")  # after a second of client silence: everything before it is proven
    await first.send({"event": "pusher:pong", "data": {}})
    positions = recovering.state_key("at:ann")

    async def confirmed_in_redis() -> bool:
        value = await redis.hget(positions, first.socket_id)
        return isinstance(value, bytes) and value.split(b"\0")[0].decode() == confirmed[-1]["relay_id"]

    await wait_until(confirmed_in_redis)
    await trigger_ticks(cluster, 1, channel, range(3, 5))
    unconfirmed = await ticks(first, channel, 2)  # written to the old connection, never confirmed

    second = await cluster.connect(1)
    await cluster.subscribe(second, channel, "ann")
    replayed = await ticks(second, channel, 2)
    assert replayed == unconfirmed  # same events, same relay_ids
    await trigger_ticks(cluster, 0, channel, range(5, 6))
    assert [data["n"] for data in await ticks(second, channel, 1)] == [5]

    # The old connection goes: the user is still on the channel (node 1), so no departure is recorded.
    await first.close()

    async def forgotten() -> bool:
        return not await redis.hexists(positions, first.socket_id)

    await wait_until(forgotten)
    assert not await redis.exists(recovering.state_key("left:ann"))
