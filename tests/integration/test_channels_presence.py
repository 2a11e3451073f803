"""Presence channels (docs/protocol.md §2.3, §2.4, §6.2, §9.10-11) on an in-process relay.

Auth and channel_data come from the official `pusher` SDK's `authenticate` (malformed channel_data is
signed by the SDK too, through a pass-through JSON encoder). Refusals are channel-scoped
`pusher:subscription_error`s; the socket stays usable. pusher-js/Echo here/joining/leaving are covered by
tests/clients; this file covers the wire details and the limits.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest

from relay.config import AppConfig
from tests.integration.wire import (
    Api,
    Client,
    RawData,
    auth_sdk,
    connect,
    inner,
    presence_auth,
    private_auth,
    signin,
    signin_auth,
    wait_until,
)
from tests.support.inprocess import APP, RelayServer, RelayServerFactory

ROOM = "presence-room.5"


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret)


async def subscribe(client: Client, signer: Any, channel: str, channel_data: Any) -> None:
    auth, data = presence_auth(signer, client.socket_id, channel, channel_data)
    await client.subscribe(channel, auth, data)


async def join(
    server: RelayServer, signer: Any, user_id: Any, user_info: Any = None, channel: str = ROOM
) -> tuple[Client, dict[str, Any]]:
    """A new connection joined as `user_id`; returns it and its decoded `presence` payload."""
    client = await server.connect()
    data: dict[str, Any] = {"user_id": user_id}
    if user_info is not None:
        data["user_info"] = user_info
    await subscribe(client, signer, channel, data)
    frame = await client.expect("pusher_internal:subscription_succeeded", channel)
    return client, inner(frame)["presence"]


async def assert_refused(client: Client, channel: str, error_type: str, status: int) -> str:
    frame = await client.expect("pusher:subscription_error", channel)
    data = frame["data"] if isinstance(frame["data"], dict) else orjson.loads(frame["data"])
    assert data["type"] == error_type, frame
    assert data["status"] == status, frame
    assert isinstance(data["error"], str) and data["error"], frame
    return str(data["error"])


async def assert_usable(client: Client, signer: Any, user_id: str, channel: str = ROOM) -> dict[str, Any]:
    """After a refusal: not a member, and a correct subscribe on the same socket works."""
    await client.expect_silence()
    await subscribe(client, signer, channel, {"user_id": user_id})
    frame = await client.expect("pusher_internal:subscription_succeeded", channel)
    presence: dict[str, Any] = inner(frame)["presence"]
    assert user_id in presence["ids"]
    return presence


# Success ------------------------------------------------------------------------------------------


async def test_subscription_succeeded_carries_ids_hash_and_count(server: RelayServer, signer: Any) -> None:
    _, first = await join(server, signer, "1", {"name": "Ann"})
    assert first == {"ids": ["1"], "hash": {"1": {"name": "Ann"}}, "count": 1}
    _, second = await join(server, signer, "2", {"name": "Bob"})
    assert sorted(second["ids"]) == ["1", "2"]
    assert second["hash"] == {"1": {"name": "Ann"}, "2": {"name": "Bob"}}
    assert second["count"] == 2


async def test_member_added_and_removed_go_to_others_only(server: RelayServer, signer: Any) -> None:
    ann, _ = await join(server, signer, "1", {"name": "Ann"})
    bob, _ = await join(server, signer, "2", {"name": "Bob"})
    added = await ann.expect("pusher_internal:member_added", ROOM)
    assert inner(added) == {"user_id": "2", "user_info": {"name": "Bob"}}
    await bob.expect_silence()  # never told about its own arrival
    await bob.unsubscribe(ROOM)
    removed = await ann.expect("pusher_internal:member_removed", ROOM)
    assert inner(removed) == {"user_id": "2"}
    await bob.expect_silence()


async def test_disconnect_removes_the_member(server: RelayServer, signer: Any) -> None:
    ann, _ = await join(server, signer, "1")
    bob, _ = await join(server, signer, "2")
    await ann.expect("pusher_internal:member_added", ROOM)
    await bob.close()
    removed = await ann.expect("pusher_internal:member_removed", ROOM)
    assert inner(removed) == {"user_id": "2"}


async def test_one_user_on_several_connections_is_one_member(server: RelayServer, signer: Any) -> None:
    watcher, _ = await join(server, signer, "9")
    tab1, _ = await join(server, signer, "1", {"name": "Ann"})
    assert inner(await watcher.expect("pusher_internal:member_added", ROOM))["user_id"] == "1"
    tab2, presence = await join(server, signer, "1", {"name": "Ann"})
    assert sorted(presence["ids"]) == ["1", "9"] and presence["count"] == 2
    tab3, _ = await join(server, signer, "1", {"name": "Ann"})
    await watcher.expect_silence()  # no member_added for the second and third connection
    await tab1.expect_silence()  # nor to the user's own other connections
    await tab1.unsubscribe(ROOM)
    await tab2.close()
    await watcher.expect_silence()  # still one connection left: no member_removed
    await tab3.unsubscribe(ROOM)
    assert inner(await watcher.expect("pusher_internal:member_removed", ROOM)) == {"user_id": "1"}
    await watcher.expect_silence()


async def test_resubscribe_is_answered_again_without_second_member_added(server: RelayServer, signer: Any) -> None:
    watcher, _ = await join(server, signer, "9")
    client, _ = await join(server, signer, "1")
    await watcher.expect("pusher_internal:member_added", ROOM)
    await subscribe(client, signer, ROOM, {"user_id": "1"})
    frame = await client.expect("pusher_internal:subscription_succeeded", ROOM)
    assert inner(frame)["presence"]["count"] == 2
    await watcher.expect_silence()


async def test_numeric_and_string_user_ids_are_the_same_member(server: RelayServer, signer: Any) -> None:
    watcher, _ = await join(server, signer, "9")
    _numeric, presence = await join(server, signer, 10, {"n": 1})
    assert "10" in presence["ids"] and presence["count"] == 2
    assert inner(await watcher.expect("pusher_internal:member_added", ROOM))["user_id"] == "10"
    _, presence = await join(server, signer, "10", {"n": 1})
    assert presence["count"] == 2
    await watcher.expect_silence()


async def test_signed_in_socket_joins_with_its_user_data(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    auth, user_data = signin_auth(signer, client.socket_id, {"id": "42", "user_info": {"name": "Zed"}})
    await signin(client, auth, user_data)
    await client.expect("pusher:signin_success")
    # No channel_data: the signature covers socket_id:channel only (§9.11).
    await client.subscribe(ROOM, private_auth(signer, client.socket_id, ROOM))
    frame = await client.expect("pusher_internal:subscription_succeeded", ROOM)
    assert inner(frame)["presence"] == {"ids": ["42"], "hash": {"42": {"name": "Zed"}}, "count": 1}


# Refusals -----------------------------------------------------------------------------------------


async def test_missing_channel_data_is_refused(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    await client.subscribe(ROOM, private_auth(signer, client.socket_id, ROOM))
    await assert_refused(client, ROOM, "AuthError", 401)
    await assert_usable(client, signer, "1")


BAD_CHANNEL_DATA = {
    "not_json": RawData("{user_id: 1"),
    "json_array": RawData('["user_id", 1]'),
    "json_string": RawData('"1"'),
    "no_user_id": {"user_info": {"name": "Ann"}},
    "null_user_id": {"user_id": None},
    "empty_user_id": {"user_id": ""},
    "boolean_user_id": {"user_id": True},
    "object_user_id": {"user_id": {"id": 1}},
    "list_user_id": {"user_id": [1]},
}


@pytest.mark.parametrize("case", list(BAD_CHANNEL_DATA))
async def test_invalid_channel_data_is_refused(server: RelayServer, signer: Any, case: str) -> None:
    watcher, _ = await join(server, signer, "9")
    client = await server.connect()
    await subscribe(client, signer, ROOM, BAD_CHANNEL_DATA[case])  # signed correctly, content invalid
    await assert_refused(client, ROOM, "AuthError", 401)
    await watcher.expect_silence()
    presence = await assert_usable(client, signer, "1")
    assert presence["count"] == 2


async def test_channel_data_not_matching_the_signature_is_refused(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    auth, _ = presence_auth(signer, client.socket_id, ROOM, {"user_id": "1"})
    await client.subscribe(ROOM, auth, '{"user_id": "2"}')  # swapped identity
    await assert_refused(client, ROOM, "AuthError", 401)
    # Re-serialised channel_data is not the signed string either (the server must verify the exact bytes).
    auth, data = presence_auth(signer, client.socket_id, ROOM, {"user_id": "1"})
    await client.subscribe(ROOM, auth, data.replace(": ", ":"))
    await assert_refused(client, ROOM, "AuthError", 401)
    await assert_usable(client, signer, "1")


async def test_user_id_longer_than_128_is_refused(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    await subscribe(client, signer, ROOM, {"user_id": "u" * 129})
    await assert_refused(client, ROOM, "LimitReached", 4100)
    await assert_usable(client, signer, "u" * 128)


async def test_member_limit_is_configurable_and_refused_with_limit_reached(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_presence_members=2))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    first, _ = await join(server, signer, "1")
    second, _ = await join(server, signer, "2")
    await first.expect("pusher_internal:member_added", ROOM)
    third = await server.connect()
    await subscribe(third, signer, ROOM, {"user_id": "3"})
    message = await assert_refused(third, ROOM, "LimitReached", 4100)
    assert "2" in message
    await first.expect_silence()
    # A member's extra connection is not a new member: still accepted when the channel is full.
    _, presence = await join(server, signer, "2")
    assert presence["count"] == 2
    # Once a member leaves, the refused socket can join; other channels were never affected.
    await third.expect_silence()
    await second.unsubscribe(ROOM)
    await first.expect_silence()  # user 2 still has its other connection: no member_removed
    _, presence = await join(server, signer, "x", channel="presence-other")
    assert presence["count"] == 1


async def test_member_limit_default_is_100(server: RelayServer, signer: Any) -> None:
    assert APP.max_presence_members == 100
    # max_queue=None: early members get ~100 member_added frames this test never reads; a bounded client
    # queue would stop reading the socket and make every close wait for its timeout.
    clients = [await connect(server.ws_url(), max_queue=None) for _ in range(100)]
    for user, client in enumerate(clients):
        await subscribe(client, signer, "presence-big", {"user_id": str(user)})
    for client in clients:
        await client.expect("pusher_internal:subscription_succeeded", "presence-big")
    late = await server.connect()
    await subscribe(late, signer, "presence-big", {"user_id": "100"})
    await assert_refused(late, "presence-big", "LimitReached", 4100)
    await clients[0].close()
    await assert_usable(late, signer, "100", "presence-big")
    await asyncio.gather(*(client.close() for client in clients[1:]))


async def test_user_info_size_limit_is_configurable(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_presence_member_size=64))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    client = await server.connect()
    await subscribe(client, signer, ROOM, {"user_id": "1", "user_info": {"bio": "x" * 100}})
    message = await assert_refused(client, ROOM, "LimitReached", 4100)
    assert "64" in message
    await assert_usable(client, signer, "1")
    _, presence = await join(server, signer, "2", {"bio": "x" * 40})
    assert presence["hash"]["2"] == {"bio": "x" * 40}


async def test_user_info_default_limit_is_1_kb(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    await subscribe(client, signer, ROOM, {"user_id": "1", "user_info": {"bio": "x" * 1100}})
    await assert_refused(client, ROOM, "LimitReached", 4100)
    _, presence = await join(server, signer, "2", {"bio": "x" * 900})
    assert presence["count"] == 1


# HTTP API -----------------------------------------------------------------------------------------


async def test_users_endpoint_lists_distinct_users(server: RelayServer, signer: Any, api: Api, sdk: Any) -> None:
    await join(server, signer, "1")
    await join(server, signer, "2")
    await join(server, signer, "1")
    response = await api.send(sdk._pusher_client.users_info.make_request(ROOM))
    assert response.status == 200
    assert sorted(user["id"] for user in response.body["users"]) == ["1", "2"]
    assert len(response.body["users"]) == 2
    assert all(set(user) == {"id"} for user in response.body["users"])


async def test_users_endpoint_of_an_empty_presence_channel(api: Api, sdk: Any) -> None:
    response = await api.send(sdk._pusher_client.users_info.make_request("presence-nobody"))
    assert response.status == 200 and response.body == {"users": []}


@pytest.mark.parametrize("channel", ["news", "private-orders.1", "cache-news", "private-encrypted-x"])
async def test_users_endpoint_on_non_presence_channel_is_400(
    server: RelayServer, api: Api, sdk: Any, channel: str
) -> None:
    response = await api.send(sdk._pusher_client.users_info.make_request(channel))
    assert response.status == 400
    assert response.content_type == "application/json"
    assert "presence" in response.body["error"]


async def test_user_count_in_channel_info_counts_users_not_connections(
    server: RelayServer, signer: Any, api: Api, sdk: Any
) -> None:
    a, _ = await join(server, signer, "1")
    await join(server, signer, "1")
    await join(server, signer, "2")
    info = await asyncio.to_thread(sdk.channel_info, ROOM, ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}
    listing = await asyncio.to_thread(sdk.channels_info, "presence-", ["user_count"])
    assert listing == {"channels": {ROOM: {"user_count": 2}}}
    await a.close()

    async def counted() -> bool:
        info = await asyncio.to_thread(sdk.channel_info, ROOM, ["user_count", "subscription_count"])
        return bool(info == {"occupied": True, "user_count": 2, "subscription_count": 2})

    await wait_until(counted)


async def test_user_count_on_non_presence_channel_is_400(server: RelayServer, api: Api, sdk: Any) -> None:
    response = await api.send(sdk._pusher_client.channel_info.make_request("news", ["user_count"]))
    assert response.status == 400 and "presence" in response.body["error"]


async def test_presence_of_another_app_is_separate(relay_server: RelayServerFactory) -> None:
    other = AppConfig(id="1002", key="other-key", secret="other-secret")
    server = await relay_server(APP, other)
    mine, _ = await join(server, auth_sdk(APP.id, APP.key, APP.secret), "1")
    client = await server.connect(other.key)
    await subscribe(client, auth_sdk(other.id, other.key, other.secret), ROOM, {"user_id": "2"})
    frame = await client.expect("pusher_internal:subscription_succeeded", ROOM)
    assert inner(frame)["presence"]["ids"] == ["2"]
    await mine.expect_silence()


async def test_signed_in_user_info_is_held_to_the_same_size_limit(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_presence_member_size=64))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    client = await server.connect()
    auth, user_data = signin_auth(signer, client.socket_id, {"id": "42", "user_info": {"bio": "x" * 100}})
    await signin(client, auth, user_data)
    await client.expect("pusher:signin_success")
    # Joining with the sign-in identity (no channel_data) must not bypass the user_info limit.
    await client.subscribe(ROOM, private_auth(signer, client.socket_id, ROOM))
    await assert_refused(client, ROOM, "LimitReached", 4100)
    await assert_usable(client, signer, "42")


async def test_resubscribe_as_another_user_switches_membership(server: RelayServer, signer: Any, sdk: Any) -> None:
    watcher, _ = await join(server, signer, "9")
    client, _ = await join(server, signer, "1")
    await watcher.expect("pusher_internal:member_added", ROOM)
    await subscribe(client, signer, ROOM, {"user_id": "2"})
    frame = await client.expect("pusher_internal:subscription_succeeded", ROOM)
    assert sorted(inner(frame)["presence"]["ids"]) == ["2", "9"]
    assert inner(await watcher.expect("pusher_internal:member_removed", ROOM)) == {"user_id": "1"}
    assert inner(await watcher.expect("pusher_internal:member_added", ROOM))["user_id"] == "2"
    response = await asyncio.to_thread(sdk.users_info, ROOM)
    assert sorted(user["id"] for user in response["users"]) == ["2", "9"]
    await client.close()
    assert inner(await watcher.expect("pusher_internal:member_removed", ROOM)) == {"user_id": "2"}
