"""What only the Redis adapter can show: selective delivery, batching, dead nodes, Redis outages."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from relay.adapters.base import Envelope, EnvelopeKind, Position, Retention
from relay.app import create_app
from relay.config import load_config
from relay.metrics import Metrics
from relay.redis.adapter import RedisAdapter
from tests.adapters.conftest import APP, TEST_NODE_TIMEOUT, NodeFactory, RecordingListener, TestNode, redis_config
from tests.support import TIMEOUT, RedisProcess, scaled


def event(channel: str, n: int) -> Envelope:
    return Envelope(
        EnvelopeKind.EVENT, APP, channel, b'{"event":"e","channel":"%s","data":"%d"}' % (channel.encode(), n)
    )


def redis_of(node: TestNode) -> RedisAdapter:
    assert isinstance(node.adapter, RedisAdapter)
    return node.adapter


async def wait_until(condition: object, what: str, timeout: float = TIMEOUT) -> None:
    """Poll a condition of the adapter's own state (connected, counters), which has no event to await."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.1f}s: {what}")
        await asyncio.sleep(0.02)


async def test_node_receives_only_channels_its_clients_hold(make_redis_node: NodeFactory) -> None:
    a, b = await make_redis_node("a"), await make_redis_node("b")
    await b.subscribe("wanted", "b1")
    await b.settle()
    a.adapter.publish(event("unwanted", 1))  # nobody on b holds it: b must not even receive it
    a.adapter.publish(event("wanted", 1))
    await b.listener.wait_for(lambda: bool(b.listener.frames("wanted")), "the wanted event")
    assert b.listener.frames("unwanted") == []
    assert redis_of(b).received == 1

    await b.unsubscribe("wanted", "b1")
    await b.settle()
    a.adapter.publish(event("wanted", 2))
    await b.subscribe("marker", "b2")
    await b.settle()
    a.adapter.publish(event("marker", 1))  # same publisher link, so it arrives after wanted/2 would have
    await b.listener.wait_for(lambda: bool(b.listener.frames("marker")), "the marker event")
    assert b.listener.frames("wanted") == [event("wanted", 1).frame]
    assert redis_of(b).received == 2


async def test_one_publish_per_event_whatever_the_subscribers(
    make_redis_node: NodeFactory, redis_process: RedisProcess
) -> None:
    a, b = await make_redis_node("a"), await make_redis_node("b")
    for i in range(20):
        await b.subscribe("crowd", f"b{i}")
    await b.settle()
    before = await publish_calls(redis_process)
    a.adapter.publish(event("crowd", 1))
    await b.listener.wait_for(lambda: bool(b.listener.frames("crowd")), "the crowd event")
    assert await publish_calls(redis_process) - before == 1  # as Redis counts them
    assert b.listener.frames("crowd") == [event("crowd", 1).frame]  # one envelope; the node fans out


