"""What the official SDKs' own acceptance tests assert about Pusher's hosted service, checked against relay.

pusher-http-php's `tests/acceptance/*` and pusher-http-node's `tests/remote/*` run against the real
service, so their assertions record what the service really answers (see docs/protocol.md, "Where the
SDKs rely on Pusher's real behaviour"). Each test here names the SDK test it mirrors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.test_http_api import (
    BATCH,
    CHANNELS,
    EVENTS,
    assert_error,
    event,
    get,
    post,
    presence_member,
    subscriber,
)
from tests.integration.wire import Api
from tests.support.inprocess import APP, RelayServer

# pusher-http-php TriggerTest / TriggerBatchTest send str_pad('', 11 * 1024, 'a').
ELEVEN_KIB = "a" * 11 * 1024


# Error answers: the PHP SDK puts the body in ApiErrorException's message, and its tests match words in it.


async def test_batch_over_ten_events_is_400_batch_too_large(server: RelayServer, api: Api, sdk: Any) -> None:
    """pusher-http-php TriggerBatchTest::testSendingOver10messagesReturns400."""
    client = await subscriber(server, "test_channel")
    items = [{"channel": "test_channel", "name": "my_event", "data": f'{{"index":{i}}}'} for i in range(1, 12)]
    assert_error(await post(api, sdk, BATCH, {"batch": items}), 400, "Batch too large")
    await client.expect_silence()


async def test_event_data_over_10kib_is_413_content_of_this_event(api: Api, sdk: Any) -> None:
    """pusher-http-php TriggerTest/TriggerBatchTest::testSendingOver10kBMessageReturns413,
    pusher-http-node tests/acceptance-tests/trigger-test.js ('the REST API call will return 413')."""
    assert_error(await post(api, sdk, EVENTS, event(data=ELEVEN_KIB)), 413, "content of this event")
    batch = {"batch": [{"channel": "test_channel", "name": "my_event", "data": ELEVEN_KIB}]}
    assert_error(await post(api, sdk, BATCH, batch), 413, "content of this event", "batch[0]")


async def test_event_data_of_exactly_10kib_is_accepted(api: Api, sdk: Any) -> None:
    """The service's limit is 10 KB = 10240 bytes (docs: 'limited to 10KB'); the SDKs check `> 10240`."""
    response = await post(api, sdk, EVENTS, event(data="a" * 10_240))
    assert (response.status, response.body) == (200, {})


# Success answers ----------------------------------------------------------------------------------


async def test_trigger_answers_empty_object_for_string_array_and_unknown_socket_id(api: Api, sdk: Any) -> None:
    """pusher-http-php TriggerTest: testStringPush, testArrayPush, testPushWithSocketId (assertEquals stdClass);
    pusher-http-node tests/remote/pusher/trigger.js (JSON.parse(body) eql {})."""
    for body in (
        event(["test_channel"], data="Test string"),
        event(["test_channel"], data='{"test":1}'),
        event(["test_channel"], data='{"test":1}', socket_id="123.456"),
        event(["test_channel_1", "test_channel_2"]),
    ):
        response = await post(api, sdk, EVENTS, body)
        assert (response.status, response.content_type, response.body) == (200, "application/json", {})


async def test_empty_data_is_delivered_as_an_empty_string(server: RelayServer, api: Api, sdk: Any) -> None:
    """The SDKs send `data` as given, `""` included (pusher-js keeps a string it cannot parse as JSON)."""
    client = await subscriber(server, "news")
    response = await post(api, sdk, EVENTS, event(data=""))
    assert (response.status, response.body) == (200, {})
    assert (await client.expect("my-event", "news"))["data"] == ""


async def test_trigger_info_reports_subscription_count_on_presence_channels_too(
    server: RelayServer, api: Api, sdk: Any
) -> None:
    """pusher-http-php TriggerTest::testPushWithInfo: the service answers subscription_count for a presence
    channel as well (the docs table says 'All except Presence'), and leaves user_count out for a public one."""
    await subscriber(server, "my-channel")
    body = event(["my-channel", "presence-my-channel"], info="user_count,subscription_count")
    response = await post(api, sdk, EVENTS, body)
    assert (response.status, response.body) == (
        200,
        {
            "channels": {
                "my-channel": {"subscription_count": 1},
                "presence-my-channel": {"user_count": 0, "subscription_count": 0},
            }
        },
    )


