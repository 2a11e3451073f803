"""Missed-message recovery (docs/recovery.md) with stock Laravel Echo over pusher-js, through a proxy
that cuts the connection while the `pusher` SDK publishes at a steady rate."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pusher  # type: ignore[import-untyped]
import pytest

from tests.clients.harness import Clients, app_config, echo_subscribe, python_sdk
from tests.support import NodeClient, RelayProcess, scaled
from tests.support.fixtures import RelayFactory
from tests.support.metrics import scrape_samples, total
from tests.support.proxy import CuttingProxy
from tests.support.redis import RedisProcess
from tests.support.redis_cluster import RedisClusterProcesses

pytestmark = [pytest.mark.auth_features, pytest.mark.timeout(scaled(90))]

ANN: dict[str, Any] = {"user_id": "1", "user_info": {"id": 1, "name": "Ann"}}
ROOM = "room.7"  # presence-room.7 on the wire
# Short keep-alives on both ends, so a black hole is noticed in about two seconds.
FAST_KEEPALIVE: dict[str, object] = {"activity_timeout": 1, "pong_timeout": 1.0}
CLIENT_KEEPALIVE: dict[str, int] = {"activityTimeout": 1000, "pongTimeout": 1000}
RATE = 20.0  # events per second


@pytest.fixture
async def proxy() -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(0)
    yield proxy
    await proxy.stop()


async def start_proxy(proxy: CuttingProxy, relay: RelayProcess) -> CuttingProxy:
    proxy.upstream_port = relay.port
    return await proxy.start()


async def publish_steadily(sdk: pusher.Pusher, first: int, count: int) -> None:
    await publish_every(sdk, first, count, 1 / RATE)


async def joined_echo(clients: Clients, proxy: CuttingProxy) -> NodeClient:
    echo = await clients.echo(proxy.port, user=ANN, pusher_options=CLIENT_KEEPALIVE, timeout_ms=80_000)
    await echo_subscribe(echo, "presence", ROOM, listen=[".tick", ".relay:gap"])
    return echo


def ticks(echo: NodeClient) -> list[dict[str, Any]]:
    return [line["data"] for line in echo.seen if line["type"] == "listen" and line["event"] == ".tick"]


async def wait_for_tick(echo: NodeClient, n: int) -> None:
    await echo.expect(lambda line: line["event"] == ".tick" and line["data"]["n"] == n, type="listen", claim=False,
                      timeout=scaled(30))  # fmt: skip


def assert_every_event_in_order(received: list[dict[str, Any]], count: int) -> int:
    """Each of 0..count-1 arrives, in order; the only duplicates are replays (the sequence restarts at an
    earlier event, then goes on in order) with the same relay_id. Returns the number of duplicates."""
    numbers = [data["n"] for data in received]
    first_seen: dict[int, str] = {}
    for data in received:
        assert first_seen.setdefault(data["n"], data["relay_id"]) == data["relay_id"]
    assert sorted(first_seen) == list(range(count))
    in_order = [n for index, n in enumerate(numbers) if n not in numbers[:index]]
    assert in_order == list(range(count))
    for previous, n in itertools.pairwise(numbers):
        assert n == previous + 1 or n <= previous, f"skipped from {previous} to {n}: {numbers}"
    return len(numbers) - count


async def through_a_one_second_drop(relay: RelayProcess, clients: Clients, proxy: CuttingProxy) -> NodeClient:
    """An Echo page that hears 100 events at RATE while its network drops for a second after the 20th."""
    await start_proxy(proxy, relay)
    echo = await joined_echo(clients, proxy)
    publishing = asyncio.create_task(publish_steadily(python_sdk(relay.port), 0, 100))
    await wait_for_tick(echo, 20)
    proxy.refuse(True)
    proxy.drop()
    await asyncio.sleep(1.0)  # events keep coming while the network is down
    proxy.refuse(False)
    await publishing
    await wait_for_tick(echo, 99)
    return echo


async def assert_recovered(echo: NodeClient, relay: RelayProcess, proxy: CuttingProxy, count: int) -> int:
    """Every event after a reconnect, from the history, with no gap; returns the number of duplicates."""
    duplicates = assert_every_event_in_order(ticks(echo), count)
    assert proxy.connections >= 2
    assert not [line for line in echo.seen if line["type"] == "listen" and line["event"] == ".relay:gap"]
    assert (await scrape(relay))["replayed"] > 0  # the events of the outage came from the history
    return duplicates


async def test_every_event_arrives_when_the_connection_drops_for_a_second(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy
) -> None:
    relay = relay_factory(app_config(recovery=True, **FAST_KEEPALIVE))
    echo = await through_a_one_second_drop(relay, clients, proxy)

    duplicates = await assert_recovered(echo, relay, proxy, 100)
    assert duplicates <= 3 * RATE  # at most the events since the last answered ping (1 s keep-alive)


async def test_every_event_arrives_when_the_network_black_holes_until_pusher_js_notices(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy
) -> None:
    relay = relay_factory(app_config(recovery=True, **FAST_KEEPALIVE))
    await start_proxy(proxy, relay)
    echo = await joined_echo(clients, proxy)
    publishing = asyncio.create_task(publish_steadily(python_sdk(relay.port), 0, 140))
    await wait_for_tick(echo, 20)
    proxy.black_hole()  # nothing passes; pusher-js's ping goes unanswered and it reconnects
    await publishing
    await wait_for_tick(echo, 139)

    await assert_recovered(echo, relay, proxy, 140)


async def test_without_recovery_the_same_outage_loses_events(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy
) -> None:
    """The control: the outage above really does lose events when the app has no recovery."""
    relay = relay_factory(app_config(**FAST_KEEPALIVE))
    echo = await through_a_one_second_drop(relay, clients, proxy)
    received = [data["n"] for data in ticks(echo)]
    assert len(set(received)) < 100
    assert all("relay_id" not in data for data in ticks(echo))


async def test_a_return_after_the_window_gets_relay_gap(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy
) -> None:
    relay = relay_factory(app_config(recovery=True, recovery_window=2, **FAST_KEEPALIVE))
    await start_proxy(proxy, relay)
    echo = await joined_echo(clients, proxy)
    sdk = python_sdk(relay.port)
    await publish_steadily(sdk, 0, 5)
    await wait_for_tick(echo, 4)
    proxy.refuse(True)
    proxy.drop()
    await publish_steadily(sdk, 5, 5)
    await asyncio.sleep(3.0)  # longer than recovery_window
    proxy.refuse(False)

    gap = await echo.expect(type="listen", event=".relay:gap", timeout=scaled(30))
    assert gap["data"] == {"reason": "window"}
    await echo.expect(type="subscribed", name=ROOM)  # Echo's subscribed callback fires again on resubscribe
    await publish_steadily(sdk, 10, 3)
    await wait_for_tick(echo, 12)
    numbers = [data["n"] for data in ticks(echo)]
    assert numbers == [0, 1, 2, 3, 4, 10, 11, 12]


async def scrape(relay: RelayProcess) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{relay.http_url}/metrics") as response:
        samples = scrape_samples(await response.text())
    return {
        "bytes": total(samples, "relay_recovery_history_bytes"),
        "events": total(samples, "relay_recovery_history_events"),
        "replayed": total(samples, "relay_recovery_replayed_events_total"),
    }


async def test_history_stays_within_its_bounds_and_a_longer_gap_is_told(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy
) -> None:
    bounds = {"recovery_max_events": 40, "recovery_max_bytes": 3000}
    relay = relay_factory(app_config(recovery=True, **bounds, **FAST_KEEPALIVE))
    await start_proxy(proxy, relay)
    echo = await joined_echo(clients, proxy)
    sdk = python_sdk(relay.port)
    proxy.refuse(True)
    proxy.drop()
    largest = {"bytes": 0.0, "events": 0.0}
    for batch in range(30):  # 300 events of ~100 bytes, far beyond both bounds
        await asyncio.to_thread(
            sdk.trigger_batch,
            [{"channel": "presence-" + ROOM, "name": "tick", "data": {"n": batch * 10 + i, "pad": "x" * 40}}
             for i in range(10)],
        )  # fmt: skip
        figures = await scrape(relay)
        largest = {name: max(largest[name], figures[name]) for name in largest}
    assert 0 < largest["events"] <= 40
    assert 0 < largest["bytes"] <= 3000
    proxy.refuse(False)
    gap = await echo.expect(type="listen", event=".relay:gap", timeout=scaled(30))
    assert gap["data"] == {"reason": "history"}


async def through_a_drop_between_two_nodes(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy, redis_url: str, back_to: str
) -> list[dict[str, Any]]:
    """Two nodes on one Redis (or Redis Cluster); the page is on node A, 80 events are published on node B at
    RATE, and the page's network drops for a second after the 20th; it reconnects to node `back_to` ("a" or "b").
    Returns the events the page heard, numbered from 0."""
    config = {**app_config(recovery=True, **FAST_KEEPALIVE), "redis_url": redis_url}
    node_a = relay_factory(config)
    node_b = relay_factory(config)
    await start_proxy(proxy, node_a)
    echo = await joined_echo(clients, proxy)
    await wait_until_node_b_reaches(echo, node_b)
    publishing = asyncio.create_task(publish_steadily(python_sdk(node_b.port), 1, 80))
    await wait_for_tick(echo, 20)
    proxy.refuse(True)
    proxy.drop()
    proxy.upstream_port = (node_a if back_to == "a" else node_b).port
    await asyncio.sleep(1.0)
    proxy.refuse(False)
    await publishing
    await wait_for_tick(echo, 80)
    return [{**data, "n": data["n"] - 1} for data in ticks(echo) if data["n"] > 0]


async def test_with_redis_a_reconnect_to_the_same_node_recovers_events_published_on_another(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy, redis_process: RedisProcess
) -> None:
    received = await through_a_drop_between_two_nodes(relay_factory, clients, proxy, redis_process.url, "a")
    assert_every_event_in_order(received, 80)


async def test_with_redis_a_reconnect_to_another_node_recovers_too(
    relay_factory: RelayFactory,
    clients: Clients,
    proxy: CuttingProxy,
    redis_backend: RedisProcess | RedisClusterProcesses,
) -> None:
    """On one Redis and on a Redis Cluster."""
    received = await through_a_drop_between_two_nodes(relay_factory, clients, proxy, redis_backend.url, "b")
    assert_every_event_in_order(received, 80)


async def wait_until_node_b_reaches(echo: NodeClient, node_b: RelayProcess) -> None:
    """Event 0, published on node B until it arrives: node A's Redis subscription is in place."""
    sdk = python_sdk(node_b.port)
    for _ in range(50):
        await asyncio.to_thread(sdk.trigger, ["presence-" + ROOM], "tick", {"n": 0})
        try:
            await wait_for_tick_within(echo, 0, 0.2)
            return
        except AssertionError:
            continue
    raise AssertionError("node B's events never reached node A's subscriber")


