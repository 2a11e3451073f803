"""Private channels (docs/protocol.md §2.3, §5, §9.1): every refusal path of the channel signature.

Auth strings come from the official `pusher` SDK's `authenticate`. A refusal is a channel-scoped
`pusher:subscription_error` `{"type":"AuthError","error":…,"status":401}`; the socket stays open, is not
subscribed, and can subscribe properly right after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.integration.wire import Client, auth_sdk, private_auth
from tests.support.inprocess import APP, RelayServer

CHANNEL = "private-orders.1"


MASTER_KEY = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret, encryption_master_key_base64=MASTER_KEY)


async def trigger(sdk: Any, channel: str, event: str, data: Any) -> None:
    await asyncio.to_thread(sdk.trigger, channel, event, data)


async def assert_auth_error(client: Client, channel: str) -> dict[str, Any]:
    frame = await client.recv()
    assert frame["event"] == "pusher:subscription_error", frame
    assert frame["channel"] == channel, frame
    data = frame["data"] if isinstance(frame["data"], dict) else orjson.loads(frame["data"])
    assert data["type"] == "AuthError", frame
    assert data["status"] == 401, frame
    assert isinstance(data["error"], str) and data["error"], frame
    return dict(data)


async def assert_not_subscribed_then_usable(client: Client, channel: str, signer: Any, sdk: Any) -> None:
    """The refused channel delivers nothing; a correct subscribe on the same socket then works."""
    await trigger(sdk, channel, "before", {"n": 1})
    await client.expect_silence()
    await client.subscribed(channel, private_auth(signer, client.socket_id, channel))
    await trigger(sdk, channel, "after", {"n": 2})
    frame = await client.expect("after", channel)
    assert orjson.loads(frame["data"]) == {"n": 2}


async def test_sdk_signature_subscribes_and_receives(server: RelayServer, signer: Any, sdk: Any) -> None:
    client = await server.connect()
    frame = await client.subscribed(CHANNEL, private_auth(signer, client.socket_id, CHANNEL))
    assert frame["data"] == "{}"
    await trigger(sdk, CHANNEL, "shipped", {"id": 1})
    event = await client.expect("shipped", CHANNEL)
    assert event["data"] == '{"id": 1}'  # the Python SDK's serialisation, relayed verbatim


def _other_secret(client: Client, signer: Any) -> str:
    return private_auth(auth_sdk(APP.id, APP.key, "not-the-secret"), client.socket_id, CHANNEL)


def _empty(client: Client, signer: Any) -> str:
    return ""


def _other_socket(client: Client, signer: Any) -> str:
    other = "1234.5678" if client.socket_id != "1234.5678" else "8765.4321"
    return private_auth(signer, other, CHANNEL)


def _other_channel(client: Client, signer: Any) -> str:
    return private_auth(signer, client.socket_id, "private-orders.2")


def _wrong_key_part(client: Client, signer: Any) -> str:
    signature = private_auth(signer, client.socket_id, CHANNEL).split(":", 1)[1]
    return f"another-key:{signature}"


def _signature_only(client: Client, signer: Any) -> str:
    return private_auth(signer, client.socket_id, CHANNEL).split(":", 1)[1]


def _uppercase_hex(client: Client, signer: Any) -> str:
    key, signature = private_auth(signer, client.socket_id, CHANNEL).split(":", 1)
    return f"{key}:{signature.upper()}"


def _truncated(client: Client, signer: Any) -> str:
    return private_auth(signer, client.socket_id, CHANNEL)[:-1]


def _presence_style(client: Client, signer: Any) -> str:
    # A signature that also covers channel_data is not a private channel's signature.
    reply = signer.authenticate(channel=CHANNEL, socket_id=client.socket_id, custom_data={"user_id": "1"})
    return str(reply["auth"])


BAD_AUTH: dict[str, Callable[[Client, Any], str]] = {
    "wrong_secret": _other_secret,
    "empty": _empty,
    "other_socket_id": _other_socket,
    "other_channel": _other_channel,
    "wrong_key_part": _wrong_key_part,
    "missing_key_part": _signature_only,
    "uppercase_hex": _uppercase_hex,
    "truncated": _truncated,
    "signed_with_channel_data": _presence_style,
}


@pytest.mark.parametrize("case", list(BAD_AUTH))
async def test_bad_signature_is_refused_and_socket_stays_usable(
    server: RelayServer, signer: Any, sdk: Any, case: str
) -> None:
    client = await server.connect()
    await client.subscribe(CHANNEL, BAD_AUTH[case](client, signer))
    await assert_auth_error(client, CHANNEL)
    await assert_not_subscribed_then_usable(client, CHANNEL, signer, sdk)


async def test_missing_auth_field_is_refused(server: RelayServer, signer: Any, sdk: Any) -> None:
    client = await server.connect()
    await client.send({"event": "pusher:subscribe", "data": {"channel": CHANNEL}})
    await assert_auth_error(client, CHANNEL)
    await assert_not_subscribed_then_usable(client, CHANNEL, signer, sdk)


async def test_non_string_auth_is_refused_without_closing(server: RelayServer, signer: Any, sdk: Any) -> None:
    client = await server.connect()
    await client.send({"event": "pusher:subscribe", "data": {"channel": CHANNEL, "auth": 12345}})
    frame = await client.expect("pusher:error")  # a malformed frame, not a wrong signature
    assert frame["data"]["code"] == 4200 and "auth" in frame["data"]["message"], frame
    await assert_not_subscribed_then_usable(client, CHANNEL, signer, sdk)


async def test_private_cache_and_encrypted_prefixes_need_auth_too(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    for channel in ("private-cache-a", "private-encrypted-a", "private-encrypted-cache-a"):
        await client.subscribe(channel, "")
        await assert_auth_error(client, channel)
        await client.subscribe(channel, private_auth(signer, client.socket_id, channel))
        await client.expect("pusher_internal:subscription_succeeded", channel)
        if "cache" in channel:
            await client.expect("pusher:cache_miss", channel)


async def test_refusal_harms_nobody_else(server: RelayServer, signer: Any, sdk: Any) -> None:
    member = await server.connect()
    await member.subscribed(CHANNEL, private_auth(signer, member.socket_id, CHANNEL))
    intruder = await server.connect()
    await intruder.subscribe(CHANNEL, private_auth(signer, member.socket_id, CHANNEL))  # a stolen signature
    await assert_auth_error(intruder, CHANNEL)
    await trigger(sdk, CHANNEL, "secret", {"x": 1})
    await member.expect("secret", CHANNEL)
    await member.expect_silence()
    await intruder.expect_silence()


async def test_subscription_count_only_counts_accepted_subscriptions(
    server: RelayServer, signer: Any, sdk: Any
) -> None:
    good = await server.connect()
    await good.subscribed(CHANNEL, private_auth(signer, good.socket_id, CHANNEL))
    bad = await server.connect()
    await bad.subscribe(CHANNEL, "app-key:00")
    await assert_auth_error(bad, CHANNEL)
    info = await asyncio.to_thread(sdk.channel_info, CHANNEL, ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 1}
