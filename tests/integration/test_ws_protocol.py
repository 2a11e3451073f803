"""The WebSocket protocol (docs/protocol.md §1-4) against an in-process relay on a loopback port.

A real WebSocket client (`websockets`) receives; the official `pusher` SDK triggers. Every refusal
test also checks that a bystander connection on the same server is untouched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from relay.config import AppConfig
from relay.protocol import errors
from tests.integration.wire import (
    PUSHER_JS_QUERY,
    Api,
    Client,
    connect,
    inner,
    open_socket,
    ws_url,
)
from tests.support.inprocess import APP, RelayServer, RelayServerFactory
from tests.support.timeouts import scaled

SOCKET_ID = re.compile(r"\A\d+\.\d+\Z")


@pytest.fixture
async def bystander(server: RelayServer) -> AsyncIterator[Client]:
    """A client subscribed to `news` before the test misbehaves; must end up untouched."""
    client = await server.connect()
    await client.subscribed("news")
    yield client
    await client.close()


async def trigger(sdk: Any, channel: str, event: str, data: Any, socket_id: str | None = None) -> None:
    """The official SDK's blocking trigger, off the event loop that runs the server."""
    await asyncio.to_thread(sdk.trigger, channel, event, data, socket_id)


async def assert_untouched(bystander: Client, sdk: Any) -> None:
    """Still open, still subscribed, and nothing else was queued for it."""
    await trigger(sdk, "news", "still-here", {"ok": True})
    frame = await bystander.expect("still-here", "news")
    assert orjson.loads(frame["data"]) == {"ok": True}
    await bystander.expect_silence()


async def assert_refused(url: str, code: int, origin: str | None = None) -> str:
    """The first frame is `pusher:error` with `code`, then the server closes with the same code."""
    client = await open_socket(url, origin)
    frame = await client.recv()
    assert frame["event"] == "pusher:error", frame
    data = frame["data"] if isinstance(frame["data"], dict) else inner(frame)
    assert data["code"] == code, frame
    assert data["message"]
    close_code, _ = await client.closed()
    assert close_code == code
    return str(data["message"])


async def assert_error_frame(client: Client, code: int | None) -> dict[str, Any]:
    frame = await client.expect("pusher:error")
    data = frame["data"] if isinstance(frame["data"], dict) else inner(frame)
    assert data["code"] == code, frame
    assert data["message"], frame
    return dict(data)


# Connection ---------------------------------------------------------------------------------------


async def test_connection_established_is_the_first_frame(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, activity_timeout=42))
    client = await open_socket(server.ws_url())
    frame = await client.recv()
    assert frame["event"] == "pusher:connection_established"
    assert isinstance(frame["data"], str), "data must be a JSON-encoded string"
    data = orjson.loads(frame["data"])
    assert SOCKET_ID.match(data["socket_id"]), data
    assert data["activity_timeout"] == 42


async def test_socket_ids_are_unique(server: RelayServer) -> None:
    clients = [await server.connect() for _ in range(5)]
    ids = {client.socket_id for client in clients}
    assert len(ids) == 5
    assert all(SOCKET_ID.match(socket_id) for socket_id in ids)


async def test_client_ping_gets_pong(server: RelayServer) -> None:
    client = await server.connect()
    await client.send({"event": "pusher:ping", "data": {}})
    assert await client.recv() == {"event": "pusher:pong", "data": "{}"}


async def test_ping_with_string_data_gets_pong(server: RelayServer) -> None:
    client = await server.connect()
    await client.send('{"event":"pusher:ping","data":"{}"}')
    assert await client.recv() == {"event": "pusher:pong", "data": "{}"}


