"""Private channels with real clients: Echo listen, whispers, and a refused subscription.

Channel auth is signed by the Node server SDK inside the client script (js/lib.mjs)."""

from __future__ import annotations

import pytest

from tests.clients.harness import Clients, echo_subscribe, python_trigger, subscribe
from tests.support import RelayProcess, scaled

pytestmark = [pytest.mark.auth_features, pytest.mark.timeout(scaled(60))]


async def test_echo_private_listen_receives_namespaced_laravel_event(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.echo(relay.port)
    await echo_subscribe(client, "private", "orders.1", listen=["OrderShipped"])

    # What Laravel's PusherBroadcaster sends for `class OrderShipped implements ShouldBroadcast`.
    await python_trigger(relay.port, "private-orders.1", "App\\Events\\OrderShipped", {"order": {"id": 1}})

    heard = await client.expect(type="listen", name="orders.1", event="OrderShipped")
    assert heard["data"] == {"order": {"id": 1}}


async def test_whisper_reaches_other_client_and_is_not_echoed_to_sender(relay: RelayProcess, clients: Clients) -> None:
    sender = await clients.echo(relay.port, name="sender")
    receiver = await clients.echo(relay.port, name="receiver")
    await echo_subscribe(sender, "private", "chat.1", listen=[".barrier"], whispers=["typing"])
    await echo_subscribe(receiver, "private", "chat.1", whispers=["typing"])

    await sender.send({"op": "whisper", "kind": "private", "name": "chat.1", "event": "typing", "data": {"who": "Ann"}})

    heard = await receiver.expect(type="whisper", name="chat.1", event="typing")
    assert heard["data"] == {"who": "Ann"}
    frame = await receiver.expect(type="message", event="client-typing")
    assert frame["channel"] == "private-chat.1"
    assert frame["user_id"] is None  # user_id is added on presence channels only
    # The whisper reached relay before this event was published, so an echo to the sender
    # would have arrived before it on the sender's connection.
    await python_trigger(relay.port, "private-chat.1", "barrier", {})
    barrier = await sender.expect(type="listen", name="chat.1", event=".barrier")
    echoed = [
        line
        for line in sender.seen_before(barrier)
        if (line["type"], line.get("event")) in (("whisper", "typing"), ("message", "client-typing"))
    ]
    assert echoed == []


async def test_refused_private_subscription_gives_subscription_error_and_connection_stays_usable(
    relay: RelayProcess, clients: Clients
) -> None:
    client = await clients.pusher_js(relay.port, bad_auth_channels=["private-forbidden"])

    await client.send({"op": "subscribe", "channel": "private-forbidden"})

    refused = await client.expect(type="subscription_error", channel="private-forbidden")
    assert refused["error"]["type"] == "AuthError"
    assert refused["error"]["status"] == 401
    assert isinstance(refused["error"]["error"], str) and refused["error"]["error"]
    # It came from relay, not from pusher-js's own auth step: the frame is on the wire.
    frame = await client.expect(type="message", event="pusher:subscription_error")
    assert frame["channel"] == "private-forbidden"
    assert frame["data"] == refused["error"]

    await subscribe(client, "news")
    await python_trigger(relay.port, "news", "still-here", {"ok": True})
    event = await client.expect(type="event", channel="news", event="still-here")
    assert event["data"] == {"ok": True}
    states = [(line["previous"], line["current"]) for line in client.seen if line["type"] == "state"]
    assert states == [("connecting", "connected")]  # constructor states precede our listener


async def test_echo_error_callback_fires_for_refused_private_channel(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.echo(relay.port, bad_auth_channels=["private-orders.2"])

    await client.send({"op": "subscribe", "kind": "private", "name": "orders.2", "listen": [], "whispers": []})

    refused = await client.expect(type="subscription_error", name="orders.2")
    assert refused["error"]["type"] == "AuthError"
    assert refused["error"]["status"] == 401
