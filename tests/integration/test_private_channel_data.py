"""Private channels authorised with channel_data (docs/protocol.md §2.3).

An app whose one auth helper serves private and presence channels passes channel data for both; the
official SDKs then sign `socket_id:channel:channel_data` and pusher-js sends that channel_data with the
subscribe. Pusher's service accepts it, so relay must too, while still accepting the plain
`socket_id:channel` signature and refusing a signature over other channel data.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.integration.test_channels_private import MASTER_KEY, assert_auth_error
from tests.integration.wire import auth_sdk
from tests.support.inprocess import APP, RelayServer

PRIVATE_KINDS = ("private-orders.1", "private-encrypted-orders.1", "private-cache-orders.1")


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret, encryption_master_key_base64=MASTER_KEY)


def _sdk_auth(signer: Any, socket_id: str, channel: str, custom_data: Any | None) -> dict[str, Any]:
    """What the app's auth endpoint answers, from the official Python SDK."""
    return dict(signer.authenticate(channel=channel, socket_id=socket_id, custom_data=custom_data))


async def _expect_success(client: Any, channel: str) -> None:
    await client.expect("pusher_internal:subscription_succeeded", channel)
    if "cache" in channel:
        await client.expect("pusher:cache_miss", channel)


@pytest.mark.parametrize("channel", PRIVATE_KINDS)
async def test_signature_over_channel_data_is_accepted(server: RelayServer, signer: Any, channel: str) -> None:
    client = await server.connect()
    reply = _sdk_auth(signer, client.socket_id, channel, {"user_id": "42", "user_info": {"name": "Ann"}})
    assert "channel_data" in reply  # the SDK really signed over it
    await client.subscribe(channel, reply["auth"], reply["channel_data"])
    await _expect_success(client, channel)


@pytest.mark.parametrize("channel", PRIVATE_KINDS)
async def test_plain_signature_is_accepted_even_with_channel_data_sent(
    server: RelayServer, signer: Any, channel: str
) -> None:
    client = await server.connect()
    plain = _sdk_auth(signer, client.socket_id, channel, None)
    await client.subscribe(channel, plain["auth"], '{"user_id":"42"}')
    await _expect_success(client, channel)


@pytest.mark.parametrize("channel", PRIVATE_KINDS)
async def test_signature_over_other_channel_data_is_refused(server: RelayServer, signer: Any, channel: str) -> None:
    client = await server.connect()
    reply = _sdk_auth(signer, client.socket_id, channel, {"user_id": "42"})
    await client.subscribe(channel, reply["auth"], '{"user_id":"43"}')
    await assert_auth_error(client, channel)


async def test_events_and_client_events_flow_on_a_channel_signed_with_channel_data(
    server: RelayServer, signer: Any, sdk: Any
) -> None:
    channel = "private-chat.7"
    first = await server.connect()
    second = await server.connect()
    for client in (first, second):
        reply = _sdk_auth(signer, client.socket_id, channel, {"user_id": client.socket_id})
        await client.subscribed(channel, reply["auth"], reply["channel_data"])

    await first.send({"event": "client-typing", "channel": channel, "data": {"who": "first"}})
    heard = await second.expect("client-typing", channel)
    assert heard["data"] == {"who": "first"}
    assert "user_id" not in heard  # private, not presence: the channel data names no member

    await asyncio.to_thread(sdk.trigger, channel, "message.sent", {"id": 1})
    for client in (first, second):
        event = await client.expect("message.sent", channel)
        assert orjson.loads(event["data"]) == {"id": 1}


async def test_presence_still_requires_channel_data_in_the_signature(server: RelayServer, signer: Any) -> None:
    channel = "presence-room.1"
    client = await server.connect()
    plain = _sdk_auth(signer, client.socket_id, channel, None)  # signs socket_id:channel only
    await client.subscribe(channel, plain["auth"], '{"user_id":"42"}')
    await assert_auth_error(client, channel)