async def wait_for_tick_within(echo: NodeClient, n: int, timeout: float) -> None:
    await echo.expect(lambda line: line["event"] == ".tick" and line["data"]["n"] == n, type="listen", claim=False,
                      timeout=timeout)  # fmt: skip


@pytest.mark.timeout(scaled(150))
async def test_an_echo_page_offline_for_30_seconds_ends_up_with_every_event(
    relay_factory: RelayFactory, clients: Clients, proxy: CuttingProxy
) -> None:
    """The issue's measure of done, with the default keep-alives on both ends: 30 s without network."""
    relay = relay_factory(app_config(recovery=True))
    await start_proxy(proxy, relay)
    echo = await clients.echo(proxy.port, user=ANN, timeout_ms=120_000)
    await echo_subscribe(echo, "presence", ROOM, listen=[".tick", ".relay:gap"])
    sdk = python_sdk(relay.port)
    publishing = asyncio.create_task(publish_every(sdk, 0, 80, interval=0.5))
    await wait_for_tick(echo, 10)
    proxy.refuse(True)
    proxy.drop()
    await asyncio.sleep(30.0)
    proxy.refuse(False)
    await publishing
    await echo.expect(lambda line: line["event"] == ".tick" and line["data"]["n"] == 79, type="listen", claim=False,
                      timeout=scaled(60))  # fmt: skip
    assert_every_event_in_order(ticks(echo), 80)
    assert not [line for line in echo.seen if line["type"] == "listen" and line["event"] == ".relay:gap"]


async def publish_every(sdk: pusher.Pusher, first: int, count: int, interval: float) -> None:
    for n in range(first, first + count):
        await asyncio.to_thread(sdk.trigger, ["presence-" + ROOM], "tick", {"n": n})
        await asyncio.sleep(interval)