async def publish_calls(redis_process: RedisProcess) -> int:
    client = Redis.from_url(redis_process.url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


async def test_publish_and_state_survive_a_flushed_script_cache(
    make_redis_node: NodeFactory, redis_process: RedisProcess
) -> None:
    a, b = await make_redis_node("a"), await make_redis_node("b")
    await b.subscribe("news", "b1")
    await b.settle()
    client = Redis.from_url(redis_process.url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    a.adapter.publish(event("news", 1))  # EVALSHA answers NOSCRIPT: sent again as EVAL, once
    await b.listener.wait_for(lambda: bool(b.listener.frames("news")), "the event after SCRIPT FLUSH")
    assert await a.adapter.add_subscription(APP, "news", "a1") is False
    a.adapter.publish(event("news", 2))
    await b.listener.wait_for(lambda: len(b.listener.frames("news")) >= 2, "the second event")
    assert b.listener.frames("news") == [event("news", 1).frame, event("news", 2).frame]
    assert redis_of(a).reply_errors == 0 and redis_of(a).connected


async def test_calls_of_one_loop_iteration_share_one_pipeline(make_redis_node: NodeFactory) -> None:
    node = await make_redis_node("a")
    cluster = redis_of(node).cluster
    assert cluster is not None
    link = cluster.link
    before = link.batches
    answers = await asyncio.gather(*(node.adapter.add_subscription(APP, "busy", f"s{i}") for i in range(200)))
    assert answers == [True] + [False] * 199  # in issue order: the first one occupied the channel
    assert link.batches - before <= 2
    assert await node.adapter.subscription_count(APP, "busy") == 200


async def test_dead_node_members_are_removed_within_node_timeout(make_redis_node: NodeFactory) -> None:
    alive, doomed = await make_redis_node("alive"), await make_redis_node("doomed")
    await alive.subscribe("presence-room", "a1", "alice", {"n": 1})
    await doomed.subscribe("presence-room", "d1", "dave", {"n": 2})
    await doomed.subscribe("presence-room", "d2", "alice", {"n": 1})  # alice also stays through a1
    await doomed.subscribe("only-doomed", "d3")
    assert await alive.adapter.member_count(APP, "presence-room") == 2

    started = time.monotonic()
    await doomed.adapter.close(graceful=False)  # no cleanup: its heartbeat just stops, as on SIGKILL
    await alive.listener.wait_for(
        lambda: (
            alive.listener.members_lost == [(APP, "presence-room", "dave")]
            and alive.listener.channels_lost == [(APP, "only-doomed")]
        ),
        "dave and only-doomed reported lost",
        timeout=scaled(TEST_NODE_TIMEOUT * 3 + 5),
    )
    # Heartbeat TTL plus one sweep interval, with some slack for a loaded machine.
    assert time.monotonic() - started < scaled(TEST_NODE_TIMEOUT * 2 + 2)
    assert await alive.adapter.members(APP, "presence-room") == {"alice": {"n": 1}}
    assert await alive.adapter.subscription_count(APP, "presence-room") == 1
    assert await alive.adapter.channels(APP) == {"presence-room": 1}


async def test_node_presumed_dead_announces_its_members_again_once_when_it_returns(
    make_redis_node: NodeFactory, redis_process: RedisProcess
) -> None:
    alive, cut_off = await make_redis_node("alive"), await make_redis_node("cut-off")
    await alive.subscribe("presence-room", "a1", "alice", {"n": 1})
    await cut_off.subscribe("presence-room", "c1", "carol", {"n": 3})
    await cut_off.subscribe("presence-room", "c2", "alice", {"n": 1})  # alice stays through a1
    client = Redis.from_url(redis_process.url)
    try:
        # Its heartbeat expires, as when the node cannot reach Redis for longer than node_timeout.
        assert await client.delete("relay-test:node:cut-off:alive") == 1
    finally:
        await client.aclose()
    await alive.listener.wait_for(
        lambda: alive.listener.members_lost == [(APP, "presence-room", "carol")], "carol swept as lost"
    )
    await cut_off.listener.wait_for(lambda: bool(cut_off.listener.members_rejoined), "carol written back")
    await wait_until(lambda: redis_of(cut_off).evictions == 1, "the eviction counted")
    # carol's removal was announced, so her return is announced (with the webhook), once and by her node.
    assert [(m.user_id, m.socket_id, told) for m, told in cut_off.listener.members_rejoined] == [("carol", "c1", True)]
    assert alive.listener.members_rejoined == []
    assert await alive.adapter.members(APP, "presence-room") == {"alice": {"n": 1}, "carol": {"n": 3}}


async def test_graceful_close_removes_the_node_share_at_once(make_redis_node: NodeFactory) -> None:
    stays, leaves = await make_redis_node("stays"), await make_redis_node("leaves")
    await leaves.subscribe("presence-room", "l1", "lea", None)
    await leaves.adapter.close()
    # Reported on the closing node itself, so member_removed still goes out from there.
    assert leaves.listener.members_lost == [(APP, "presence-room", "lea")]
    assert await stays.adapter.members(APP, "presence-room") == {}
    assert await stays.adapter.channels(APP) == {}


async def test_redis_restart_resyncs_state_and_delivers_exactly_once(
    make_redis_node: NodeFactory, redis_process: RedisProcess
) -> None:
    a, b = await make_redis_node("a"), await make_redis_node("b")
    await a.subscribe("presence-room", "a1", "alice", {"name": "Alice"})
    await b.subscribe("presence-room", "b1", "bob", {"name": "Bob"})
    await b.subscribe("news", "b2")
    await b.settle()

    redis_process.kill()
    await asyncio.gather(redis_of(a).wait_connected(False), redis_of(b).wait_connected(False))
    # Meanwhile each node keeps serving its own clients from its share.
    assert await a.adapter.members(APP, "presence-room") == {"alice": {"name": "Alice"}}
    await b.subscribe("news", "b3")  # a client joining during the outage is written back later
    b.adapter.publish(event("news", -1))  # delivered locally at once, never twice
    assert b.listener.frames("news") == [event("news", -1).frame]

    redis_process.restart()
    await asyncio.gather(redis_of(a).wait_connected(), redis_of(b).wait_connected())
    await asyncio.gather(a.settle(), b.settle())
    assert redis_of(a).outages == 1 and redis_of(b).outages == 1
    metrics = Metrics()
    redis_of(a).register_metrics(metrics)
    assert "relay_redis_outages_total 1.0" in metrics.render()[0].decode()  # what /metrics shows
    for node in (a, b):
        # Both nodes wrote their share back into an empty Redis (join order is the write-back order).
        assert await node.adapter.members(APP, "presence-room") == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
        assert await node.adapter.subscription_count(APP, "news") == 2
        assert await node.adapter.channels(APP) == {"presence-room": 2, "news": 2}
    # Each member is announced again by its own node only; no removal had been announced (no webhook).
    assert [(m.user_id, told) for m, told in a.listener.members_rejoined] == [("alice", False)]
    assert [(m.user_id, told) for m, told in b.listener.members_rejoined] == [("bob", False)]

    for n in range(100):
        a.adapter.publish(event("news", n))
    await b.listener.wait_for(lambda: len(b.listener.frames("news")) >= 101, "100 events after recovery")
    a.adapter.publish(event("news", 999))
    await b.listener.wait_for(lambda: event("news", 999).frame in b.listener.frames("news"), "the last event")
    assert b.listener.frames("news") == [event("news", n).frame for n in (-1, *range(100), 999)]


async def test_start_without_redis_then_connect_when_it_comes(redis_process: RedisProcess) -> None:
    redis_process.stop()
    adapter = RedisAdapter(redis_config(redis_process), node_id="early")
    node = TestNode(adapter, RecordingListener("early"))
    await adapter.start(node.listener)
    try:
        assert not adapter.connected
        assert await node.subscribe("presence-room", "e1", "eve", None) == (True, True)  # from the share
        redis_process.restart()
        await asyncio.wait_for(adapter.wait_connected(), TIMEOUT)
        assert await adapter.members(APP, "presence-room") == {"eve": None}
        assert await adapter.subscription_count(APP, "presence-room") == 1
    finally:
        await adapter.close()


def test_in_memory_default_does_not_import_redis() -> None:
    code = (
        "import sys\n"
        "from relay.app import create_app\n"
        "from relay.config import load_config\n"
        "create_app(load_config(env={}))\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'hiredis'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr


async def test_metrics_show_the_redis_adapter(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    app = create_app(load_config(env={"RELAY_REDIS_URL": redis_process.url}))
    client = await aiohttp_client(app)
    response = await client.get("/metrics")
    text = await response.text()
    assert "relay_redis_connected 1.0" in text
    assert "relay_redis_outages_total 0.0" in text
    assert "relay_redis_publishes_dropped_total 0.0" in text


async def test_a_killed_link_is_an_outage_not_a_silent_reconnect(
    make_redis_node: NodeFactory, redis_process: RedisProcess
) -> None:
    a, b = await make_redis_node("a"), await make_redis_node("b")
    await b.subscribe("news", "b1")
    await b.settle()
    client = Redis.from_url(redis_process.url)
    try:
        killed = await client.client_kill_filter(_type="pubsub")  # b's and a's pub/sub links
    finally:
        await client.aclose()
    assert killed == 2
    # redis-py would re-subscribe behind our back; the adapter must notice, count and re-open instead.
    await wait_until(lambda: redis_of(a).outages == 1 and redis_of(b).outages == 1, "both outages counted")
    await asyncio.gather(redis_of(a).wait_connected(), redis_of(b).wait_connected())
    await b.settle()
    assert await a.adapter.subscription_count(APP, "news") == 1
    for n in range(20):
        a.adapter.publish(event("news", n))
    await b.listener.wait_for(lambda: len(b.listener.frames("news")) >= 20, "20 events after the reconnect")
    a.adapter.publish(event("news", 999))
    await b.listener.wait_for(lambda: event("news", 999).frame in b.listener.frames("news"), "the last event")
    assert b.listener.frames("news") == [event("news", n).frame for n in (*range(20), 999)]


async def test_graceful_close_sends_every_queued_publish_first(make_redis_node: NodeFactory) -> None:
    a, b = await make_redis_node("a"), await make_redis_node("b")
    await b.subscribe("news", "b1")
    await b.settle()
    for n in range(2000):
        a.adapter.publish(event("news", n))
    await asyncio.wait_for(a.adapter.close(), TIMEOUT)  # at once: most are still queued
    await b.listener.wait_for(lambda: len(b.listener.frames("news")) >= 2000, "2000 events sent before close")
    assert b.listener.frames("news") == [event("news", n).frame for n in range(2000)]


def kept(channel: str, n: int) -> Envelope:
    """An event of a recovering channel: kept in Redis' history and numbered there."""
    return Envelope(
        EnvelopeKind.EVENT,
        APP,
        channel,
        b'{"event":"e","channel":"%s","data":"%d"}' % (channel.encode(), n),
        retention=Retention(max_events=100, ttl_ms=60_000),
    )


def ids(node: TestNode, channel: str) -> list[str]:
    return [envelope.event_id for envelope in node.listener.delivered if envelope.channel == channel]


def has_five(node: TestNode) -> Callable[[], bool]:
    return lambda: len(node.listener.frames("history")) == len(node.listener.frames("other")) == 5


@pytest.mark.parametrize("adapter_kind", ["redis", "redis-cluster"], indirect=True)
async def test_kept_events_get_one_id_on_every_node_in_publish_order(make_node: NodeFactory) -> None:
    """On a Redis Cluster too: each history sits in its shard channel's slot (the two channels may be served by
    two primaries, and the publishing node's batch is split between them)."""
    a, b = await make_node("a"), await make_node("b")
    for node, socket_id in ((a, "a1"), (b, "b1")):
        await node.subscribe("history", socket_id)
        await node.subscribe("other", socket_id)
        await node.settle()
    for n in range(5):  # one burst, two channels interleaved: one script call numbers both
        a.adapter.publish(kept("history", n))
        a.adapter.publish(kept("other", n))
    assert a.listener.frames("history") == []  # the publisher too waits for Redis' number
    for node in (a, b):
        await node.listener.wait_for(has_five(node), "5 events")
        for channel in ("history", "other"):
            assert node.listener.frames(channel) == [kept(channel, n).frame for n in range(5)]
    for channel in ("history", "other"):
        epoch = ids(a, channel)[0].split("-")[0]
        assert ids(a, channel) == ids(b, channel) == [f"{epoch}-{seq}" for seq in range(1, 6)]


@pytest.mark.parametrize("adapter_kind", ["redis", "redis-cluster"], indirect=True)
async def test_a_pipeline_mixing_a_loaded_script_with_one_not_loaded_yet_publishes_each_event_once(
    make_node: NodeFactory,
) -> None:
    """On a Redis Cluster the publish scripts are loaded on a primary by its first EVAL: a pipeline may carry a
    call of a loaded script (plain events) and one of a script that is not (kept ones); only the latter is
    sent again."""
    a, b = await make_node("a"), await make_node("b")
    await b.subscribe("mixed", "b1")
    await b.settle()
    a.adapter.publish(event("mixed", 0))  # plain: loads the plain script on the channel's primary
    await b.listener.wait_for(lambda: len(b.listener.frames("mixed")) == 1, "the first event")
    a.adapter.publish(event("mixed", 1))  # one loop iteration: one pipeline of two script calls
    a.adapter.publish(kept("mixed", 2))
    await b.listener.wait_for(lambda: len(b.listener.frames("mixed")) >= 3, "three events")
    a.adapter.publish(event("mixed", 3))  # a marker: anything sent twice before it shows
    await b.listener.wait_for(lambda: len(b.listener.frames("mixed")) >= 4, "four events")
    assert b.listener.frames("mixed") == [event("mixed", n).frame for n in range(4)]


async def test_kept_events_during_an_outage_are_delivered_at_once_and_numbered_when_redis_is_back(
    make_redis_node: NodeFactory, redis_process: RedisProcess
) -> None:
    a, b = await make_redis_node("a"), await make_redis_node("b")
    for node, socket_id in ((a, "a1"), (b, "b1")):
        await node.subscribe("history", socket_id)
        await node.settle()
    redis_process.stop()
    await redis_of(a).wait_connected(False)

    a.adapter.publish(kept("history", 1))
    assert a.listener.frames("history") == [kept("history", 1).frame]  # at once, with no id
    assert ids(a, "history") == [""]

    redis_process.restart()
    await asyncio.gather(redis_of(a).wait_connected(), redis_of(b).wait_connected())
    await asyncio.gather(a.settle(), b.settle())
    a.adapter.publish(kept("history", 2))
    await b.listener.wait_for(lambda: kept("history", 2).frame in b.listener.frames("history"), "the next event")
    await a.listener.wait_for(lambda: len(a.listener.frames("history")) == 2, "the next event here")
    assert a.listener.frames("history") == [kept("history", n).frame for n in (1, 2)]  # no second copy of 1

    # Whether b got event 1 live depends on which node reconnected first (docs/redis.md); the history has it.
    async with Redis.from_url(redis_process.url) as redis:
        history: Any = await redis.xrange(f"relay-test:app:{APP}:ch:history:history")
    epoch = history[0][0].decode().split("-")[0]
    assert [entry_id.decode() for entry_id, _ in history] == [f"{epoch}-1", f"{epoch}-2"]
    assert history[0][1][b"e"].endswith(kept("history", 1).frame)
    assert ids(a, "history") == ["", f"{epoch}-2"]
    assert ids(b, "history")[-1] == f"{epoch}-2"


async def test_recovery_writes_made_while_redis_is_away_are_written_before_the_next_recover(
    make_redis_node: NodeFactory, redis_process: RedisProcess
) -> None:
    adapter = redis_of(await make_redis_node("a"))
    adapter.record_position(APP, "history", "ann", Position("0-0", "s1"), 60_000)
    positions = f"relay-test:app:{APP}:ch:history:at:ann"
    async with Redis.from_url(redis_process.url) as redis:
        await wait_until_async(lambda: redis.hexists(positions, "s1"))
    redis_process.stop()
    await adapter.wait_connected(False)
    adapter.record_departure(APP, "history", "ann", Position("0-0", "s1"), 60_000)  # s1 ended meanwhile

    redis_process.restart()
    await adapter.wait_connected()
    answer = await adapter.recover(APP, "history", "ann", "s2", 60_000, None)
    # Redis restarted empty: the departure written back is all it knows, and the return starts from it.
    assert answer is not None and answer.kind == "replay" and answer.previous == Position("0-0", "s1")


async def wait_until_async(condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not await condition():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)
