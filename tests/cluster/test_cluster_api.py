"""The HTTP API answers for the whole cluster from any node: channel lists, counts, users, cache channels,
`info` on events, terminate_connections and events to a user reaching every node."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.cluster.conftest import Cluster, barrier, unique
from tests.integration.wire import ApiResponse, Client, build_request, inner, wait_until
from tests.support.timeouts import TIMEOUT, scaled

pytestmark = pytest.mark.timeout(scaled(60))

NODES = range(3)


async def same_everywhere(
    cluster: Cluster, ask: Callable[[int], Awaitable[ApiResponse]], expected: dict[str, Any]
) -> None:
    """Wait until node 0 gives `expected` (state written after a client was answered), then every node
    must give exactly the same answer."""

    async def node_zero_agrees() -> bool:
        response = await ask(0)
        return response.status == 200 and response.body == expected

    try:
        await wait_until(node_zero_agrees, TIMEOUT)
    except AssertionError:
        raise AssertionError(f"node 0 answered {await ask(0)}, expected {expected}") from None
    for node in NODES:
        response = await ask(node)
        assert (response.status, response.body) == (200, expected), f"node {node}"


async def subscribe_on(cluster: Cluster, placements: list[tuple[int, str, str | None]]) -> list[Client]:
    """(node, channel, presence user or None) → subscribed clients."""
    clients = []
    for node, channel, user in placements:
        client = await cluster.connect(node)
        await cluster.subscribe(client, channel, user_id=user)
        clients.append(client)
    return clients


async def test_channel_list_is_cluster_wide_from_every_node(shared_cluster: Cluster) -> None:
    stem = unique("stats")
    busy, quiet, presence = f"{stem}-busy", f"{stem}-quiet", f"presence-{stem}"
    await subscribe_on(
        shared_cluster,
        [
            *[(0, busy, None), (1, busy, None), (2, busy, None), (2, quiet, None)],
            *[(0, presence, "ann"), (1, presence, "ann"), (2, presence, "bob")],
        ],
    )
    await subscribe_on(shared_cluster, [(1, unique("other-"), None)])  # filtered out by the prefix

    async def plain(node: int) -> ApiResponse:
        return await shared_cluster.request(node, "channels_info", stem)

    async def counted(node: int) -> ApiResponse:
        return await shared_cluster.request(node, "channels_info", stem, ["subscription_count"])

    async def presence_counted(node: int) -> ApiResponse:
        return await shared_cluster.request(node, "channels_info", "presence-" + stem, ["user_count"])

    await same_everywhere(
        shared_cluster, counted, {"channels": {busy: {"subscription_count": 3}, quiet: {"subscription_count": 1}}}
    )
    await same_everywhere(shared_cluster, plain, {"channels": {busy: {}, quiet: {}}})
    await same_everywhere(shared_cluster, presence_counted, {"channels": {presence: {"user_count": 2}}})


async def test_channel_info_users_and_vacating_from_every_node(shared_cluster: Cluster) -> None:
    channel = unique("presence-lobby-")
    clients = await subscribe_on(shared_cluster, [(0, channel, "ann"), (1, channel, "bob"), (2, channel, "bob")])

    async def info(node: int) -> ApiResponse:
        return await shared_cluster.request(node, "channel_info", channel, ["user_count", "subscription_count"])

    async def users(node: int) -> ApiResponse:
        response = await shared_cluster.request(node, "users_info", channel)
        if response.status == 200:  # the order of users is not specified
            response.body["users"].sort(key=lambda user: user["id"])
        return response

    await same_everywhere(shared_cluster, info, {"occupied": True, "user_count": 2, "subscription_count": 3})
    await same_everywhere(shared_cluster, users, {"users": [{"id": "ann"}, {"id": "bob"}]})

    await clients[1].close()  # bob still has node 2
    await same_everywhere(shared_cluster, info, {"occupied": True, "user_count": 2, "subscription_count": 2})
    await clients[0].unsubscribe(channel)
    await clients[2].close()
    await same_everywhere(shared_cluster, info, {"occupied": False, "user_count": 0, "subscription_count": 0})
    await same_everywhere(shared_cluster, users, {"users": []})


async def test_events_info_reply_counts_the_whole_cluster(shared_cluster: Cluster) -> None:
    public, presence = unique("scores-"), unique("presence-scores-")
    await subscribe_on(
        shared_cluster, [(0, public, None), (1, public, None), (2, presence, "ann"), (0, presence, "bob")]
    )

    async def trigger_with_info(node: int) -> ApiResponse:
        sdk = shared_cluster.sdk(node)
        body = {"name": "goal", "data": "1", "channels": [public, presence], "info": "subscription_count,user_count"}
        request = build_request(sdk, "POST", f"/apps/{shared_cluster.app_id}/events", body)
        return await shared_cluster.api(node).send(request)

    expected = {"channels": {public: {"subscription_count": 2}, presence: {"user_count": 2, "subscription_count": 2}}}
    await same_everywhere(shared_cluster, trigger_with_info, expected)


@pytest.mark.parametrize("prefix", ["cache-", "private-cache-", "presence-cache-"])
async def test_cache_channel_content_is_shared_by_every_node(shared_cluster: Cluster, prefix: str) -> None:
    channel = unique(prefix + "price-")
    user = "ann" if prefix == "presence-cache-" else None

    # Nothing cached yet, asked on node 1.
    early = await shared_cluster.connect(1)
    await shared_cluster.subscribe(early, channel, user_id=user)
    assert await early.recv() == {"event": "pusher:cache_miss", "channel": channel}

    await shared_cluster.trigger(0, channel, "price", {"eur": 10})  # published on node 0
    assert (await early.expect("price", channel))["data"] == json.dumps({"eur": 10})

    for node in (1, 2):  # new subscribers elsewhere get the last event right after subscription_succeeded
        late = await shared_cluster.connect(node)
        await shared_cluster.subscribe(late, channel, user_id=None if user is None else f"late-{node}")
        assert await late.recv() == {"event": "price", "channel": channel, "data": json.dumps({"eur": 10})}

    for node in NODES:
        response = await shared_cluster.request(node, "channel_info", channel, ["cache"])
        assert response.status == 200, response
        cache = response.body["cache"]
        assert cache["data"] == json.dumps({"eur": 10}), f"node {node}: {response.body}"
        assert 0 < cache["ttl"] <= 1800


async def test_cache_channel_without_subscribers_keeps_the_event_for_other_nodes(shared_cluster: Cluster) -> None:
    channel = unique("cache-quote-")
    await shared_cluster.trigger(2, channel, "quote", "first")
    await shared_cluster.trigger(2, channel, "quote", "second")  # the last one wins

    subscriber = await shared_cluster.connect(0)
    await shared_cluster.subscribe(subscriber, channel)
    assert await subscriber.recv() == {"event": "quote", "channel": channel, "data": "second"}
    await barrier(shared_cluster, [subscriber], channel)


async def sign_in(cluster: Cluster, client: Client, user_id: str) -> None:
    signed = cluster.sdk(0).authenticate_user(client.socket_id, {"id": user_id})
    await client.send({"event": "pusher:signin", "data": signed})
    frame = await client.expect("pusher:signin_success")
    assert json.loads(inner(frame)["user_data"]) == {"id": user_id}


async def test_terminate_connections_on_one_node_closes_the_user_on_every_node(shared_cluster: Cluster) -> None:
    user, other = unique("tom-"), unique("ada-")
    channel = unique("news-")
    victims = []
    for node in NODES:
        client = await shared_cluster.connect(node)
        await sign_in(shared_cluster, client, user)
        victims.append(client)
    bystanders = []
    for node in (1, 2):
        client = await shared_cluster.connect(node)
        await sign_in(shared_cluster, client, other)
        await shared_cluster.subscribe(client, channel)
        bystanders.append(client)

    response = await shared_cluster.request(0, "terminate_user_connections", user)
    assert (response.status, response.body) == (200, {})

    for victim in victims:
        data = (await victim.expect("pusher:error"))["data"]
        assert (json.loads(data) if isinstance(data, str) else data)["code"] == 4009
        assert (await victim.closed())[0] == 4009
    await barrier(shared_cluster, bystanders, channel)  # other users keep their connections


async def test_event_to_a_user_reaches_their_connections_on_every_node(shared_cluster: Cluster) -> None:
    user = unique("uma-")
    personal = f"#server-to-user-{user}"
    clients = []
    for node in NODES:
        client = await shared_cluster.connect(node)
        await sign_in(shared_cluster, client, user)
        await client.subscribed(personal)
        clients.append(client)
    someone_else = await shared_cluster.connect(1)
    await sign_in(shared_cluster, someone_else, unique("ned-"))

    sdk = shared_cluster.sdk(2)
    body = {"name": "notice", "data": "hi", "channels": [personal]}
    response = await shared_cluster.api(2).send(
        build_request(sdk, "POST", f"/apps/{shared_cluster.app_id}/events", body)
    )
    assert response.status == 200, response

    for client in clients:
        assert await client.recv() == {"event": "notice", "channel": personal, "data": "hi"}
    await someone_else.expect_silence()
