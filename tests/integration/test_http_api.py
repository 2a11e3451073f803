"""The signed HTTP API (docs/protocol.md §6) against an in-process relay: one test per validation rule.

Requests are built and signed by the official `pusher` SDK (or signed again its way after a change),
sent with aiohttp; subscribers are real WebSocket clients.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest

from relay.config import AppConfig
from tests.integration.wire import Api, ApiResponse, Client, build_request, open_socket, resign
from tests.support.inprocess import APP, RelayServer, RelayServerFactory

EVENTS = f"/apps/{APP.id}/events"
BATCH = f"/apps/{APP.id}/batch_events"
CHANNELS = f"/apps/{APP.id}/channels"


def assert_error(response: ApiResponse, status: int, *words: str) -> str:
    """A 4xx with a JSON body `{"error": "<message>"}` naming what is wrong."""
    assert response.status == status, response
    assert response.content_type == "application/json", response
    assert isinstance(response.body, dict), response
    message = response.body.get("error")
    assert isinstance(message, str) and message, response
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def event(channels: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "my-event", "data": '{"a":1}', "channels": channels or ["news"]}
    body.update(fields)
    return {name: value for name, value in body.items() if value is not None}


async def post(api: Api, sdk: Any, path: str, body: dict[str, Any]) -> ApiResponse:
    return await api.send(build_request(sdk, "POST", path, body))


async def get(api: Api, sdk: Any, path: str, params: dict[str, str] | None = None) -> ApiResponse:
    return await api.send(build_request(sdk, "GET", path, params))


async def subscriber(server: RelayServer, *channels: str) -> Client:
    client = await server.connect()
    for channel in channels:
        await client.subscribed(channel)
    return client


async def presence_member(server: RelayServer, sdk: Any, channel: str, user_id: str) -> Client:
    client = await server.connect()
    auth = sdk.authenticate(channel, client.socket_id, {"user_id": user_id, "user_info": {"n": user_id}})
    await client.subscribed(channel, auth["auth"], auth["channel_data"])
    return client


# POST /events -------------------------------------------------------------------------------------


async def test_sdk_trigger_reaches_subscriber_and_replies_empty_object(server: RelayServer, sdk: Any) -> None:
    client = await subscriber(server, "news")
    reply = await asyncio.to_thread(sdk.trigger, ["news"], "my-event", {"hello": "world"})
    assert reply == {}
    frame = await client.expect("my-event", "news")
    assert orjson.loads(frame["data"]) == {"hello": "world"}


async def test_data_is_forwarded_verbatim(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "news")
    data = '{ "spaced" : [1, 2.50, "\\u00e9"] }'
    response = await post(api, sdk, EVENTS, event(data=data))
    assert (response.status, response.body) == (200, {})
    assert (await client.expect("my-event", "news"))["data"] == data


async def test_single_channel_field_is_accepted(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "news")
    body = {"name": "php-style", "data": "x", "channel": "news"}
    response = await post(api, sdk, EVENTS, body)
    assert response.status == 200
    await client.expect("php-style", "news")


async def test_one_hundred_channels_accepted(server: RelayServer, api: Api, sdk: Any) -> None:
    first, last = await subscriber(server, "c0"), await subscriber(server, "c99")
    response = await post(api, sdk, EVENTS, event([f"c{i}" for i in range(100)]))
    assert response.status == 200
    await first.expect("my-event", "c0")
    await last.expect("my-event", "c99")


async def test_more_than_one_hundred_channels_refused(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "c0")
    response = await post(api, sdk, EVENTS, event([f"c{i}" for i in range(101)]))
    assert_error(response, 400, "100")
    await client.expect_silence()


async def test_no_channel_refused(api: Api, sdk: Any) -> None:
    assert_error(await post(api, sdk, EVENTS, {"name": "e", "data": "x", "channels": []}), 400, "channel")
    assert_error(await post(api, sdk, EVENTS, {"name": "e", "data": "x"}), 400, "channel")
    assert_error(await post(api, sdk, EVENTS, {"name": "e", "data": "x", "channels": "news"}), 400, "channels")


@pytest.mark.parametrize(
    "channel",
    ["bad name", "x" * 201, "caf\u00e9", "#reserved", ""],
    ids=["space", "too-long", "non-ascii", "hash", "empty"],
)
async def test_invalid_channel_name_refused(server: RelayServer, api: Api, sdk: Any, channel: str) -> None:
    client = await subscriber(server, "news")
    response = await post(api, sdk, EVENTS, event(["news", channel]))
    assert_error(response, 400, "channel")
    await client.expect_silence()  # nothing published, not even to the valid channel


async def test_encrypted_channel_must_be_alone(api: Api, sdk: Any) -> None:
    response = await post(api, sdk, EVENTS, event(["private-encrypted-a", "news"]))
    assert_error(response, 400, "encrypted")


async def test_event_name_length_limit(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "news")
    assert (await post(api, sdk, EVENTS, event(name="e" * 200))).status == 200
    await client.expect("e" * 200, "news")
    assert_error(await post(api, sdk, EVENTS, event(name="e" * 201)), 400, "200")
    await client.expect_silence()


async def test_event_name_reserved_or_empty_refused(api: Api, sdk: Any) -> None:
    assert_error(await post(api, sdk, EVENTS, event(name="pusher:fake")), 400, "reserved")
    assert_error(await post(api, sdk, EVENTS, event(name="pusher_internal:member_added")), 400, "reserved")
    assert_error(await post(api, sdk, EVENTS, event(name="")), 400, "empty")
    assert_error(await post(api, sdk, EVENTS, event(name=5)), 400, "name")


async def test_data_size_limit_413(relay_server: RelayServerFactory, http: aiohttp.ClientSession) -> None:
    server = await relay_server(replace(APP, max_event_size=1000))
    api = Api(http, server.port)
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    client = await subscriber(server, "news")
    assert (await post(api, sdk, EVENTS, event(data="d" * 1000))).status == 200
    assert (await client.expect("my-event", "news"))["data"] == "d" * 1000
    assert_error(await post(api, sdk, EVENTS, event(data="d" * 1001)), 413, "1000")
    # Bytes, not characters: 500 two-byte characters are 1000 bytes, 501 are too many.
    assert (await post(api, sdk, EVENTS, event(data="\u00e9" * 500))).status == 200
    assert_error(await post(api, sdk, EVENTS, event(data="\u00e9" * 501)), 413)
    await client.expect("my-event", "news")
    await client.expect_silence()


async def test_default_data_size_limit_is_10_kb(api: Api, sdk: Any) -> None:
    assert (await post(api, sdk, EVENTS, event(data="d" * 10_240))).status == 200
    assert_error(await post(api, sdk, EVENTS, event(data="d" * 10_241)), 413)


async def test_data_must_be_a_string(api: Api, sdk: Any) -> None:
    assert_error(await post(api, sdk, EVENTS, event(data={"a": 1})), 400, "data")
    assert_error(await post(api, sdk, EVENTS, {"name": "e", "channels": ["news"]}), 400, "data")


async def test_socket_id_excludes_that_connection(server: RelayServer, sdk: Any) -> None:
    sender, other = await subscriber(server, "news", "sport"), await subscriber(server, "news", "sport")
    reply = await asyncio.to_thread(sdk.trigger, ["news", "sport"], "to-others", "x", sender.socket_id)
    assert reply == {}
    await other.expect("to-others", "news")
    await other.expect("to-others", "sport")
    await sender.expect_silence()


@pytest.mark.parametrize("socket_id", ["abc", "1234", "1.2.3", "1.x", " 1.2", 12.5, "\u0661.\u0662"])
async def test_malformed_socket_id_refused(server: RelayServer, api: Api, sdk: Any, socket_id: object) -> None:
    client = await subscriber(server, "news")
    assert_error(await post(api, sdk, EVENTS, event(socket_id=socket_id)), 400, "socket_id")
    await client.expect_silence()


async def test_info_in_reply(server: RelayServer, api: Api, sdk: Any) -> None:
    await subscriber(server, "news")
    await subscriber(server, "news")
    await presence_member(server, sdk, "presence-room", "1")
    await presence_member(server, sdk, "presence-room", "1")
    await presence_member(server, sdk, "presence-room", "2")
    body = event(["news", "presence-room", "empty"], info="subscription_count,user_count")
    response = await post(api, sdk, EVENTS, body)
    assert response.status == 200
    assert response.body == {
        "channels": {
            "news": {"subscription_count": 2},
            "presence-room": {"subscription_count": 3, "user_count": 2},
            "empty": {"subscription_count": 0},
        }
    }


async def test_unknown_info_attribute_refused(api: Api, sdk: Any) -> None:
    assert_error(await post(api, sdk, EVENTS, event(info="subscription_count,colour")), 400, "colour")


async def test_body_must_be_a_json_object(api: Api, sdk: Any) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, body=b"{not json")), 400, "json")
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, body=b'["news"]')), 400, "object")


# POST /batch_events -------------------------------------------------------------------------------


def batch_item(channel: str = "news", name: str = "b", data: str = "x", **fields: Any) -> dict[str, Any]:
    return {"channel": channel, "name": name, "data": data, **fields}


async def test_batch_of_ten_delivered_in_order(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "news")
    items = [batch_item(name=f"e{i}", data=str(i)) for i in range(10)]
    response = await post(api, sdk, BATCH, {"batch": items})
    assert (response.status, response.body) == (200, {})
    for i in range(10):
        frame = await client.expect(f"e{i}", "news")
        assert frame["data"] == str(i)


async def test_sdk_trigger_batch(server: RelayServer, sdk: Any) -> None:
    client = await subscriber(server, "news")
    reply = await asyncio.to_thread(sdk.trigger_batch, [batch_item(name="sdk-1"), batch_item(name="sdk-2")])
    assert reply == {}
    await client.expect("sdk-1", "news")
    await client.expect("sdk-2", "news")


async def test_batch_of_eleven_refused(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "news")
    response = await post(api, sdk, BATCH, {"batch": [batch_item() for _ in range(11)]})
    assert_error(response, 400, "10")
    await client.expect_silence()


async def test_empty_or_missing_batch_refused(api: Api, sdk: Any) -> None:
    assert_error(await post(api, sdk, BATCH, {"batch": []}), 400, "batch")
    assert_error(await post(api, sdk, BATCH, {}), 400, "batch")
    assert_error(await post(api, sdk, BATCH, {"batch": ["not an object"]}), 400, "batch")


@pytest.mark.parametrize(
    ("bad", "word"),
    [
        (batch_item(channel="bad name"), "channel"),
        (batch_item(name="e" * 201), "200"),
        (batch_item(data={"a": 1}), "data"),
        (batch_item(socket_id="nope"), "socket_id"),
        ({"name": "b", "data": "x", "channels": ["a", "b"]}, "one channel"),
        ({"name": "b", "data": "x"}, "channel"),
    ],
    ids=["channel", "name", "data", "socket_id", "channels-list", "no-channel"],
)
async def test_batch_item_validated_and_nothing_published(
    server: RelayServer, api: Api, sdk: Any, bad: dict[str, Any], word: str
) -> None:
    client = await subscriber(server, "news")
    response = await post(api, sdk, BATCH, {"batch": [batch_item(), batch_item(), bad]})
    assert_error(response, 400, "batch[2]", word)
    await client.expect_silence()


async def test_batch_item_data_size_413(api: Api, sdk: Any) -> None:
    response = await post(api, sdk, BATCH, {"batch": [batch_item(data="d" * 10_241)]})
    assert_error(response, 413, "batch[0]")


async def test_batch_info_is_index_aligned(server: RelayServer, api: Api, sdk: Any) -> None:
    await subscriber(server, "news")
    await presence_member(server, sdk, "presence-room", "7")
    items = [
        batch_item(info="subscription_count"),
        batch_item(),
        batch_item(channel="presence-room", info="user_count"),
    ]
    response = await post(api, sdk, BATCH, {"batch": items})
    assert response.status == 200
    assert response.body == {"batch": [{"subscription_count": 1}, {}, {"user_count": 1}]}


# GET /channels and /channels/<name> ---------------------------------------------------------------


async def test_channels_lists_occupied_channels(server: RelayServer, api: Api, sdk: Any) -> None:
    assert (await get(api, sdk, CHANNELS)).body == {"channels": {}}
    await subscriber(server, "news", "sport")
    leaver = await subscriber(server, "gone")
    await leaver.unsubscribe("gone")
    await leaver.expect_silence()
    response = await get(api, sdk, CHANNELS)
    assert (response.status, response.body) == (200, {"channels": {"news": {}, "sport": {}}})


async def test_sdk_channels_info(server: RelayServer, sdk: Any) -> None:
    await subscriber(server, "news")
    reply = await asyncio.to_thread(sdk.channels_info)
    assert reply == {"channels": {"news": {}}}


async def test_channels_filter_by_prefix(server: RelayServer, api: Api, sdk: Any) -> None:
    await subscriber(server, "news-1", "news-2", "sport")
    response = await get(api, sdk, CHANNELS, {"filter_by_prefix": "news-"})
    assert response.body == {"channels": {"news-1": {}, "news-2": {}}}


async def test_channels_info_subscription_count(server: RelayServer, api: Api, sdk: Any) -> None:
    await subscriber(server, "news")
    await subscriber(server, "news", "sport")
    response = await get(api, sdk, CHANNELS, {"info": "subscription_count"})
    assert response.body == {"channels": {"news": {"subscription_count": 2}, "sport": {"subscription_count": 1}}}


async def test_channels_info_user_count_needs_presence_prefix(server: RelayServer, api: Api, sdk: Any) -> None:
    assert_error(await get(api, sdk, CHANNELS, {"info": "user_count"}), 400, "presence-")
    await presence_member(server, sdk, "presence-a", "1")
    await presence_member(server, sdk, "presence-a", "2")
    await subscriber(server, "news")
    response = await get(api, sdk, CHANNELS, {"info": "user_count", "filter_by_prefix": "presence-"})
    assert response.body == {"channels": {"presence-a": {"user_count": 2}}}


async def test_channels_unknown_info_refused(api: Api, sdk: Any) -> None:
    assert_error(await get(api, sdk, CHANNELS, {"info": "cache"}), 400, "cache")


async def test_channel_unoccupied(api: Api, sdk: Any) -> None:
    response = await get(api, sdk, f"{CHANNELS}/news")
    assert (response.status, response.body) == (200, {"occupied": False})


async def test_channel_occupied_with_subscription_count(server: RelayServer, api: Api, sdk: Any) -> None:
    await subscriber(server, "news")
    await subscriber(server, "news")
    response = await get(api, sdk, f"{CHANNELS}/news", {"info": "subscription_count"})
    assert response.body == {"occupied": True, "subscription_count": 2}
    reply = await asyncio.to_thread(sdk.channel_info, "news", ["subscription_count"])
    assert reply == {"occupied": True, "subscription_count": 2}


async def test_channel_user_count_presence_only(server: RelayServer, api: Api, sdk: Any) -> None:
    assert_error(await get(api, sdk, f"{CHANNELS}/news", {"info": "user_count"}), 400, "presence")
    await presence_member(server, sdk, "presence-b", "1")
    response = await get(api, sdk, f"{CHANNELS}/presence-b", {"info": "user_count"})
    assert response.body == {"occupied": True, "user_count": 1}


async def test_channel_cache_info_cache_channels_only(api: Api, sdk: Any) -> None:
    assert_error(await get(api, sdk, f"{CHANNELS}/news", {"info": "cache"}), 400, "cache")
    assert (await post(api, sdk, EVENTS, event(["cache-news"], data="last"))).status == 200
    response = await get(api, sdk, f"{CHANNELS}/cache-news", {"info": "cache"})
    assert response.body["cache"]["data"] == "last"


async def test_channel_invalid_name_refused(api: Api, sdk: Any) -> None:
    assert_error(await get(api, sdk, f"{CHANNELS}/{'x' * 201}"), 400, "channel")
    assert_error(await get(api, sdk, f"{CHANNELS}/bad%20name"), 400, "channel")


# Signatures ---------------------------------------------------------------------------------------


async def test_wrong_auth_key_401(api: Api, sdk: Any) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, query={"auth_key": "other-key"})), 401, "auth_key")


async def test_other_apps_credentials_401(relay_server: RelayServerFactory, http: aiohttp.ClientSession) -> None:
    other = AppConfig(id="2002", key="other-key", secret="other-secret")
    server = await relay_server(APP, other)
    api = Api(http, server.port)
    # Signed correctly for app 2002, sent to app 1001.
    request = build_request(api.sdk(other.id, other.key, other.secret), "POST", EVENTS, event())
    assert_error(await api.send(request), 401, "auth_key")


@pytest.mark.parametrize("param", ["auth_key", "auth_timestamp", "auth_version", "auth_signature"])
async def test_missing_auth_param_401(api: Api, sdk: Any, param: str) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, drop=(param,))), 401, param)


async def test_missing_body_md5_401(api: Api, sdk: Any) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    request.query_params.pop("body_md5")
    assert_error(await api.send(resign(request)), 401, "body_md5")


@pytest.mark.parametrize("age", [601, 3600, -601], ids=["601s-old", "hour-old", "601s-ahead"])
async def test_timestamp_outside_600_seconds_401(api: Api, sdk: Any, age: int) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    stale = str(int(time.time()) - age)
    assert_error(await api.send(resign(request, query={"auth_timestamp": stale})), 401, "timestamp")


async def test_timestamp_within_600_seconds_accepted(api: Api, sdk: Any) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    recent = str(int(time.time()) - 590)
    assert (await api.send(resign(request, query={"auth_timestamp": recent}))).status == 200


async def test_non_numeric_timestamp_401(api: Api, sdk: Any) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, query={"auth_timestamp": "yesterday"})), 401, "auth_timestamp")


async def test_wrong_auth_version_401(api: Api, sdk: Any) -> None:
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, query={"auth_version": "2.0"})), 401, "auth_version")


async def test_bad_body_md5_401(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "news")
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, query={"body_md5": "0" * 32})), 401, "body_md5")
    # The body changed after signing (body_md5 left as signed): refused too.
    request = build_request(sdk, "POST", EVENTS, event())
    request.body = orjson.dumps(event(data="tampered"))
    assert_error(await api.send(request), 401, "body_md5")
    await client.expect_silence()


async def test_bad_signature_401(server: RelayServer, api: Api, sdk: Any) -> None:
    client = await subscriber(server, "news")
    request = build_request(sdk, "POST", EVENTS, event())
    assert_error(await api.send(resign(request, secret="wrong-secret")), 401, "signature")
    request = build_request(sdk, "POST", EVENTS, event())
    request.query_params["auth_signature"] = "f" * 64
    assert_error(await api.send(request), 401, "signature")
    # A param added after signing is part of the string to sign, so the signature no longer matches.
    request = build_request(sdk, "GET", CHANNELS)
    request.query_params["filter_by_prefix"] = "news"
    assert_error(await api.send(request), 401, "signature")
    await client.expect_silence()


async def test_unknown_app_404(api: Api) -> None:
    sdk = api.sdk("9999", APP.key, APP.secret)
    assert_error(await api.send(build_request(sdk, "POST", "/apps/9999/events", event())), 404, "9999")


async def test_disabled_app_403(relay_server: RelayServerFactory, http: aiohttp.ClientSession) -> None:
    server = await relay_server(replace(APP, enabled=False))
    api = Api(http, server.port)
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    assert_error(await post(api, sdk, EVENTS, event()), 403, "disabled")
    assert_error(await get(api, sdk, CHANNELS), 403, "disabled")


async def test_unknown_route_and_wrong_method_are_json(api: Api, sdk: Any) -> None:
    assert_error(await api.raw("GET", "/no/such/route"), 404)
    assert_error(await api.raw("PUT", EVENTS), 405)
    assert_error(await api.raw("POST", CHANNELS), 405)


async def test_request_body_over_server_limit_413(
    relay_server: RelayServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await relay_server(max_request_size=2000)
    api = Api(http, server.port)
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    assert_error(await post(api, sdk, EVENTS, event(data="d" * 3000)), 413)


# Health and readiness -----------------------------------------------------------------------------


async def test_up(api: Api) -> None:
    response = await api.raw("GET", "/up")
    assert (response.status, response.body) == (200, {"health": "OK"})


async def test_readiness_turns_false_during_shutdown(server: RelayServer, api: Api) -> None:
    response = await api.raw("GET", "/ready")
    assert (response.status, response.body) == (200, {"ready": True})
    client = await server.connect()
    # What shutdown runs first (aiohttp on_shutdown): connections close with 4200, readiness turns false,
    # while the listener is still there for a load balancer to ask.
    await server.app.shutdown()
    assert (await client.expect("pusher:error"))["data"]["code"] == 4200
    code, _ = await client.closed()
    assert code == 4200
    response = await api.raw("GET", "/ready")
    assert (response.status, response.body) == (503, {"ready": False})
    assert (await api.raw("GET", "/up")).status == 200
    # New clients are turned away with 4100 (pusher-js retries after 1 s, to another node).
    late = await open_socket(server.ws_url())
    frame = await late.expect("pusher:error")
    assert frame["data"]["code"] == 4100
    assert (await late.closed())[0] == 4100


async def test_api_under_a_path_prefix(relay_server: RelayServerFactory, http: aiohttp.ClientSession) -> None:
    server = await relay_server(path="/ws")
    api = Api(http, server.port)
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    # Signed over the full path, as an SDK configured with the prefix does.
    assert (await post(api, sdk, f"/ws{EVENTS}", event())).status == 200
    # Signed without the prefix (the SDK's base URL saw none, a proxy added it): accepted too.
    request = build_request(sdk, "POST", EVENTS, event())
    request.path = f"/ws{EVENTS}"
    assert (await api.send(request)).status == 200
    # Without the prefix there is no API (405: only WebSocket upgrades are routed everywhere).
    assert (await post(api, sdk, EVENTS, event())).status in (404, 405)
