"""pusher-js and Laravel Echo on public channels, with events published by the Python SDK."""

from __future__ import annotations

import pytest

from tests.clients.harness import SOCKET_ID_RE, Clients, echo_subscribe, python_trigger, subscribe
from tests.support import RelayProcess, scaled

pytestmark = pytest.mark.timeout(scaled(60))


async def test_pusher_js_connects_with_a_valid_socket_id(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.pusher_js(relay.port)

    connected = await client.expect(type="connected")
    assert SOCKET_ID_RE.fullmatch(connected["socket_id"]), connected
    await client.expect(type="state", previous="connecting", current="connected")
    await client.send({"op": "state"})
    report = await client.expect(type="state_report")
    assert report["state"] == "connected"
    assert report["socket_id"] == connected["socket_id"]


async def test_pusher_js_receives_event_triggered_by_python_sdk(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.pusher_js(relay.port)
    await subscribe(client, "news")

    await python_trigger(relay.port, "news", "news-published", {"title": "Hello", "id": 7, "tags": ["a", "b"]})

    event = await client.expect(type="event", channel="news", event="news-published")
    assert event["data"] == {"title": "Hello", "id": 7, "tags": ["a", "b"]}


async def test_pusher_js_receives_plain_string_data_verbatim(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.pusher_js(relay.port)
    await subscribe(client, "news")

    await python_trigger(relay.port, "news", "headline", "a plain string")

    event = await client.expect(type="event", channel="news", event="headline")
    assert event["data"] == "a plain string"


async def test_pusher_js_gets_no_events_after_unsubscribing(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.pusher_js(relay.port)
    await subscribe(client, "old-news")
    await client.send({"op": "unsubscribe", "channel": "old-news"})
    # relay handles one connection's frames in order: once "news" is confirmed, so is the unsubscribe.
    await subscribe(client, "news")

    await python_trigger(relay.port, "old-news", "stale", {"n": 1})
    await python_trigger(relay.port, "news", "fresh", {"n": 2})

    # "message" lines are every frame received, including ones pusher-js would drop.
    fresh = await client.expect(type="message", channel="news", event="fresh")
    assert [line for line in client.seen_before(fresh) if line.get("event") == "stale"] == []


async def test_echo_listen_on_public_channel_receives_dotted_event(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.echo(relay.port)
    await echo_subscribe(client, "public", "news", listen=[".news.published"])

    await python_trigger(relay.port, "news", "news.published", {"title": "Echo works"})

    heard = await client.expect(type="listen", name="news", event=".news.published")
    assert heard["data"] == {"title": "Echo works"}
