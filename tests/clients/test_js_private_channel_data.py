"""pusher-js on private channels whose auth also signed channel data (docs/protocol.md §2.3).

Many apps have one auth helper for private and presence channels and pass channel data to both. The
official Node SDK (`authorizeChannel(socketId, channel, data)`, in the client script) and the official
Python SDK (`authenticate(..., custom_data=...)`, behind a real HTTP auth endpoint that pusher-js calls
with its own ajax transport) then sign `socket_id:channel:channel_data`, and pusher-js sends that
channel_data with the subscribe. Pusher's service accepts such subscriptions; so must relay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pusher  # type: ignore[import-untyped]
import pytest
from aiohttp import web

from tests.clients.harness import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    ENCRYPTION_MASTER_KEY_BASE64,
    Clients,
    subscribe,
)
from tests.support import NodeClient, RelayProcess, scaled
from tests.support.http import local_http_server

pytestmark = [pytest.mark.auth_features, pytest.mark.timeout(scaled(60))]

CHANNEL_DATA = {"user_id": "7", "user_info": {"name": "Ann"}}

# What an app's auth endpoint returns for (socket_id, channel_name): the Python SDK's answer dict.
Authorize = Callable[[str, str], dict[str, Any]]


def _python_signer(port: int | None = None) -> pusher.Pusher:
    where = {} if port is None else {"host": "127.0.0.1", "port": port, "ssl": False}
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        encryption_master_key_base64=ENCRYPTION_MASTER_KEY_BASE64,
        **where,
    )


async def _auth_endpoint(authorize: Authorize) -> AsyncIterator[str]:
    """A real HTTP auth endpoint on loopback, as an app would run it; yields its URL."""

    async def handle(request: web.Request) -> web.Response:
        form = await request.post()
        answer = authorize(str(form["socket_id"]), str(form["channel_name"]))
        # The Python SDK gives an encrypted channel's shared_secret as base64 bytes; apps decode it.
        body = {name: value.decode() if isinstance(value, bytes) else value for name, value in answer.items()}
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/broadcasting/auth", handle)
    async with local_http_server(app) as base:
        yield f"{base}/broadcasting/auth"


@pytest.fixture
async def python_sdk_endpoint() -> AsyncIterator[str]:
    """The Python SDK signing with channel data, as `authenticate(..., custom_data=...)` does."""
    signer = _python_signer()

    def authorize(socket_id: str, channel: str) -> dict[str, Any]:
        return dict(signer.authenticate(channel=channel, socket_id=socket_id, custom_data=CHANNEL_DATA))

    async for url in _auth_endpoint(authorize):
        yield url


@pytest.fixture
async def mismatched_endpoint() -> AsyncIterator[str]:
    """Signs one channel data but hands the client another: relay must refuse it."""
    signer = _python_signer()

    def authorize(socket_id: str, channel: str) -> dict[str, Any]:
        answer = dict(signer.authenticate(channel=channel, socket_id=socket_id, custom_data=CHANNEL_DATA))
        answer["channel_data"] = json.dumps({"user_id": "8"})
        return answer

    async for url in _auth_endpoint(authorize):
        yield url


async def _client_events_both_ways(first: NodeClient, second: NodeClient, channel: str) -> None:
    await first.send({"op": "trigger", "channel": channel, "event": "client-typing", "data": {"who": "first"}})
    assert (await first.expect(type="triggered", channel=channel))["ok"] is True
    heard = await second.expect(type="event", channel=channel, event="client-typing")
    assert heard["data"] == {"who": "first"}
    await second.send({"op": "trigger", "channel": channel, "event": "client-typing", "data": {"who": "second"}})
    heard = await first.expect(type="event", channel=channel, event="client-typing")
    assert heard["data"] == {"who": "second"}


async def _resubscribe_and_receive(relay: RelayProcess, client: NodeClient, channel: str, n: int) -> None:
    await client.send({"op": "unsubscribe", "channel": channel})
    await subscribe(client, channel)
    # The SDK encrypts for private-encrypted- channels; pusher-js decrypts with the shared secret.
    await asyncio.to_thread(_python_signer(relay.port).trigger, [channel], "after-resubscribe", {"n": n})
    event = await client.expect(type="event", channel=channel, event="after-resubscribe")
    assert event["data"] == {"n": n}


async def _assert_sent_channel_data(client: NodeClient, channel: str) -> None:
    """The subscribe went out with channel data: the SDK signed over it (checked on relay's side by success)."""
    errors = [line for line in client.seen if line["type"] == "subscription_error" and line["channel"] == channel]
    assert errors == []


@pytest.mark.parametrize("channel", ["private-chat.1", "private-encrypted-chat.1"])
async def test_node_sdk_signing_channel_data(relay: RelayProcess, clients: Clients, channel: str) -> None:
    options = {"private_channel_data": CHANNEL_DATA, "encryption_master_key_base64": ENCRYPTION_MASTER_KEY_BASE64}
    first = await clients.pusher_js(relay.port, name="first", **options)
    second = await clients.pusher_js(relay.port, name="second", **options)
    for client in (first, second):
        await subscribe(client, channel)
        await _assert_sent_channel_data(client, channel)

    if not channel.startswith("private-encrypted-"):  # client events are refused on encrypted channels
        await _client_events_both_ways(first, second, channel)
    await _resubscribe_and_receive(relay, first, channel, 1)


@pytest.mark.parametrize("channel", ["private-chat.2", "private-encrypted-chat.2"])
async def test_python_sdk_endpoint_signing_channel_data(
    relay: RelayProcess, clients: Clients, python_sdk_endpoint: str, channel: str
) -> None:
    options = {"auth_endpoint": python_sdk_endpoint, "encryption_master_key_base64": ENCRYPTION_MASTER_KEY_BASE64}
    first = await clients.pusher_js(relay.port, name="first", **options)
    second = await clients.pusher_js(relay.port, name="second", **options)
    for client in (first, second):
        await subscribe(client, channel)

    if not channel.startswith("private-encrypted-"):
        await _client_events_both_ways(first, second, channel)
    await _resubscribe_and_receive(relay, second, channel, 2)


async def test_node_sdk_without_channel_data_still_works(relay: RelayProcess, clients: Clients) -> None:
    first = await clients.pusher_js(relay.port, name="first")
    second = await clients.pusher_js(relay.port, name="second")
    for client in (first, second):
        await subscribe(client, "private-chat.3")
    await _client_events_both_ways(first, second, "private-chat.3")


async def test_signature_over_other_channel_data_is_refused(
    relay: RelayProcess, clients: Clients, mismatched_endpoint: str
) -> None:
    client = await clients.pusher_js(relay.port, auth_endpoint=mismatched_endpoint)
    await client.send({"op": "subscribe", "channel": "private-chat.4"})
    refused = await client.expect(type="subscription_error", channel="private-chat.4")
    assert refused["error"]["type"] == "AuthError"
    assert refused["error"]["status"] == 401
