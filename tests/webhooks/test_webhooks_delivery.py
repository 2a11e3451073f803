"""Webhooks without Redis: relay in-process, real WebSocket clients, a real receiver checking signatures with
the official `pusher` SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from relay.app import CONFIG_KEY
from relay.config import WEBHOOK_EVENT_TYPES, WebhookConfig
from relay.webhooks import WebhookCounters
from relay.webhooks.throttle import SUBSCRIPTION_COUNT_INTERVAL
from tests.support.ports import free_port
from tests.support.timeouts import TIMEOUT, scaled
from tests.webhooks.harness import (
    Client,
    Receiver,
    RelayStarter,
    event_key,
    receiver,
    relay_config,
    relays,
    same_events,
    settings,
    signed_request,
    wait_for_counters,
)

__all__ = ["receiver", "relays"]  # fixtures used by name


async def test_every_event_type_arrives_signed_and_validated(receiver: Receiver, relays: RelayStarter) -> None:
    server = await relays(relay_config([WebhookConfig(receiver.url, event_types=WEBHOOK_EVENT_TYPES)]))
    ann = await Client.connect(server.ws_url)
    bob = await Client.connect(server.ws_url)
    await ann.subscribe("presence-room", user_id="1")
    await bob.subscribe("presence-room", user_id="2")
    await ann.subscribe("cache-news")
    # Wait for it: a later count in the same batch would replace this one.
    counted: dict[str, Any] = {"name": "subscription_count", "channel": "cache-news", "subscription_count": 1}
    await receiver.wait_for(lambda: counted in receiver.delivered_events())
    await bob.whisper("presence-room", "client-typing", {"typing": True})
    await ann.expect("client-typing", "presence-room")
    await bob.unsubscribe("presence-room")
    await ann.expect("pusher_internal:member_removed", "presence-room")
    await ann.close()

    expected: list[dict[str, Any]] = [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "1"},
        {"name": "member_added", "channel": "presence-room", "user_id": "2"},
        {"name": "channel_occupied", "channel": "cache-news"},
        {"name": "cache_miss", "channel": "cache-news"},
        {
            "name": "client_event",
            "channel": "presence-room",
            "event": "client-typing",
            "data": '{"typing":true}',
            "socket_id": bob.socket_id,
            "user_id": "2",
        },
        {"name": "member_removed", "channel": "presence-room", "user_id": "2"},
        {"name": "member_removed", "channel": "presence-room", "user_id": "1"},
        {"name": "channel_vacated", "channel": "presence-room"},
        {"name": "channel_vacated", "channel": "cache-news"},
        counted,
        {"name": "subscription_count", "channel": "cache-news", "subscription_count": 0},
    ]
    await receiver.wait_for(lambda: len(receiver.delivered_events()) >= len(expected))
    await bob.close()
    assert receiver.problems == []
    assert same_events(receiver.delivered_events(), expected)
    ids = [request.delivery_id for request in receiver.requests]
    assert len(set(ids)) == len(ids), "one delivery id per request"
    order = [event_key(event) for event in receiver.delivered_events()]
    for channel in ("presence-room", "cache-news"):
        occupied = order.index(event_key({"name": "channel_occupied", "channel": channel}))
        assert occupied < order.index(event_key({"name": "channel_vacated", "channel": channel}))

    async with aiohttp.ClientSession() as session, session.get(f"{server.http_url}/metrics") as response:
        metrics = await response.text()
    assert f"relay_webhooks_sent_total {float(len(receiver.requests))}" in metrics
    for name in ("webhooks_queued", "webhooks_backlog"):
        assert f"relay_{name} 0.0" in metrics
    for name in ("webhook_failed_attempts", "webhooks_dropped", "webhooks_dead_lettered"):
        assert f"relay_{name}_total 0.0" in metrics


async def test_each_target_gets_only_its_event_types_and_channel_prefix(relays: RelayStarter) -> None:
    members, privates = Receiver(), Receiver()
    await members.start()
    await privates.start()
    try:
        hooks = [
            WebhookConfig(members.url, event_types=("member_added",), channel_prefix="presence-"),
            WebhookConfig(privates.url, event_types=("channel_occupied",), channel_prefix="private-"),
        ]
        server = await relays(relay_config(hooks))
        client = await Client.connect(server.ws_url)
        for channel in ("presence-x", "private-y", "news", "private-z"):
            await client.subscribe(channel, user_id="7")
        await client.close()
        # A graceful shutdown flushes everything queued: after it, what arrived is all there is.
        await server.stop()
    finally:
        await members.stop()
        await privates.stop()
    assert members.problems == privates.problems == []
    assert members.delivered_events() == [{"name": "member_added", "channel": "presence-x", "user_id": "7"}]
    assert same_events(
        privates.delivered_events(),
        [
            {"name": "channel_occupied", "channel": "private-y"},
            {"name": "channel_occupied", "channel": "private-z"},
        ],
    )


async def test_failing_receiver_is_retried_with_the_same_delivery_id(receiver: Receiver, relays: RelayStarter) -> None:
    receiver.answers.extend([500, 503, "stall"])  # the stall outlasts request_timeout: a timeout
    config = relay_config([WebhookConfig(receiver.url)], settings(request_timeout=scaled(0.5), retry_for=scaled(4.0)))
    server = await relays(config)
    client = await Client.connect(server.ws_url)
    await client.subscribe("news")

    await wait_for_counters(server, lambda counters: counters.delivered == 1)
    assert receiver.problems == []
    assert len(receiver.delivered) == 1
    attempts = receiver.requests
    assert len(attempts) >= 4
    assert {attempt.delivery_id for attempt in attempts} == {attempts[0].delivery_id}
    assert all(attempt.events == [{"name": "channel_occupied", "channel": "news"}] for attempt in attempts)
    assert [attempt.answered for attempt in attempts[:2]] == [500, 503]
    counters = server.webhooks.counters
    assert counters.delivered == 1
    assert counters.failed_attempts == len(attempts) - 1
    await client.close()


async def test_slow_receiver_does_not_delay_socket_traffic(receiver: Receiver, relays: RelayStarter) -> None:
    receiver.default = "stall"
    server = await relays(
        relay_config([WebhookConfig(receiver.url)], settings(batch_size=1, request_timeout=scaled(30.0)))
    )
    ann = await Client.connect(server.ws_url)
    bob = await Client.connect(server.ws_url)
    await ann.subscribe("private-chat")
    await bob.subscribe("private-chat")
    baseline = [await round_trip(ann, bob, index) for index in range(10)]
    for index in range(40):  # more webhook requests than may be in flight at once
        await ann.whisper("private-chat", "client-typing", {"n": index})
    await receiver.wait_for(lambda: receiver.stalled() >= 16)

    # Every webhook request is held open by the receiver (for up to 30 s); the sockets must not notice.
    stalled = [await round_trip(ann, bob, index) for index in range(10)]
    await ann.ping()
    # Loose bound, the machine is shared: a socket path waiting on webhooks would take request_timeout (30 s).
    print(f"client event round trip: max {max(baseline) * 1000:.1f} ms idle, {max(stalled) * 1000:.1f} ms stalled")
    assert max(stalled) < max(scaled(0.5), 3 * max(baseline))
    assert receiver.delivered == [], "the socket answered while every webhook request was still stalled"
    assert server.webhooks.queued > 0

    receiver.release.set()
    await receiver.wait_for(lambda: len(receiver.delivered_events()) >= 61)  # occupied, 20 probes, 40 typing
    assert receiver.problems == []
    await ann.close()
    await bob.close()


async def round_trip(sender: Client, to: Client, index: int) -> float:
    """Seconds for a client event from `sender` to reach `to` through relay."""
    started = asyncio.get_running_loop().time()
    await sender.whisper("private-chat", "client-probe", {"n": index})
    frame = await to.expect("client-probe", "private-chat")
    assert frame["data"] == {"n": index}
    return asyncio.get_running_loop().time() - started


async def test_page_reload_fires_no_leave_join_pair(receiver: Receiver, relays: RelayStarter) -> None:
    server = await relays(relay_config([WebhookConfig(receiver.url)], settings(leave_delay=scaled(1.0))))
    first = await Client.connect(server.ws_url)
    await first.subscribe("presence-room", user_id="1")
    joined = [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "1"},
    ]
    await receiver.wait_for(lambda: len(receiver.delivered_events()) == 2)
    assert same_events(receiver.delivered_events(), joined)

    await first.close()  # the page reloads: a new socket, same user, within leave_delay
    second = await Client.connect(server.ws_url)
    await second.subscribe("presence-room", user_id="1")
    await second.close()  # now the user really leaves

    left = [
        {"name": "member_removed", "channel": "presence-room", "user_id": "1"},
        {"name": "channel_vacated", "channel": "presence-room"},
    ]
    await receiver.wait_for(lambda: len(receiver.delivered_events()) >= 4)
    await server.stop()
    assert receiver.problems == []
    assert same_events(receiver.delivered_events()[:2], joined)
    assert same_events(receiver.delivered_events()[2:], left)


async def test_dead_letter_is_listed_and_replayed_through_the_signed_api(
    receiver: Receiver, relays: RelayStarter
) -> None:
    receiver.default = 500
    server = await relays(relay_config([WebhookConfig(receiver.url)], settings(retry_for=scaled(0.5))))
    client = await Client.connect(server.ws_url)
    await client.subscribe("news")
    await wait_for_counters(server, lambda counters: counters.dead_lettered == 1)

    path = "/apps/1001/webhooks/dead_letters"
    status, body = await signed_request(server, "GET", path)
    assert status == 200
    [letter] = body["dead_letters"]
    assert letter["events"] == [{"name": "channel_occupied", "channel": "news"}]
    assert letter["error"] == "HTTP 500"
    assert letter["attempts"] == len(receiver.requests) >= 2
    assert {request.delivery_id for request in receiver.requests} == {letter["id"]}

    async with aiohttp.ClientSession() as session, session.get(f"{server.http_url}{path}") as response:
        assert response.status == 401, "unsigned requests are refused"

    receiver.default = 200
    status, body = await signed_request(server, "POST", f"{path}/replay", {"ids": [letter["id"]]})
    assert (status, body) == (200, {"replayed": 1})
    await receiver.wait_for(lambda: len(receiver.delivered) == 1)
    assert receiver.delivered[0].delivery_id == letter["id"]
    assert receiver.delivered[0].events == letter["events"]
    assert receiver.problems == []

    status, body = await signed_request(server, "GET", path)
    assert (status, body) == (200, {"dead_letters": []})
    status, body = await signed_request(server, "POST", f"{path}/replay", {})
    assert (status, body) == (200, {"replayed": 0})
    await client.close()


async def test_graceful_shutdown_flushes_queued_webhooks(receiver: Receiver, relays: RelayStarter) -> None:
    # Long enough that nothing leaves on its own before the shutdown.
    long = settings(batch_window=scaled(60.0), leave_delay=scaled(60.0))
    server = await relays(relay_config([WebhookConfig(receiver.url)], long))
    client = await Client.connect(server.ws_url)
    await client.subscribe("news")
    await wait_for_counters(server, lambda counters: counters.accepted == 1)
    assert receiver.requests == []

    await server.stop()  # closes the socket (channel_vacated, held for leave_delay), then flushes
    assert receiver.problems == []
    assert [request.events for request in receiver.delivered] == [
        [{"name": "channel_occupied", "channel": "news"}, {"name": "channel_vacated", "channel": "news"}]
    ]
    assert server.webhooks.counters.dropped == 0


async def test_shutdown_gives_up_at_its_deadline_and_counts_what_was_lost(
    receiver: Receiver, relays: RelayStarter
) -> None:
    receiver.default = "stall"
    config = relay_config(
        [WebhookConfig(receiver.url)], settings(request_timeout=scaled(60.0), shutdown_deadline=0.2, leave_delay=0.0)
    )
    server = await relays(config)
    client = await Client.connect(server.ws_url)
    await client.subscribe("news")
    await receiver.wait_for(lambda: receiver.stalled() == 1)

    async with asyncio.timeout(TIMEOUT):
        await server.stop()
    counters = server.webhooks.counters
    assert counters.delivered == 0
    assert counters.dropped == 2  # channel_occupied in flight, channel_vacated queued


async def test_full_queue_drops_new_events_and_counts_them(receiver: Receiver, relays: RelayStarter) -> None:
    receiver.default = "stall"
    config = relay_config(
        [WebhookConfig(receiver.url)], settings(queue_limit=2, batch_size=1, request_timeout=scaled(60.0))
    )
    server = await relays(config)
    client = await Client.connect(server.ws_url)
    for index in range(5):
        await client.subscribe(f"news-{index}")

    def all_seen(counters: WebhookCounters) -> bool:
        return counters.accepted + counters.dropped == 5

    await wait_for_counters(server, all_seen)
    assert (server.webhooks.counters.accepted, server.webhooks.counters.dropped) == (2, 3)
    async with aiohttp.ClientSession() as session, session.get(f"{server.http_url}/metrics") as response:
        assert "relay_webhooks_dropped_total 3.0\n" in await response.text()
    receiver.release.set()
    await receiver.wait_for(lambda: len(receiver.delivered) == 2)
    await client.close()


async def test_app_without_webhooks_costs_nothing(relays: RelayStarter) -> None:
    server = await relays(relay_config([]))
    client = await Client.connect(server.ws_url)
    await client.subscribe("news")
    assert not server.webhooks.enabled
    assert server.webhooks.counters.accepted == 0
    status, body = await signed_request(server, "GET", "/apps/1001/webhooks/dead_letters")
    assert (status, body) == (200, {"dead_letters": []})
    await client.close()


async def test_refused_connections_are_retried_until_the_receiver_comes_up(relays: RelayStarter) -> None:
    port = free_port()  # nothing listens yet: every attempt is refused
    server = await relays(relay_config([WebhookConfig(f"http://127.0.0.1:{port}/hooks")], settings(retry_for=10.0)))
    client = await Client.connect(server.ws_url)
    await client.subscribe("news")
    await wait_for_counters(server, lambda counters: counters.failed_attempts >= 2)

    late = Receiver()
    await late.start(port)
    try:
        await wait_for_counters(server, lambda counters: counters.delivered == 1)
        assert late.problems == []
        assert [request.events for request in late.delivered] == [[{"name": "channel_occupied", "channel": "news"}]]
        assert server.webhooks.counters.dead_lettered == 0
    finally:
        await client.close()
        await server.stop()
        await late.stop()


async def test_subscription_count_is_opt_in_and_follows_each_change(relays: RelayStarter) -> None:
    everything, counts = Receiver(), Receiver()
    await everything.start()
    await counts.start()
    try:
        hooks = [WebhookConfig(everything.url), WebhookConfig(counts.url, event_types=("subscription_count",))]
        server = await relays(relay_config(hooks))
        ann = await Client.connect(server.ws_url)
        bob = await Client.connect(server.ws_url)

        def count(number: int) -> dict[str, Any]:
            return {"name": "subscription_count", "channel": "news", "subscription_count": number}

        # One at a time: counts of the same channel in one batch collapse into the newest.
        await ann.subscribe("news")
        await counts.wait_for(lambda: counts.delivered_events() == [count(1)])
        await bob.subscribe("news")
        await bob.subscribe("presence-room", user_id="2")  # never for presence channels
        await counts.wait_for(lambda: counts.delivered_events() == [count(1), count(2)])
        await bob.unsubscribe("news")
        await counts.wait_for(lambda: counts.delivered_events() == [count(1), count(2), count(1)])
        await ann.close()
        await bob.close()
        await server.stop()  # flushes: what arrived is all there is
    finally:
        await everything.stop()
        await counts.stop()
    assert everything.problems == counts.problems == []
    assert [event["subscription_count"] for event in counts.delivered_events()] == [1, 2, 1, 0]
    assert all(event["name"] != "subscription_count" for event in everything.delivered_events())
    assert {"name": "channel_occupied", "channel": "news"} in everything.delivered_events()


async def test_busy_channel_subscription_count_is_sent_at_most_every_five_seconds(
    receiver: Receiver, relays: RelayStarter
) -> None:
    server = await relays(relay_config([WebhookConfig(receiver.url, event_types=("subscription_count",))]))
    app = server.app[CONFIG_KEY].apps[0]
    loop = asyncio.get_running_loop()

    def count(channel: str, number: int) -> dict[str, Any]:
        return {"name": "subscription_count", "channel": channel, "subscription_count": number}

    # The node's own trigger is tested above; 150 sockets would only make this slower.
    started = loop.time()
    server.webhooks.notify(app, count("busy", 150))
    await receiver.wait_for(lambda: receiver.delivered_events() == [count("busy", 150)])
    server.webhooks.notify(app, count("busy", 151))
    server.webhooks.notify(app, count("busy", 152))
    server.webhooks.notify(app, count("quiet", 5))  # not busy: not held back
    await receiver.wait_for(lambda: count("quiet", 5) in receiver.delivered_events())
    assert count("busy", 152) not in receiver.delivered_events()

    await receiver.wait_for(lambda: count("busy", 152) in receiver.delivered_events(), TIMEOUT + 5)
    assert loop.time() - started >= SUBSCRIPTION_COUNT_INTERVAL
    assert [event for event in receiver.delivered_events() if event["channel"] == "busy"] == [
        count("busy", 150),
        count("busy", 152),
    ]
    assert receiver.problems == []


async def test_cache_miss_is_reported_once_for_clients_missing_together(
    receiver: Receiver, relays: RelayStarter
) -> None:
    # One batch (it closes at the shutdown flush): the misses of every client in it collapse into one.
    long = settings(batch_window=scaled(60.0), leave_delay=scaled(60.0))
    server = await relays(relay_config([WebhookConfig(receiver.url, event_types=("cache_miss",))], long))
    ann = await Client.connect(server.ws_url)
    bob = await Client.connect(server.ws_url)
    for client in (ann, bob):
        await client.subscribe("cache-news")
        await client.expect("pusher:cache_miss", "cache-news")
    await ann.subscribe("cache-other")
    await server.stop()
    await ann.close()
    await bob.close()
    assert receiver.problems == []
    assert same_events(
        receiver.delivered_events(),
        [{"name": "cache_miss", "channel": "cache-news"}, {"name": "cache_miss", "channel": "cache-other"}],
    )
