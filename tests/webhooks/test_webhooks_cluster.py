"""Webhooks from a real cluster: two `relay serve` subprocesses sharing a test-started redis-server (Redis
adapter and Redis webhook store), one receiver validating every request with the official `pusher` SDK.

Black-box: the nodes are configured through TOML only. A graceful stop (SIGTERM) flushes every queue, so
what the receiver holds after both nodes stopped is everything that was ever sent: "exactly once" is an
equality, not a timing guess.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.support.fixtures import RelayFactory
from tests.support.redis import RedisProcess
from tests.support.redis_cluster import RedisClusterProcesses
from tests.support.relay import RelayProcess
from tests.support.timeouts import scaled
from tests.webhooks.harness import APP_ID, KEY, SECRET, Client, Receiver, event_key, receiver, unique_prefix

__all__ = ["receiver"]  # fixture used by name


def cluster_toml(receiver: Receiver, redis: RedisProcess | RedisClusterProcesses, prefix: str) -> dict[str, Any]:
    return {
        "redis_url": redis.url,
        "redis": {"prefix": prefix, "node_timeout": scaled(5.0)},
        # No leave_delay: a held leave replaces an earlier one for the same key, which would hide a leave
        # reported twice; here every report must come from the adapter's cluster-wide transitions alone.
        "webhook": {"batch_window": 0.05, "leave_delay": 0.0, "retry_for": scaled(10.0), "shutdown_deadline": 5.0},
        "apps": [
            {
                "id": APP_ID,
                "key": KEY,
                "secret": SECRET,
                "enable_client_events": True,
                "client_event_rate": 0,
                "webhooks": [{"url": receiver.url}],
            }
        ],
    }


async def start_nodes(relay_factory: RelayFactory, config: dict[str, Any]) -> tuple[RelayProcess, RelayProcess]:
    # Blocking helpers run in a thread: the receiver lives on this test's event loop and must keep answering.
    node_a = await asyncio.to_thread(relay_factory, config)
    node_b = await asyncio.to_thread(relay_factory, config)
    return node_a, node_b


def counted(receiver: Receiver) -> Counter[bytes]:
    return Counter(event_key(event) for event in receiver.delivered_events())


async def test_two_nodes_report_each_transition_once(
    redis_backend: RedisProcess | RedisClusterProcesses, receiver: Receiver, relay_factory: RelayFactory
) -> None:
    node_a, node_b = await start_nodes(relay_factory, cluster_toml(receiver, redis_backend, unique_prefix()))
    on_a = await Client.connect(node_a.ws_url(KEY))
    on_b = await Client.connect(node_b.ws_url(KEY))

    # The same channel and the same presence user on both nodes.
    await on_a.subscribe("news")
    await on_b.subscribe("news")
    await on_a.subscribe("presence-room", user_id="1")
    await on_b.subscribe("presence-room", user_id="1")
    await on_a.whisper("presence-room", "client-typing", {"typing": True})
    await on_b.expect("client-typing", "presence-room")  # crossed the cluster

    joined = [
        {"name": "channel_occupied", "channel": "news"},
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "1"},
        {
            "name": "client_event",
            "channel": "presence-room",
            "event": "client-typing",
            "data": '{"typing":true}',
            "socket_id": on_a.socket_id,
            "user_id": "1",
        },
    ]
    await receiver.wait_for(lambda: all(counted(receiver)[event_key(event)] >= 1 for event in joined))

    # One node's subscriber leaving reports nothing: the channel and the member are still there on the other.
    await on_a.close()
    await on_b.ping()
    left = [
        {"name": "channel_vacated", "channel": "news"},
        {"name": "channel_vacated", "channel": "presence-room"},
        {"name": "member_removed", "channel": "presence-room", "user_id": "1"},
    ]
    await on_b.close()
    await receiver.wait_for(lambda: all(counted(receiver)[event_key(event)] >= 1 for event in left))

    # Graceful stops flush both nodes' queues: anything sent twice has arrived by now.
    await asyncio.to_thread(node_a.stop)
    await asyncio.to_thread(node_b.stop)
    assert receiver.problems == []
    assert counted(receiver) == Counter(event_key(event) for event in joined + left)
    ids = [request.delivery_id for request in receiver.delivered]
    assert len(set(ids)) == len(ids)
