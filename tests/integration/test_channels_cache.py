"""Cache channels (docs/protocol.md §2.7) for all four prefixes, on an in-process relay.

The last HTTP API event is delivered to each new subscriber right after `subscription_succeeded`, or
`{"event":"pusher:cache_miss","channel":…}` when there is none; it expires after the app's cache_ttl
(configured short here; default 30 minutes). Client events are never cached.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.integration.wire import Api, Client, auth_sdk, inner, presence_auth, private_auth
from tests.support.inprocess import APP, RelayServer, RelayServerFactory
from tests.support.timeouts import scaled

MASTER_KEY = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
CHANNELS = ["cache-news", "private-cache-news", "private-encrypted-cache-news", "presence-cache-news"]


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret, encryption_master_key_base64=MASTER_KEY)


@pytest.fixture
def sdk(api: Api) -> Any:
    """The publishing SDK; with the master key it encrypts events for private-encrypted- channels."""
    return api.sdk(APP.id, APP.key, APP.secret, encryption_master_key_base64=MASTER_KEY)


async def subscribe(server: RelayServer, signer: Any, channel: str, user_id: str = "1") -> Client:
    """A new connection subscribed to `channel`, its subscription_succeeded already read."""
    client = await server.connect()
    if channel.startswith("presence-"):
        auth, data = presence_auth(signer, client.socket_id, channel, {"user_id": user_id})
        await client.subscribe(channel, auth, data)
    elif channel.startswith("private-"):
        await client.subscribe(channel, private_auth(signer, client.socket_id, channel))
    else:
        await client.subscribe(channel)
    frame = await client.expect("pusher_internal:subscription_succeeded", channel)
    if channel.startswith("presence-"):
        assert "presence" in inner(frame)
    return client


async def trigger(sdk: Any, channel: str, event: str, data: str) -> str:
    """Publish with the SDK; returns the data string it sent (a ciphertext on encrypted channels)."""
    request = sdk._pusher_client.trigger.make_request([channel], event, data)
    sent = orjson.loads(request.body)["data"]
    client = sdk._pusher_client
    await asyncio.to_thread(client.http.send_request, request)
    return str(sent)


async def assert_cache_miss(client: Client, channel: str) -> None:
    frame = await client.recv()
    assert frame == {"event": "pusher:cache_miss", "channel": channel}, frame


@pytest.mark.parametrize("channel", CHANNELS)
async def test_cache_miss_right_after_subscription_succeeded(server: RelayServer, signer: Any, channel: str) -> None:
    client = await subscribe(server, signer, channel)
    await assert_cache_miss(client, channel)
    await client.expect_silence()


@pytest.mark.parametrize("channel", CHANNELS)
async def test_last_event_delivered_right_after_subscription_succeeded(
    server: RelayServer, signer: Any, sdk: Any, channel: str
) -> None:
    early = await subscribe(server, signer, channel, "1")
    await assert_cache_miss(early, channel)
    first = await trigger(sdk, channel, "update", '{"v":1}')
    last = await trigger(sdk, channel, "update", '{"v":2}')
    assert (await early.expect("update", channel))["data"] == first
    assert (await early.expect("update", channel))["data"] == last
    late = await subscribe(server, signer, channel, "2")
    frame = await late.recv()  # the very next frame after subscription_succeeded
    assert frame == {"event": "update", "channel": channel, "data": last}
    await late.expect_silence()  # only the last event, once


async def test_cache_survives_the_channel_emptying_and_resubscribe_gets_it_again(
    server: RelayServer, signer: Any, sdk: Any
) -> None:
    channel = "cache-scores"
    await trigger(sdk, channel, "score", "3-1")  # nobody subscribed: still cached
    client = await subscribe(server, signer, channel)
    assert (await client.expect("score", channel))["data"] == "3-1"
    await client.unsubscribe(channel)
    await client.subscribe(channel)
    await client.expect("pusher_internal:subscription_succeeded", channel)
    assert (await client.expect("score", channel))["data"] == "3-1"


async def test_cached_event_expires_after_the_configured_ttl(relay_server: RelayServerFactory, http: Any) -> None:
    ttl = scaled(2.0)
    server = await relay_server(replace(APP, cache_ttl=ttl))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    sdk = Api(http, server.port).sdk(APP.id, APP.key, APP.secret)
    channel = "cache-ticker"
    published = time.monotonic()
    await trigger(sdk, channel, "tick", "1")
    fresh = await subscribe(server, signer, channel)
    assert (await fresh.expect("tick", channel))["data"] == "1"
    assert time.monotonic() - published < ttl, "machine too slow to observe the cache before it expires"
    deadline = time.monotonic() + scaled(ttl + 5)
    while True:
        client = await subscribe(server, signer, channel)
        frame = await client.recv()
        await client.close()
        if frame.get("event") == "pusher:cache_miss":
            break
        assert frame["event"] == "tick", frame
        assert time.monotonic() < deadline, "the cached event never expired"
        await asyncio.sleep(0.05)
    assert time.monotonic() - published >= ttl * 0.9  # not dropped early
    info = await asyncio.to_thread(sdk.channel_info, channel, ["cache"])
    assert info["cache"] is None


async def test_default_ttl_is_30_minutes(server: RelayServer, sdk: Any) -> None:
    assert APP.cache_ttl == 1800
    await trigger(sdk, "cache-long", "e", "x")
    info = await asyncio.to_thread(sdk.channel_info, "cache-long", ["cache"])
    assert info["cache"]["data"] == "x"
    assert 1790 <= info["cache"]["ttl"] <= 1800


@pytest.mark.parametrize("channel", ["private-cache-chat", "presence-cache-chat"])
async def test_client_events_are_not_cached(server: RelayServer, signer: Any, channel: str) -> None:
    sender = await subscribe(server, signer, channel, "1")
    await assert_cache_miss(sender, channel)
    other = await subscribe(server, signer, channel, "2")
    await assert_cache_miss(other, channel)
    if channel.startswith("presence-"):
        await sender.expect("pusher_internal:member_added", channel)
    await sender.send({"event": "client-typing", "data": {"t": 1}, "channel": channel})
    frame = await other.expect("client-typing", channel)
    assert frame["data"] == {"t": 1}
    late = await subscribe(server, signer, channel, "3")
    await assert_cache_miss(late, channel)


async def test_non_cache_channels_never_send_cache_frames(server: RelayServer, signer: Any, sdk: Any) -> None:
    for channel in ("news", "private-news", "cachenews", "my-cache-news"):
        await trigger(sdk, channel, "e", "x")
        client = await subscribe(server, signer, channel)
        await client.expect_silence()


async def test_cache_is_per_app(relay_server: RelayServerFactory, http: Any) -> None:
    from relay.config import AppConfig

    other = AppConfig(id="1002", key="other-key", secret="other-secret")
    server = await relay_server(APP, other)
    api = Api(http, server.port)
    await trigger(api.sdk(APP.id, APP.key, APP.secret), "cache-x", "e", "mine")
    client = await server.connect(other.key)
    await client.subscribed("cache-x")
    assert orjson.loads(await client.recv_text()) == {"event": "pusher:cache_miss", "channel": "cache-x"}