async def test_silent_client_is_pinged_and_a_pong_keeps_it(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, activity_timeout=1, pong_timeout=2.0))
    loop = asyncio.get_running_loop()
    started = loop.time()  # before the server's session exists, so its clock starts later
    client = await server.connect()
    assert await client.recv(timeout=scaled(5)) == {"event": "pusher:ping", "data": "{}"}
    assert loop.time() - started >= 0.999, "pinged before activity_timeout passed"
    await client.send({"event": "pusher:pong", "data": {}})
    # Answered: the next thing is another ping after a new silence, not a 4201 close.
    assert await client.recv(timeout=scaled(5)) == {"event": "pusher:ping", "data": "{}"}
    await client.send({"event": "pusher:pong", "data": {}})
    await client.expect_silence()


async def test_silent_client_without_pong_is_closed_4201(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, activity_timeout=1, pong_timeout=1.0))
    other = await server.connect()
    client = await server.connect()
    assert await client.recv(timeout=scaled(5)) == {"event": "pusher:ping", "data": "{}"}
    code, reason = await client.closed(timeout=scaled(5))
    assert code == errors.PONG_NOT_RECEIVED
    assert "pong" in reason.lower()
    # The other client answered nothing either, but it is a separate connection with its own clock:
    # it gets its own ping, proving the close did not take it down with it.
    assert (await other.recv(timeout=scaled(5)))["event"] in ("pusher:ping", "pusher:pong")


# Public channels ----------------------------------------------------------------------------------


async def test_subscribe_public_channel_then_receive_sdk_event(server: RelayServer, sdk: Any) -> None:
    client = await server.connect()
    frame = await client.subscribed("news")
    assert frame == {"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": "{}"}
    await trigger(sdk, "news", "my-event", {"hello": "world"})
    event = await client.expect("my-event", "news")
    assert set(event) == {"event", "channel", "data"}
    assert orjson.loads(event["data"]) == {"hello": "world"}


async def test_subscribe_with_string_data(server: RelayServer) -> None:
    client = await server.connect()
    await client.send({"event": "pusher:subscribe", "data": '{"channel":"news"}'})
    await client.expect("pusher_internal:subscription_succeeded", "news")


async def test_unsubscribe_stops_delivery(server: RelayServer, sdk: Any) -> None:
    client = await server.connect()
    await client.subscribed("news")
    await client.unsubscribe("news")
    await client.expect_silence()  # unsubscribe has no reply; the pong proves it was handled
    await trigger(sdk, "news", "after", "x")
    await client.expect_silence()


async def test_resubscribe_is_answered_again_and_delivers_once(server: RelayServer, sdk: Any) -> None:
    client = await server.connect()
    await client.subscribed("news")
    await client.subscribed("news")
    await trigger(sdk, "news", "once", "1")
    await client.expect("once", "news")
    await client.expect_silence()


async def test_event_reaches_every_subscriber_and_only_them(server: RelayServer, sdk: Any) -> None:
    a, b, c = [await server.connect() for _ in range(3)]
    await a.subscribed("news")
    await b.subscribed("news")
    await c.subscribed("sport")
    await trigger(sdk, "news", "headline", "plain text")
    for client in (a, b):
        frame = await client.expect("headline", "news")
        assert frame["data"] == "plain text"
    await c.expect_silence()


# Refusals at connection time: one test per close code -------------------------------------------


async def test_unknown_app_key_4001(server: RelayServer, bystander: Client, sdk: Any) -> None:
    message = await assert_refused(server.ws_url("no-such-key"), errors.APP_DOES_NOT_EXIST)
    assert "no-such-key" in message
    await assert_untouched(bystander, sdk)


async def test_disabled_app_4003(relay_server: RelayServerFactory, http: Any) -> None:
    disabled = AppConfig(id="2002", key="off-key", secret="off-secret", enabled=False)
    server = await relay_server(APP, disabled)
    bystander = await server.connect()
    await bystander.subscribed("news")
    await assert_refused(server.ws_url("off-key"), errors.APP_DISABLED)

    await assert_untouched(bystander, Api(http, server.port).sdk(APP.id, APP.key, APP.secret))


async def test_wrong_path_4005(server: RelayServer, bystander: Client, sdk: Any) -> None:
    await assert_refused(f"ws://127.0.0.1:{server.port}/socket/{APP.key}?{PUSHER_JS_QUERY}", errors.PATH_NOT_FOUND)
    await assert_untouched(bystander, sdk)


