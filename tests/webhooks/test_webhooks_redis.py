"""Webhooks with Redis: two relay nodes in-process sharing a real redis-server for the webhook queue, held
leaves and dead letters.

Each node runs the local adapter, so channel/member transitions are per node here; what these tests check is
the webhook store: a reload onto another node, a restart, a crashed node, a queue and dead letters shared by
every node. Transitions reported once across a real cluster: test_webhooks_cluster.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from relay.app import CONFIG_KEY
from relay.config import Config, WebhookConfig
from relay.webhooks.model import Delivery
from relay.webhooks.redis_store import RedisStore
from tests.support.redis import RedisProcess
from tests.support.redis_cluster import RedisClusterProcesses
from tests.support.timeouts import TIMEOUT, scaled
from tests.webhooks.harness import (
    APP_ID,
    Client,
    Receiver,
    RelayStarter,
    receiver,
    redis_config,
    relay_config,
    relays,
    same_events,
    settings,
    signed_request,
    unique_prefix,
    wait_for_cluster,
    wait_for_counters,
)

__all__ = ["receiver", "relays"]  # fixtures used by name

ROOT = Path(__file__).resolve().parents[2]


def cluster_config(receiver: Receiver, redis: RedisProcess | RedisClusterProcesses, **overrides: float) -> Config:
    return relay_config([WebhookConfig(receiver.url)], settings(**overrides), redis_config(redis.url, unique_prefix()))


async def test_reload_onto_another_node_fires_no_leave_join_pair(
    redis_process: RedisProcess, receiver: Receiver, relays: RelayStarter
) -> None:
    config = cluster_config(receiver, redis_process, leave_delay=scaled(1.0))
    node_a = await relays(config)
    node_b = await relays(config)
    first = await Client.connect(node_a.ws_url)
    await first.subscribe("presence-room", user_id="1")
    joined = [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "1"},
    ]
    await receiver.wait_for(lambda: len(receiver.delivered_events()) == 2)

    await first.close()  # the page reloads, and the new socket lands on the other node
    await wait_for_counters(node_a, lambda counters: counters.held == 2)
    second = await Client.connect(node_b.ws_url)
    await second.subscribe("presence-room", user_id="1")
    await wait_for_counters(node_b, lambda counters: counters.cancelled == 2)
    await second.close()  # now the user really leaves

    await receiver.wait_for(lambda: len(receiver.delivered_events()) >= 4)
    await node_b.stop()
    await node_a.stop()
    assert receiver.problems == []
    assert same_events(receiver.delivered_events()[:2], joined)
    assert same_events(
        receiver.delivered_events()[2:],
        [
            {"name": "member_removed", "channel": "presence-room", "user_id": "1"},
            {"name": "channel_vacated", "channel": "presence-room"},
        ],
    )


async def test_queued_webhooks_survive_a_node_restart(
    redis_process: RedisProcess, receiver: Receiver, relays: RelayStarter
) -> None:
    receiver.default = 500
    config = cluster_config(
        receiver, redis_process, retry_for=scaled(30.0), leave_delay=scaled(0.5), shutdown_deadline=scaled(0.5)
    )
    node = await relays(config)
    client = await Client.connect(node.ws_url)
    await client.subscribe("news")
    await wait_for_counters(node, lambda counters: counters.failed_attempts >= 1)
    failed_id = receiver.requests[0].delivery_id

    await node.stop()  # the socket closes: channel_vacated is held, channel_occupied waits for its retry
    await client.close()
    receiver.default = 200
    restarted = await relays(config)

    await wait_for_counters(restarted, lambda counters: counters.delivered == 2)
    assert receiver.problems == []
    [occupied] = [request for request in receiver.delivered if request.events[0]["name"] == "channel_occupied"]
    assert occupied.delivery_id == failed_id, "a retry keeps its delivery id across nodes"
    assert same_events(
        receiver.delivered_events(),
        [{"name": "channel_occupied", "channel": "news"}, {"name": "channel_vacated", "channel": "news"}],
    )


# A node that takes a delivery off the shared queue and is then killed (SIGKILL) before it answers.
_CRASHING_NODE = """
import asyncio, sys
from relay.config import RedisConfig
from relay.webhooks.model import Delivery
from relay.webhooks.redis_store import RedisStore

