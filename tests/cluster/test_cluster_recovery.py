"""Missed-message recovery across nodes (docs/recovery.md, "Several nodes"), at the wire: a presence user
leaves node 0 and comes back on node 1, which replays from the channel's history in Redis with the ids
node 0 gave, or says `relay:gap` when the history no longer holds what it missed."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from tests.cluster.conftest import Cluster, ClusterFactory, barrier, unique
from tests.integration.wire import Client, inner, wait_until
from tests.support.timeouts import scaled

pytestmark = pytest.mark.timeout(scaled(60))

RECOVERY: dict[str, Any] = {"recovery": True, "recovery_window": 60}


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


async def leave_node_0(cluster: Cluster, redis: Redis, channel: str, client: Client) -> None:
    """Close `client` and wait until node 0 recorded in Redis where it stood."""
    await client.close()
    key = f"{cluster.prefix}:app:{cluster.app_id}:ch:{channel}:left:ann"

    async def recorded() -> bool:
        return bool(await redis.exists(key))

    await wait_until(recorded)


@pytest.fixture
async def redis_of() -> Any:
    clients: list[Redis] = []

    def open_redis(cluster: Cluster) -> Redis:
        client = Redis.from_url(cluster.redis.url)
        clients.append(client)
        return client

    yield open_redis
    for client in clients:
        await client.aclose()


async def test_a_user_back_on_another_node_gets_what_it_missed_with_the_same_ids(
    cluster_factory: ClusterFactory, redis_of: Any
) -> None:
    cluster = await cluster_factory(nodes=2, app=RECOVERY)
    redis = redis_of(cluster)
    channel = unique("presence-room-")
    first = await cluster.connect(0)
    await cluster.subscribe(first, channel, "ann")
    await trigger_ticks(cluster, 1, channel, range(3))
    live = await ticks(first, channel, 3)
    await leave_node_0(cluster, redis, channel, first)
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


async def test_a_user_back_on_another_node_after_its_events_left_the_history_gets_relay_gap(
    cluster_factory: ClusterFactory, redis_of: Any
) -> None:
    cluster = await cluster_factory(nodes=2, app={**RECOVERY, "recovery_max_events": 5})
    redis = redis_of(cluster)
    channel = unique("presence-room-")
    first = await cluster.connect(0)
    await cluster.subscribe(first, channel, "ann")
    await leave_node_0(cluster, redis, channel, first)
    for batch in range(30):  # 300 events, far beyond the 5 (approximately: MAXLEN ~) kept
        events = [{"channel": channel, "name": "tick", "data": {"n": batch * 10 + i}} for i in range(10)]
        await cluster.request(0, "trigger_batch", events)
    stream = f"{cluster.prefix}:app:{cluster.app_id}:ch:{channel}:history"
    assert 5 <= await redis.xlen(stream) < 300  # bounded by count
    assert 0 < await redis.pttl(stream) <= 2 * 60_000  # and goes two windows after its last event

    second = await cluster.connect(1)
    await cluster.subscribe(second, channel, "ann")
    gap = await second.expect("relay:gap", channel)
    assert inner(gap) == {"reason": "history"}
    await trigger_ticks(cluster, 1, channel, range(300, 301))
    assert [data["n"] for data in await ticks(second, channel, 1)] == [300]


async def test_live_delivery_goes_on_without_ids_while_redis_is_down(cluster_factory: ClusterFactory) -> None:
    cluster = await cluster_factory(nodes=2, app=RECOVERY)
    channel = unique("presence-room-")
    client = await cluster.connect(0)
    await cluster.subscribe(client, channel, "ann")
    await trigger_ticks(cluster, 0, channel, range(1))
    assert "relay_id" in (await ticks(client, channel, 1))[0]
    cluster.redis.stop()

    await trigger_ticks(cluster, 0, channel, range(1, 4))
    during = await ticks(client, channel, 3)

    assert [data["n"] for data in during] == [1, 2, 3]
    assert all("relay_id" not in data for data in during)  # not numbered: Redis keeps the history


async def test_a_user_still_subscribed_on_another_node_is_recovered_from_its_last_answered_ping(
    cluster_factory: ClusterFactory, redis_of: Any
) -> None:
    """Node 0 has not noticed that the page's old connection is dead (or it is another tab of the user) when
    the user subscribes on node 1: node 1 starts from where node 0 last confirmed the old connection stood."""
    cluster = await cluster_factory(nodes=2, app={**RECOVERY, "activity_timeout": 1})
    redis = redis_of(cluster)
    channel = unique("presence-room-")
    first = await cluster.connect(0)
    await cluster.subscribe(first, channel, "ann")
    await trigger_ticks(cluster, 1, channel, range(3))
    confirmed = await ticks(first, channel, 3, answer_pings=True)
    await first.expect("pusher:ping")  # after a second of client silence: everything before it is proven
    await first.send({"event": "pusher:pong", "data": {}})
    positions = f"{cluster.prefix}:app:{cluster.app_id}:ch:{channel}:at:ann"

    async def confirmed_in_redis() -> bool:
        value = await redis.hget(positions, first.socket_id)
        return value is not None and value.split(b"\0")[0].decode() == confirmed[-1]["relay_id"]

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
    assert not await redis.exists(f"{cluster.prefix}:app:{cluster.app_id}:ch:{channel}:left:ann")
