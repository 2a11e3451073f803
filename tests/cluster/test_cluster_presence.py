"""Presence across three nodes: member lists and counts span nodes; member_added only for a user's first
connection anywhere, member_removed only when their last connection anywhere leaves. Plus Laravel Echo
(pusher-js in Node) with members on different nodes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.harness import Clients, echo_subscribe
from tests.cluster.conftest import Cluster, barrier, unique
from tests.integration.wire import Client, inner, wait_until
from tests.support.fixtures import NodeFactory
from tests.support.timeouts import TIMEOUT, scaled

pytestmark = pytest.mark.timeout(scaled(60))


async def join(cluster: Cluster, node: int, channel: str, user_id: str, info: dict[str, Any] | None = None) -> Client:
    client = await cluster.connect(node)
    await cluster.subscribe(client, channel, user_id=user_id, user_info=info or {"name": user_id})
    return client


async def presence_of(cluster: Cluster, client: Client, channel: str, user_id: str) -> dict[str, Any]:
    """Subscribe `client` as `user_id` and return the `presence` object of subscription_succeeded."""
    frame = await cluster.subscribe(client, channel, user_id=user_id, user_info={"name": user_id})
    presence: dict[str, Any] = inner(frame)["presence"]
    return presence


async def subscription_count(cluster: Cluster, node: int, channel: str) -> int:
    response = await cluster.request(node, "channel_info", channel, ["subscription_count"])
    assert response.status == 200, response
    count: int = response.body.get("subscription_count", 0)
    return count


async def test_member_list_and_count_span_nodes(shared_cluster: Cluster) -> None:
    channel = unique("presence-room-")
    ann = await join(shared_cluster, 0, channel, "ann")
    bob = await join(shared_cluster, 1, channel, "bob")

    cid = await shared_cluster.connect(2)
    presence = await presence_of(shared_cluster, cid, channel, "cid")

    assert sorted(presence["ids"]) == ["ann", "bob", "cid"]
    assert presence["count"] == 3
    assert presence["hash"] == {"ann": {"name": "ann"}, "bob": {"name": "bob"}, "cid": {"name": "cid"}}
    # Earlier members on other nodes heard of each later one, once.
    for client, user in [(ann, "bob"), (ann, "cid"), (bob, "cid")]:
        added = await client.expect("pusher_internal:member_added", channel)
        assert inner(added) == {"user_id": user, "user_info": {"name": user}}
    await barrier(shared_cluster, [ann, bob, cid], channel)


@pytest.mark.parametrize("leave", ["disconnect", "unsubscribe"])
async def test_member_added_and_removed_once_for_a_user_on_two_nodes(shared_cluster: Cluster, leave: str) -> None:
    channel = unique("presence-room-")
    watcher = await join(shared_cluster, 2, channel, "watcher")

    first = await join(shared_cluster, 0, channel, "sam")  # sam's first connection anywhere
    added = await watcher.expect("pusher_internal:member_added", channel)
    assert inner(added) == {"user_id": "sam", "user_info": {"name": "sam"}}

    second = await shared_cluster.connect(1)  # sam again, on another node
    presence = await presence_of(shared_cluster, second, channel, "sam")
    assert sorted(presence["ids"]) == ["sam", "watcher"]
    assert presence["count"] == 2
    await barrier(shared_cluster, [watcher, first, second], channel)  # no second member_added anywhere

    async def go(client: Client) -> None:
        if leave == "disconnect":
            await client.close()
        else:
            await client.unsubscribe(channel)

    await go(first)
    # member_removed would be published before the subscription count drops, so once it has, the
    # barrier shows none was sent: sam is still here on node 1.
    await wait_until(lambda: _count_is(shared_cluster, 2, channel, 2), TIMEOUT)
    await barrier(shared_cluster, [watcher, second], channel)
    users = await shared_cluster.request(0, "users_info", channel)
    assert sorted(user["id"] for user in users.body["users"]) == ["sam", "watcher"]

    await go(second)  # sam's last connection anywhere
    removed = await watcher.expect("pusher_internal:member_removed", channel)
    assert inner(removed) == {"user_id": "sam"}
    await barrier(shared_cluster, [watcher], channel)


async def _count_is(cluster: Cluster, node: int, channel: str, expected: int) -> bool:
    return await subscription_count(cluster, node, channel) == expected


async def test_user_count_counts_users_not_connections_across_nodes(shared_cluster: Cluster) -> None:
    channel = unique("presence-room-")
    for node, user in [(0, "ann"), (1, "ann"), (2, "ann"), (1, "bob"), (2, "bob")]:
        await join(shared_cluster, node, channel, user)

    for node in range(3):
        response = await shared_cluster.request(node, "channel_info", channel, ["user_count", "subscription_count"])
        assert response.status == 200
        assert response.body == {"occupied": True, "user_count": 2, "subscription_count": 5}, f"node {node}"


# Laravel Echo over pusher-js, members on different nodes ------------------------------------------

ANN: dict[str, Any] = {"user_id": "1", "user_info": {"id": 1, "name": "Ann"}}
BOB: dict[str, Any] = {"user_id": "2", "user_info": {"id": 2, "name": "Bob"}}


async def test_echo_here_joining_leaving_with_members_on_two_nodes(
    shared_cluster: Cluster, node_factory: NodeFactory
) -> None:
    clients = Clients(node_factory)
    room = unique("room.")
    credentials = {"app_id": shared_cluster.app_id, "key": shared_cluster.key, "secret": shared_cluster.secret}
    ann = await clients.echo(shared_cluster.nodes[0].port, name="ann", user=ANN, **credentials)
    await echo_subscribe(ann, "presence", room)
    assert (await ann.expect(type="here", name=room))["members"] == [ANN["user_info"]]

    bob = await clients.echo(shared_cluster.nodes[1].port, name="bob", user=BOB, **credentials)
    await echo_subscribe(bob, "presence", room)
    bob_here = await bob.expect(type="here", name=room)
    assert sorted(bob_here["members"], key=lambda member: member["id"]) == [ANN["user_info"], BOB["user_info"]]
    assert (await ann.expect(type="joining", name=room))["member"] == BOB["user_info"]

    await bob.send({"op": "disconnect"})
    assert (await ann.expect(type="leaving", name=room))["member"] == BOB["user_info"]
    # Nobody is announced to themselves, and each change exactly once.
    assert [line["type"] for line in ann.seen if line["type"] in ("joining", "leaving")] == ["joining", "leaving"]
    assert [line for line in bob.seen if line["type"] in ("joining", "leaving")] == []