async def main() -> None:
    url, prefix, node_timeout, delivery_id, hook = sys.argv[1:]
    store = RedisStore(RedisConfig(url, prefix, float(node_timeout)), 100, 100, node_id="crashing")
    await store.start()
    event = {"name": "channel_occupied", "channel": "news"}
    await store.push([Delivery(delivery_id, "1001", hook, (event,), 1)])
    taken = await store.take(5.0)
    print("taken", taken.id if taken else None, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_deliveries_in_flight_on_a_crashed_node_are_sent_by_another(
    redis_backend: RedisProcess | RedisClusterProcesses, receiver: Receiver, relays: RelayStarter
) -> None:
    config = cluster_config(receiver, redis_backend)
    assert config.redis is not None
    argv = [redis_backend.url, config.redis.prefix, str(config.redis.node_timeout), "d" * 32, receiver.url]
    crashing = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CRASHING_NODE, *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert crashing.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            line = await crashing.stdout.readline()
        assert line.split() == [b"taken", b"d" * 32]
    finally:
        crashing.kill()  # by PID: a crash, no chance to hand the delivery back
        await crashing.wait()

    await relays(config)  # notices the dead node once its liveness record expires (node_timeout)
    await receiver.wait_for(lambda: len(receiver.delivered) == 1)
    assert receiver.problems == []
    assert receiver.delivered[0].delivery_id == "d" * 32
    assert receiver.delivered[0].events == [{"name": "channel_occupied", "channel": "news"}]


async def test_two_nodes_share_one_queue_and_send_each_delivery_once(
    redis_backend: RedisProcess | RedisClusterProcesses, receiver: Receiver, relays: RelayStarter
) -> None:
    config = cluster_config(receiver, redis_backend, batch_size=1)
    node_a = await relays(config)
    node_b = await relays(config)
    app = node_a.app[CONFIG_KEY].apps[0]
    expected = []
    for index in range(30):
        for name, node in (("a", node_a), ("b", node_b)):
            event = {"name": "cache_miss", "channel": f"cache-{name}-{index}"}
            node.webhooks.notify(app, event)
            expected.append(event)

    await receiver.wait_for(lambda: len(receiver.delivered_events()) >= len(expected))
    await node_a.stop()
    await node_b.stop()
    assert receiver.problems == []
    assert same_events(receiver.delivered_events(), expected)
    ids = [request.delivery_id for request in receiver.requests]
    assert len(ids) == len(set(ids)) == len(expected)
    assert node_a.webhooks.counters.delivered + node_b.webhooks.counters.delivered == len(expected)


async def test_dead_letters_are_shared_and_replayed_from_any_node(
    redis_process: RedisProcess, receiver: Receiver, relays: RelayStarter
) -> None:
    receiver.default = 500
    config = cluster_config(receiver, redis_process, retry_for=scaled(0.5))
    node_a = await relays(config)
    node_b = await relays(config)
    client = await Client.connect(node_a.ws_url)
    await client.subscribe("news")

    # Either node may have made the last attempt.
    await wait_for_cluster([node_a, node_b], lambda counters: sum(c.dead_lettered for c in counters) == 1)

    path = f"/apps/{APP_ID}/webhooks/dead_letters"
    status, body = await signed_request(node_b, "GET", path)
    assert status == 200
    [letter] = body["dead_letters"]
    assert letter["events"] == [{"name": "channel_occupied", "channel": "news"}]

    receiver.default = 200
    status, body = await signed_request(node_b, "POST", f"{path}/replay", {})
    assert (status, body) == (200, {"replayed": 1})
    await receiver.wait_for(lambda: len(receiver.delivered) == 1)
    assert receiver.delivered[0].delivery_id == letter["id"]
    status, body = await signed_request(node_a, "GET", path)
    assert (status, body) == (200, {"dead_letters": []})
    await client.close()


@pytest.mark.parametrize("limit", [2])
async def test_shared_queue_is_bounded(redis_process: RedisProcess, limit: int) -> None:
    store = RedisStore(redis_config(redis_process.url, unique_prefix()), queue_limit=limit, dead_letter_limit=10)
    await store.start()
    try:
        event = {"name": "channel_occupied", "channel": "news"}
        deliveries = [Delivery(f"id-{index}", APP_ID, "http://127.0.0.1:9/", (event,), 1) for index in range(3)]
        assert await store.push(deliveries) == limit
    finally:
        await store.close()