async def test_wrong_path_prefix_4005(relay_server: RelayServerFactory) -> None:
    server = await relay_server(path="/ws")
    await assert_refused(ws_url(server.port, APP.key), errors.PATH_NOT_FOUND)
    await connect(ws_url(server.port, APP.key, path="/ws"))


async def test_invalid_protocol_version_format_4006(server: RelayServer, bystander: Client, sdk: Any) -> None:
    await assert_refused(server.ws_url(query="protocol=seven&client=js"), errors.INVALID_VERSION_FORMAT)
    await assert_untouched(bystander, sdk)


async def test_unsupported_protocol_version_4007(server: RelayServer, bystander: Client, sdk: Any) -> None:
    await assert_refused(server.ws_url(query="protocol=3&client=js"), errors.UNSUPPORTED_PROTOCOL_VERSION)
    await assert_refused(server.ws_url(query="protocol=8&client=js"), errors.UNSUPPORTED_PROTOCOL_VERSION)
    await assert_untouched(bystander, sdk)


async def test_missing_protocol_version_4008(server: RelayServer, bystander: Client, sdk: Any) -> None:
    await assert_refused(server.ws_url(query="client=js&version=8.6.0"), errors.NO_PROTOCOL_VERSION)
    await assert_refused(server.ws_url(query=""), errors.NO_PROTOCOL_VERSION)
    await assert_untouched(bystander, sdk)


async def test_supported_protocol_versions_connect(server: RelayServer) -> None:
    for version in ("4", "5", "6", "7"):
        await connect(server.ws_url(query=f"protocol={version}"))


async def test_over_connection_quota_4100(relay_server: RelayServerFactory, http: Any) -> None:
    server = await relay_server(replace(APP, max_connections=2))
    first = await server.connect()
    await first.subscribed("news")
    second = await server.connect()
    await assert_refused(server.ws_url(), errors.OVER_CAPACITY)

    await assert_untouched(first, Api(http, server.port).sdk(APP.id, APP.key, APP.secret))
    # A freed slot is usable again once the server has processed the close.
    await second.close()
    await asyncio.wait_for(_connect_when_free(server), scaled(5))


async def _connect_when_free(server: RelayServer) -> None:
    while True:
        client = await open_socket(server.ws_url())
        frame = await client.recv()
        if frame["event"] == "pusher:connection_established":
            return
        await client.closed()


async def test_origin_not_allowed_4009(relay_server: RelayServerFactory, http: Any) -> None:
    server = await relay_server(replace(APP, allowed_origins=("*.example.com",)))
    bystander = await server.connect(origin="https://app.example.com")
    await bystander.subscribed("news")
    message = await assert_refused(server.ws_url(), errors.CONNECTION_UNAUTHORIZED, origin="https://evil.test")
    assert "origin" in message.lower()

    await assert_untouched(bystander, Api(http, server.port).sdk(APP.id, APP.key, APP.secret))


# Bad frames: an error frame, and the connection stays usable -------------------------------------


async def test_malformed_json_error_frame_keeps_connection(server: RelayServer, bystander: Client, sdk: Any) -> None:
    client = await server.connect()
    await client.send("{not json")
    await assert_error_frame(client, errors.INVALID_MESSAGE_FORMAT)
    await client.send('["a JSON array, not an object"]')
    await assert_error_frame(client, errors.INVALID_MESSAGE_FORMAT)
    await client.send('{"event": 12}')
    await assert_error_frame(client, errors.INVALID_MESSAGE_FORMAT)
    await client.subscribed("news")  # still usable
    await assert_untouched(bystander, sdk)


async def test_subscribe_without_channel_error_frame(server: RelayServer) -> None:
    client = await server.connect()
    await client.send({"event": "pusher:subscribe", "data": {"auth": ""}})
    await assert_error_frame(client, errors.INVALID_MESSAGE_FORMAT)
    await client.send({"event": "pusher:subscribe", "data": "not json"})
    await assert_error_frame(client, errors.INVALID_MESSAGE_FORMAT)
    await client.subscribed("news")


