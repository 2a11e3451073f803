"""Client events (docs/protocol.md §2.5, §9.2-3) on an in-process relay.

Relayed only when: the app enables them, the name starts `client-`, the channel is private or presence
and the sender has joined it; never back to the sender; `user_id` added on presence. Rate (default 10/s
per connection) and size limits answer `pusher:error` 4301 without closing. Every refusal checks the
error frame and that the connection still works. Echo whisper/listenForWhisper is in tests/clients.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.integration.wire import Client, auth_sdk, inner, presence_auth, private_auth, signin, signin_auth
from tests.support.inprocess import APP, RelayServer, RelayServerFactory

PRIVATE = "private-chat.1"
PRESENCE = "presence-chat.1"


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret)


async def joined(server: RelayServer, signer: Any, channel: str, user_id: str = "1") -> Client:
    client = await server.connect()
    if channel.startswith("presence-"):
        auth, data = presence_auth(signer, client.socket_id, channel, {"user_id": user_id})
        await client.subscribed(channel, auth, data)
    elif channel.startswith("private-"):
        await client.subscribed(channel, private_auth(signer, client.socket_id, channel))
    else:
        await client.subscribed(channel)
    return client


async def pair(server: RelayServer, signer: Any, channel: str) -> tuple[Client, Client]:
    """Sender and receiver on `channel`, with presence bookkeeping frames already read."""
    sender = await joined(server, signer, channel, "1")
    receiver = await joined(server, signer, channel, "2")
    if channel.startswith("presence-"):
        await sender.expect("pusher_internal:member_added", channel)
    return sender, receiver


def whisper(channel: str, data: Any = None, event: str = "client-typing") -> dict[str, Any]:
    return {"event": event, "data": {"typing": True} if data is None else data, "channel": channel}


async def assert_error(client: Client, code: int | None, *words: str, channel: str | None = None) -> str:
    frame = await client.expect("pusher:error")
    data = frame["data"] if isinstance(frame["data"], dict) else inner(frame)
    assert data["code"] == code, frame
    message = str(data["message"])
    for word in words:
        assert word.lower() in message.lower(), frame
    if channel is not None:
        assert frame.get("channel") == channel, frame
    return message


async def assert_still_relays(sender: Client, receiver: Client, channel: str) -> None:
    await sender.send(whisper(channel, {"ok": 1}, "client-ok"))
    frame = await receiver.expect("client-ok", channel)
    assert frame["data"] == {"ok": 1}


# Delivery -----------------------------------------------------------------------------------------


async def test_private_client_event_relayed_as_received_without_user_id(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    third = await joined(server, signer, PRIVATE, "3")
    await sender.send(whisper(PRIVATE, {"typing": True, "n": [1, 2.5, None], "s": "ü"}))
    for client in (receiver, third):
        raw = await client.recv_text()
        assert orjson.loads(raw) == {
            "event": "client-typing",
            "channel": PRIVATE,
            "data": {"typing": True, "n": [1, 2.5, None], "s": "ü"},
        }
    await sender.expect_silence()  # never echoed


async def test_string_data_is_relayed_as_a_string(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    await sender.send(whisper(PRIVATE, '{"a":1}'))
    assert (await receiver.expect("client-typing", PRIVATE))["data"] == '{"a":1}'


async def test_presence_client_event_carries_sender_user_id(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRESENCE)
    await sender.send(whisper(PRESENCE))
    frame = await receiver.expect("client-typing", PRESENCE)
    assert frame == {"event": "client-typing", "channel": PRESENCE, "data": {"typing": True}, "user_id": "1"}
    await receiver.send(whisper(PRESENCE, {"typing": False}))
    assert (await sender.expect("client-typing", PRESENCE))["user_id"] == "2"
    await sender.expect_silence()
    await receiver.expect_silence()


async def test_same_user_other_connection_receives_but_sender_does_not(server: RelayServer, signer: Any) -> None:
    sender = await joined(server, signer, PRESENCE, "1")
    tab2 = await joined(server, signer, PRESENCE, "1")
    await sender.send(whisper(PRESENCE))
    assert (await tab2.expect("client-typing", PRESENCE))["user_id"] == "1"
    await sender.expect_silence()


async def test_client_event_reaches_only_that_channel(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    elsewhere = await joined(server, signer, "private-chat.2", "3")
    await sender.send(whisper(PRIVATE))
    await receiver.expect("client-typing", PRIVATE)
    await elsewhere.expect_silence()


# Refusals -----------------------------------------------------------------------------------------


async def test_event_without_client_prefix_is_refused(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    for name in ("typing", "Client-typing", "my-client-typing", "pusher:typing", "pusher_internal:member_added"):
        await sender.send(whisper(PRIVATE, event=name))
        await assert_error(sender, 4200)
    await receiver.expect_silence()
    await assert_still_relays(sender, receiver, PRIVATE)


async def test_client_event_without_channel_is_refused(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    await sender.send({"event": "client-typing", "data": {}})
    await assert_error(sender, 4200, "channel")
    await sender.send({"event": "client-typing", "data": {}, "channel": 5})
    await assert_error(sender, 4200, "channel")
    await receiver.expect_silence()
    await assert_still_relays(sender, receiver, PRIVATE)


async def test_not_subscribed_sender_is_refused_4009(server: RelayServer, signer: Any) -> None:
    _, receiver = await pair(server, signer, PRIVATE)
    outsider = await server.connect()
    await outsider.send(whisper(PRIVATE))
    await assert_error(outsider, 4009, "not subscribed", channel=PRIVATE)
    await receiver.expect_silence()
    await outsider.expect_silence()  # an error frame, not a close


async def test_unsubscribed_sender_is_refused(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    await sender.unsubscribe(PRIVATE)
    await sender.send(whisper(PRIVATE))
    await assert_error(sender, 4009, channel=PRIVATE)
    await receiver.expect_silence()


async def test_refused_subscription_gives_no_right_to_send(server: RelayServer, signer: Any) -> None:
    _, receiver = await pair(server, signer, PRIVATE)
    intruder = await server.connect()
    await intruder.subscribe(PRIVATE, "app-key:" + "0" * 64)
    await intruder.expect("pusher:subscription_error", PRIVATE)
    await intruder.send(whisper(PRIVATE))
    await assert_error(intruder, 4009, channel=PRIVATE)
    await receiver.expect_silence()


@pytest.mark.parametrize("channel", ["news", "cache-news"])
async def test_public_channel_is_refused_4301(server: RelayServer, signer: Any, channel: str) -> None:
    sender = await joined(server, signer, channel)
    receiver = await joined(server, signer, channel)
    if channel.startswith("cache-"):
        await sender.expect("pusher:cache_miss", channel)
        await receiver.expect("pusher:cache_miss", channel)
    await sender.send(whisper(channel))
    await assert_error(sender, 4301, "private and presence", channel=channel)
    await receiver.expect_silence()
    await sender.expect_silence()


async def test_app_setting_off_refuses_4301(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, enable_client_events=False))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    for channel in (PRIVATE, PRESENCE):
        sender, receiver = await pair(server, signer, channel)
        await sender.send(whisper(channel))
        await assert_error(sender, 4301, "not have client events enabled", channel=channel)
        await receiver.expect_silence()
        await sender.expect_silence()


async def read_until_pong(client: Client) -> list[dict[str, Any]]:
    """Every frame queued for `client`, up to the pong of a ping sent now."""
    await client.send({"event": "pusher:ping", "data": {}})
    frames = []
    while (frame := await client.recv()) != {"event": "pusher:pong", "data": "{}"}:
        frames.append(frame)
    return frames


async def burst(sender: Client, receiver: Client, channel: str, count: int) -> tuple[int, int, float]:
    """Send `count` client events at once; returns (relayed, refused, seconds the burst took)."""
    started = time.monotonic()
    for n in range(count):
        await sender.send(whisper(channel, {"n": n}))
    refusals = await read_until_pong(sender)
    elapsed = time.monotonic() - started
    for frame in refusals:
        assert frame["event"] == "pusher:error" and frame["data"]["code"] == 4301, frame
        assert "rate limit" in frame["data"]["message"], frame
        assert frame["channel"] == channel
    relayed = await read_until_pong(receiver)
    assert [frame["data"]["n"] for frame in relayed] == sorted(frame["data"]["n"] for frame in relayed)
    assert all(frame["event"] == "client-typing" for frame in relayed)
    return len(relayed), len(refusals), elapsed


async def test_rate_limit_default_10_per_second_then_recovers(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    relayed, refused, elapsed = await burst(sender, receiver, PRIVATE, 30)
    assert relayed + refused == 30
    # A burst of 10 passes; the bucket refills at 10/s, so a slow run may let a few more through.
    assert 10 <= relayed <= 10 + int(elapsed * 10) + 1, (relayed, elapsed)
    assert refused >= 1
    # The limit is per connection: the receiver can still send.
    await assert_still_relays(receiver, sender, PRIVATE)
    await sender.expect_silence()
    # And the sender is allowed again once tokens come back (0.3 s refills 3).
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        await sender.expect_silence()
    await assert_still_relays(sender, receiver, PRIVATE)


async def test_rate_limit_is_configurable(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, client_event_rate=3))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    sender, receiver = await pair(server, signer, PRESENCE)
    relayed, refused, elapsed = await burst(sender, receiver, PRESENCE, 12)
    assert 3 <= relayed <= 3 + int(elapsed * 3) + 1, (relayed, elapsed)
    assert relayed + refused == 12


async def test_message_size_limit_refuses_4301(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_message_size=300))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    sender, receiver = await pair(server, signer, PRIVATE)
    await sender.send(whisper(PRIVATE, {"text": "x" * 400}))
    await assert_error(sender, 4301, "300")
    await receiver.expect_silence()
    await assert_still_relays(sender, receiver, PRIVATE)


async def test_default_message_size_limit_is_10000_bytes(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    await sender.send(whisper(PRIVATE, {"text": "x" * 10_000}))
    await assert_error(sender, 4301, "10000")
    await sender.send(whisper(PRIVATE, {"text": "x" * 9_000}))
    assert len((await receiver.expect("client-typing", PRIVATE))["data"]["text"]) == 9_000


async def test_overlong_client_event_name_is_refused(server: RelayServer, signer: Any) -> None:
    sender, receiver = await pair(server, signer, PRIVATE)
    await sender.send(whisper(PRIVATE, event="client-" + "x" * 200))
    await assert_error(sender, 4301, "200", channel=PRIVATE)
    await sender.send(whisper(PRIVATE, event="client-" + "x" * 193))  # exactly 200 characters
    assert len((await receiver.expect("client-" + "x" * 193, PRIVATE))["event"]) == 200
    await receiver.expect_silence()
    await assert_still_relays(sender, receiver, PRIVATE)


async def test_socket_refused_by_a_full_presence_channel_cannot_send(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_presence_members=2))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    sender, receiver = await pair(server, signer, PRESENCE)
    late = await server.connect()
    auth, data = presence_auth(signer, late.socket_id, PRESENCE, {"user_id": "3"})
    await late.subscribe(PRESENCE, auth, data)
    await late.expect("pusher:subscription_error", PRESENCE)
    await late.send(whisper(PRESENCE))
    await assert_error(late, 4009, channel=PRESENCE)
    await sender.expect_silence()
    await receiver.expect_silence()


async def test_presence_joined_through_signin_carries_the_signed_in_user_id(server: RelayServer, signer: Any) -> None:
    receiver = await joined(server, signer, PRESENCE, "2")
    sender = await server.connect()
    auth, user_data = signin_auth(signer, sender.socket_id, {"id": "77"})
    await signin(sender, auth, user_data)
    await sender.expect("pusher:signin_success")
    await sender.subscribed(PRESENCE, private_auth(signer, sender.socket_id, PRESENCE))
    await receiver.expect("pusher_internal:member_added", PRESENCE)
    await sender.send(whisper(PRESENCE))
    assert (await receiver.expect("client-typing", PRESENCE))["user_id"] == "77"
