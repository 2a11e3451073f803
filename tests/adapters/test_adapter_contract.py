"""The adapter contract (relay/adapters/base.py), against LocalAdapter and RedisAdapter alike.

`local` is one process, so it runs with one node; `redis` runs with three nodes on one real
redis-server, which is what the contract is about: the answers a node gets must be the cluster's.
"""

from __future__ import annotations

import time

import pytest

from relay.adapters.base import CachedEvent, Envelope, EnvelopeKind
from tests.adapters.conftest import APP, NodeFactory, TestNode


@pytest.fixture
async def cluster(adapter_kind: str, make_node: NodeFactory) -> list[TestNode]:
    """One node in memory, three nodes over Redis."""
    count = 1 if adapter_kind == "local" else 3
    return [await make_node(f"node{i}") for i in range(count)]


def event(channel: str, n: int, except_socket_id: str = "") -> Envelope:
    frame = b'{"event":"e","channel":"%s","data":"%d"}' % (channel.encode(), n)
    return Envelope(EnvelopeKind.EVENT, APP, channel, frame, except_socket_id)


async def subscribe_everywhere(nodes: list[TestNode], channel: str) -> None:
    for i, node in enumerate(nodes):
        await node.subscribe(channel, f"{node.listener.name}.{i}")
    for node in nodes:
        await node.settle()


async def test_publish_reaches_every_node_once(cluster: list[TestNode]) -> None:
    await subscribe_everywhere(cluster, "news")
    sent = [event("news", n) for n in range(50)]
    for envelope in sent:
        cluster[-1].adapter.publish(envelope)
    # A last event on the same channel: what arrives before it is everything that will arrive.
    cluster[-1].adapter.publish(event("news", 999))
    expected = [e.frame for e in sent] + [event("news", 999).frame]
    for node in cluster:
        await node.listener.wait_for(lambda n=node: len(n.listener.frames("news")) >= 51, "51 events on news")
        assert node.listener.frames("news") == expected


async def test_publish_order_per_channel_with_interleaved_channels(cluster: list[TestNode]) -> None:
    await subscribe_everywhere(cluster, "a")
    await subscribe_everywhere(cluster, "b")
    for n in range(300):
        cluster[0].adapter.publish(event("a", n))
        cluster[0].adapter.publish(event("b", n))
    for node in cluster:
        await node.listener.wait_for(
            lambda n=node: len(n.listener.frames("a")) >= 300 and len(n.listener.frames("b")) >= 300,
            "300 events on a and on b",
        )
        assert node.listener.frames("a") == [event("a", n).frame for n in range(300)]
        assert node.listener.frames("b") == [event("b", n).frame for n in range(300)]


async def test_socket_exclusion_travels_with_the_envelope(cluster: list[TestNode]) -> None:
    await subscribe_everywhere(cluster, "chat")
    cluster[0].adapter.publish(event("chat", 1, except_socket_id="123.456"))
    for node in cluster:
        await node.listener.wait_for(lambda n=node: bool(n.listener.frames("chat")), "the chat event")
        [received] = [e for e in node.listener.delivered if e.channel == "chat"]
        assert received.except_socket_id == "123.456"
        assert received == event("chat", 1, except_socket_id="123.456")


async def test_subscription_bookkeeping_first_and_last_anywhere(cluster: list[TestNode]) -> None:
    first, last = cluster[0], cluster[-1]
    assert await first.subscribe("room", "s1") == (False, True)  # (first member, first subscription)
    assert await last.subscribe("room", "s2") == (False, False)
    assert await first.adapter.subscription_count(APP, "room") == 2
    assert await last.adapter.subscription_count(APP, "room") == 2
    assert await first.unsubscribe("room", "s1") == (False, False)
    assert await last.adapter.subscription_count(APP, "room") == 1
    assert await last.unsubscribe("room", "s2") == (False, True)
    for node in cluster:
        assert await node.adapter.subscription_count(APP, "room") == 0
        assert await node.adapter.channels(APP) == {}
    # Removing what is not there changes nothing and reports nothing.
    assert await first.adapter.remove_subscription(APP, "room", "s1") is False


async def test_presence_member_added_with_first_connection_removed_with_last(cluster: list[TestNode]) -> None:
    first, last = cluster[0], cluster[-1]
    channel = "presence-room"
    assert await first.subscribe(channel, "a1", "alice", {"name": "Alice"}) == (True, True)
    assert await last.subscribe(channel, "a2", "alice", {"name": "Alice"}) == (False, False)
    assert await last.subscribe(channel, "b1", "bob", {"name": "Bob"}) == (True, False)
    for node in cluster:
        assert await node.adapter.members(APP, channel) == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
        assert await node.adapter.member_count(APP, channel) == 2
        assert await node.adapter.subscription_count(APP, channel) == 3
    assert await first.unsubscribe(channel, "a1") == (False, False)  # alice still there through a2
    assert await last.adapter.members(APP, channel) == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
    assert await last.unsubscribe(channel, "a2") == (True, False)
    assert await first.adapter.members(APP, channel) == {"bob": {"name": "Bob"}}
    assert await last.unsubscribe(channel, "b1") == (True, True)
    assert await first.adapter.member_count(APP, channel) == 0
    assert await first.adapter.remove_member(APP, channel, "b1", "bob") is False


async def test_channel_list_and_counts_are_cluster_wide(cluster: list[TestNode]) -> None:
    for i, node in enumerate(cluster):
        await node.subscribe("presence-lobby", f"p{i}", f"user{i}", None)
        await node.subscribe("private-orders", f"o{i}")
        await node.subscribe("news", f"n{i}")
    n = len(cluster)
    for node in cluster:
        assert await node.adapter.channels(APP) == {"presence-lobby": n, "private-orders": n, "news": n}
        assert await node.adapter.channels(APP, "pr") == {"presence-lobby": n, "private-orders": n}
        assert await node.adapter.channels(APP, "private-") == {"private-orders": n}
        assert await node.adapter.channels("another-app") == {}
        assert await node.adapter.member_count(APP, "presence-lobby") == n
        assert list(await node.adapter.members(APP, "presence-lobby")) == [f"user{i}" for i in range(n)]


async def test_connection_counts_span_nodes(cluster: list[TestNode]) -> None:
    counts = [await node.connect(f"c{i}") for i, node in enumerate(cluster)]
    assert counts == list(range(1, len(cluster) + 1))
    await cluster[0].adapter.remove_connection(APP, "c0")
    assert await cluster[-1].connect("extra") == len(cluster)


async def test_cache_channel_last_event_is_shared(cluster: list[TestNode]) -> None:
    assert await cluster[-1].adapter.get_cache(APP, "cache-prices") is None
    cached = CachedEvent("update", '{"eur":1}', time.time() + 60)
    await cluster[0].adapter.set_cache(APP, "cache-prices", cached)
    for node in cluster:
        assert await node.adapter.get_cache(APP, "cache-prices") == cached
    expired = CachedEvent("update", '{"eur":2}', time.time() - 1)
    await cluster[0].adapter.set_cache(APP, "cache-prices", expired)
    for node in cluster:
        assert await node.adapter.get_cache(APP, "cache-prices") is None


async def test_terminate_user_reaches_every_node(cluster: list[TestNode]) -> None:
    for node in cluster:
        await node.settle()  # the control channel is subscribed
    terminate = Envelope(EnvelopeKind.TERMINATE_USER, APP, user_id="mallory")
    cluster[0].adapter.publish(terminate)
    for node in cluster:
        await node.listener.wait_for(lambda n=node: terminate in n.listener.delivered, "terminate mallory")
        assert node.listener.delivered.count(terminate) == 1