async def test_unknown_event_error_frame_keeps_connection(server: RelayServer, bystander: Client, sdk: Any) -> None:
    client = await server.connect()
    await client.send({"event": "pusher:teleport", "data": {}})
    data = await assert_error_frame(client, errors.INVALID_MESSAGE_FORMAT)
    assert "pusher:teleport" in data["message"]
    await client.expect_silence()
    await assert_untouched(bystander, sdk)


async def test_binary_frame_error_keeps_connection(server: RelayServer) -> None:
    client = await server.connect()
    await client.send(b'{"event":"pusher:ping","data":{}}')
    await assert_error_frame(client, errors.INVALID_MESSAGE_FORMAT)
    await client.expect_silence()


async def test_oversize_message_error_frame_keeps_connection(relay_server: RelayServerFactory, http: Any) -> None:
    server = await relay_server(replace(APP, max_message_size=1000))
    bystander = await server.connect()
    await bystander.subscribed("news")
    client = await server.connect()
    big = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "news", "pad": "x" * 1200}}).decode()
    await client.send(big)
    data = await assert_error_frame(client, errors.CLIENT_EVENT_REJECTED)
    assert "1000" in data["message"]
    # The limit is in bytes: fewer than 1000 characters, but more than 1000 bytes of UTF-8.
    wide = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "news", "pad": "\u00e9" * 480}}).decode()
    assert len(wide) < 1000 < len(wide.encode())
    await client.send(wide)
    await assert_error_frame(client, errors.CLIENT_EVENT_REJECTED)
    await client.subscribed("sport")  # still usable, and the oversize subscribe was not carried out

    sdk = Api(http, server.port).sdk(APP.id, APP.key, APP.secret)
    await trigger(sdk, "news", "n", "1")
    await client.expect_silence()
    await bystander.expect("n", "news")
    await assert_untouched(bystander, sdk)


async def test_huge_frame_closes_1009_without_harming_others(relay_server: RelayServerFactory, http: Any) -> None:
    server = await relay_server(replace(APP, max_message_size=1000))
    bystander = await server.connect()
    await bystander.subscribed("news")
    client = await server.connect()
    await client.send("x" * 100_000)
    code, _ = await client.closed()
    assert code == 1009

    await assert_untouched(bystander, Api(http, server.port).sdk(APP.id, APP.key, APP.secret))


@pytest.mark.parametrize(
    "channel",
    ["", "has space", "x" * 201, "émoji", "#private-thing", "#server-to-user-"],
    ids=["empty", "space", "too-long", "non-ascii", "hash", "hash-no-user"],
)
async def test_invalid_channel_name_subscription_error(
    server: RelayServer, bystander: Client, sdk: Any, channel: str
) -> None:
    client = await server.connect()
    await client.subscribe(channel)
    frame = await client.expect("pusher:subscription_error")
    assert frame["channel"] == channel
    data = frame["data"] if isinstance(frame["data"], dict) else inner(frame)
    assert data["status"] == 400
    assert data["error"]
    await client.subscribed("news")  # still usable
    await assert_untouched(bystander, sdk)


async def test_longest_valid_channel_name_is_accepted(server: RelayServer) -> None:
    client = await server.connect()
    await client.subscribed("a" * 200)
    await client.subscribed("-_=@,.;AZaz09")


async def test_shutdown_closes_connections_4200(relay_server: RelayServerFactory) -> None:
    server = await relay_server()
    client = await server.connect()
    closing = asyncio.create_task(server.stop())
    frame = await client.recv()
    assert frame["event"] == "pusher:error"
    assert frame["data"]["code"] == errors.RECONNECT_IMMEDIATELY
    code, _ = await client.closed()
    assert code == errors.RECONNECT_IMMEDIATELY
    await closing