async def test_batch_info_matches_the_services_answer(server: RelayServer, api: Api, sdk: Any) -> None:
    """pusher-http-php TriggerBatchTest::testTriggerBatchWithInfo (index-aligned, `{}` for an event without info)."""
    await subscriber(server, "my-channel")
    items = [
        {"channel": "my-channel", "name": "my_event", "data": "test-string", "info": "subscription_count"},
        {"channel": "my-channel-2", "name": "my_event", "data": "test-string"},
        {"channel": "presence-my-channel", "name": "my_event", "data": "s", "info": "user_count,subscription_count"},
    ]
    response = await post(api, sdk, BATCH, {"batch": items})
    assert (response.status, response.body) == (
        200,
        {"batch": [{"subscription_count": 1}, {}, {"user_count": 0, "subscription_count": 0}]},
    )


async def test_batch_event_with_null_socket_id_is_accepted(server: RelayServer, api: Api, sdk: Any) -> None:
    """pusher-http-node tests/remote/pusher/triggerBatch.js sends `socket_id: null` and expects 200 `{}`."""
    client = await subscriber(server, "integration")
    items = [{"channel": "integration", "name": "event", "data": "test", "socket_id": None}]
    response = await post(api, sdk, BATCH, {"batch": items})
    assert (response.status, response.body) == (200, {})
    assert (await client.expect("event", "integration"))["data"] == "test"


# Channel queries ------------------------------------------------------------------------------------


async def test_channel_queries_answer_as_the_sdk_tests_expect(server: RelayServer, api: Api, sdk: Any) -> None:
    """pusher-http-node tests/remote/pusher/get.js and pusher-http-php ChannelQueryTest."""
    # get.js: `channels` is an object even when empty (php get_channels calls get_object_vars on it).
    assert (await get(api, sdk, CHANNELS)).body == {"channels": {}}
    assert (await get(api, sdk, CHANNELS, {"filter_by_prefix": "__fish"})).body == {"channels": {}}
    # get.js: an unoccupied channel still reports `occupied` as a boolean.
    response = await get(api, sdk, f"{CHANNELS}/CHANNEL")
    assert (response.status, response.body) == (200, {"occupied": False})
    # get.js: users of a non-presence channel is a 400.
    assert_error(await get(api, sdk, f"{CHANNELS}/CHANNEL/users"), 400)
    # ChannelQueryTest::testProvidingInfoParameterWithPrefixQueryFailsForPublicChannel.
    assert_error(await get(api, sdk, CHANNELS, {"filter_by_prefix": "test_", "info": "user_count"}), 400)
    # ChannelQueryTest::testChannelListUsingGenericGet: without info each channel is an empty object.
    await subscriber(server, "my-channel")
    assert (await get(api, sdk, CHANNELS)).body == {"channels": {"my-channel": {}}}
    # ChannelQueryTest::testUsersInfo: an object with `users`, ids as strings.
    await presence_member(server, sdk, "presence-channel-test", "7")
    response = await get(api, sdk, f"{CHANNELS}/presence-channel-test/users")
    assert (response.status, response.body) == (200, {"users": [{"id": "7"}]})


# Users ---------------------------------------------------------------------------------------------


async def test_terminate_and_send_to_user_without_connections_answer_empty_object(api: Api, sdk: Any) -> None:
    """pusher-http-php TerminateUserConnectionsTest and SendToUserTest: `{}` for a user with no connections,
    on the path the PHP and Node SDKs use and on the one pusher-http-python 3.3 uses."""
    for path in (f"/apps/{APP.id}/users/123/terminate_connections", "/users/123/terminate_connections"):
        response = await post(api, sdk, path, {})
        assert (response.status, response.body) == (200, {}), path
    assert await asyncio.to_thread(sdk.terminate_user_connections, "123") == {}
    assert await asyncio.to_thread(sdk.send_to_user, "123", "my_event", "Test string") == {}
