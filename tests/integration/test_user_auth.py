"""User authentication (docs/protocol.md §2.6, §9.11, §9.14-16) on an in-process relay.

Sign-in strings come from the official SDK's `authenticate_user`; send-to-user and terminate go through
the SDK's `send_to_user` and `terminate_user_connections`. Decided behaviour: a bad sign-in signature is
`pusher:error` 4009 then close 4009; malformed user data and signing in as a second user are error frames
only; `#server-to-user-<id>` is open only to the socket signed in as `<id>`; terminate closes every
connection of that user with 4009 and nobody else's; an app that requires sign-in closes a connection that
has neither signed in nor subscribed to a private or presence channel within `user_authentication_timeout`
with 4009.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import orjson
import pytest

from tests.integration.wire import (
    Api,
    Client,
    RawData,
    auth_sdk,
    build_request,
    inner,
    private_auth,
    signin,
    signin_auth,
    wait_until,
)
from tests.support.inprocess import APP, RelayServer, RelayServerFactory
from tests.support.timeouts import scaled


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret)


async def signed_in(server: RelayServer, signer: Any, user_id: str, subscribe_own: bool = True) -> Client:
    """A connection signed in as `user_id`, subscribed to its own channel as pusher-js does."""
    client = await server.connect()
    auth, user_data = signin_auth(signer, client.socket_id, {"id": user_id, "user_info": {"name": user_id}})
    await signin(client, auth, user_data)
    frame = await client.expect("pusher:signin_success")
    assert inner(frame) == {"user_data": user_data}
    if subscribe_own:
        await client.subscribed(f"#server-to-user-{user_id}")
    return client


async def error_data(client: Client) -> dict[str, Any]:
    frame = await client.expect("pusher:error")
    data = frame["data"] if isinstance(frame["data"], dict) else inner(frame)
    assert isinstance(data["message"], str) and data["message"], frame
    return dict(data)


async def assert_terminated(client: Client, code: int = 4009) -> None:
    data = await error_data(client)
    assert data["code"] == code
    close_code, _ = await client.closed()
    assert close_code == code


# Sign-in ------------------------------------------------------------------------------------------


async def test_signin_success_echoes_the_signed_user_data(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    auth, user_data = signin_auth(signer, client.socket_id, {"id": "12345", "user_info": {"name": "Ann"}})
    await signin(client, auth, user_data)
    raw = await client.recv_text()
    frame = orjson.loads(raw)
    assert frame["event"] == "pusher:signin_success"
    assert isinstance(frame["data"], str)  # JSON-encoded like every server frame (§9.15)
    assert orjson.loads(frame["data"]) == {"user_data": user_data}  # the exact signed string
    assert server.node.users == {(APP.id, "12345"): {client.socket_id}}


def _wrong_secret(socket_id: str, signer: Any) -> tuple[str, str]:
    return signin_auth(auth_sdk(APP.id, APP.key, "wrong-secret"), socket_id, {"id": "1"})


def _other_socket(socket_id: str, signer: Any) -> tuple[str, str]:
    return signin_auth(signer, "1111.2222" if socket_id != "1111.2222" else "3333.4444", {"id": "1"})


def _tampered_user_data(socket_id: str, signer: Any) -> tuple[str, str]:
    auth, user_data = signin_auth(signer, socket_id, {"id": "1"})
    return auth, user_data.replace('"1"', '"2"')


def _channel_signature(socket_id: str, signer: Any) -> tuple[str, str]:
    return private_auth(signer, socket_id, "private-x"), '{"id": "1"}'


def _empty_auth(socket_id: str, signer: Any) -> tuple[str, str]:
    return "", '{"id": "1"}'


def _wrong_key(socket_id: str, signer: Any) -> tuple[str, str]:
    auth, user_data = signin_auth(signer, socket_id, {"id": "1"})
    return "other-key:" + auth.split(":", 1)[1], user_data


BAD_SIGNIN = {
    "wrong_secret": _wrong_secret,
    "other_socket_id": _other_socket,
    "tampered_user_data": _tampered_user_data,
    "channel_signature": _channel_signature,
    "empty_auth": _empty_auth,
    "wrong_key_part": _wrong_key,
}


@pytest.mark.parametrize(
    "user_data",
    [
        RawData("not json"),
        RawData('["id", "1"]'),
        RawData('{"name": "no id"}'),
        RawData('{"id": 42}'),
        RawData('{"id": ""}'),
        RawData('{"id": null}'),
        RawData('{"id": "' + "u" * 129 + '"}'),
    ],
    ids=["not_json", "array", "no_id", "numeric_id", "empty_id", "null_id", "id_too_long"],
)
async def test_signed_but_invalid_user_data_is_refused_without_closing(
    server: RelayServer, signer: Any, user_data: RawData
) -> None:
    client = await server.connect()
    auth, raw = signin_auth(signer, client.socket_id, user_data)
    assert raw == user_data.raw
    await signin(client, auth, raw)
    assert (await error_data(client))["code"] == 4009
    await client.expect_silence()
    assert not server.node.users
    # The socket can still sign in properly.
    auth, good = signin_auth(signer, client.socket_id, {"id": "1"})
    await signin(client, auth, good)
    await client.expect("pusher:signin_success")


async def test_second_signin_as_same_user_succeeds_again(server: RelayServer, signer: Any) -> None:
    client = await signed_in(server, signer, "1")
    auth, user_data = signin_auth(signer, client.socket_id, {"id": "1"})
    await signin(client, auth, user_data)
    await client.expect("pusher:signin_success")
    assert server.node.users == {(APP.id, "1"): {client.socket_id}}


async def test_second_signin_as_another_user_is_refused(server: RelayServer, signer: Any, api: Api) -> None:
    client = await signed_in(server, signer, "1")
    auth, user_data = signin_auth(signer, client.socket_id, {"id": "2"})
    await signin(client, auth, user_data)
    data = await error_data(client)
    assert data["code"] == 4009 and "another user" in data["message"]
    await client.expect_silence()  # not closed
    assert server.node.users == {(APP.id, "1"): {client.socket_id}}
    # Still user 1: cannot take user 2's channel, still gets user 1's events.
    await client.subscribe("#server-to-user-2")
    frame = await client.expect("pusher:subscription_error", "#server-to-user-2")
    assert frame["data"]["status"] == 401
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    await asyncio.to_thread(sdk.send_to_user, "1", "hello", {"to": 1})
    assert (await client.expect("hello", "#server-to-user-1"))["data"] == '{"to": 1}'


async def test_watchlist_over_100_keeps_signin_and_warns_4302(server: RelayServer, signer: Any) -> None:
    client = await server.connect()
    user = {"id": "1", "watchlist": [str(n) for n in range(101)]}
    auth, user_data = signin_auth(signer, client.socket_id, user)
    await signin(client, auth, user_data)
    await client.expect("pusher:signin_success")
    assert (await error_data(client))["code"] == 4302


# Server-to-user channel ---------------------------------------------------------------------------


async def test_server_to_user_channel_refused_without_signin(server: RelayServer) -> None:
    client = await server.connect()
    await client.subscribe("#server-to-user-7")
    frame = await client.expect("pusher:subscription_error", "#server-to-user-7")
    assert frame["data"]["type"] == "AuthError" and frame["data"]["status"] == 401
    await client.expect_silence()
    await client.subscribed("news")  # still usable


async def test_server_to_user_channel_of_another_user_refused(server: RelayServer, signer: Any, api: Api) -> None:
    mallory = await signed_in(server, signer, "8")
    await mallory.subscribe("#server-to-user-7")
    frame = await mallory.expect("pusher:subscription_error", "#server-to-user-7")
    assert frame["data"]["status"] == 401
    # Even with a channel signature from the app, the reserved channel stays closed.
    await mallory.subscribe("#server-to-user-7", private_auth(signer, mallory.socket_id, "private-7"))
    await mallory.expect("pusher:subscription_error", "#server-to-user-7")
    victim = await signed_in(server, signer, "7")
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    await asyncio.to_thread(sdk.send_to_user, "7", "secret", {"x": 1})
    await victim.expect("secret", "#server-to-user-7")
    await mallory.expect_silence()


async def test_send_to_user_reaches_all_of_the_users_connections_only(
    server: RelayServer, signer: Any, api: Api
) -> None:
    tabs = [await signed_in(server, signer, "7") for _ in range(3)]
    other = await signed_in(server, signer, "8")
    anonymous = await server.connect()
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    await asyncio.to_thread(sdk.send_to_user, "7", "greet", {"hi": 1})
    for tab in tabs:
        frame = await tab.expect("greet", "#server-to-user-7")
        assert frame["data"] == '{"hi": 1}'
        await tab.expect_silence()
    await other.expect_silence()
    await anonymous.expect_silence()


# Terminate ----------------------------------------------------------------------------------------


async def test_terminate_closes_all_the_users_connections_and_only_theirs(
    server: RelayServer, signer: Any, api: Api
) -> None:
    tabs = [await signed_in(server, signer, "7") for _ in range(3)]
    tabs.append(await signed_in(server, signer, "7", subscribe_own=False))
    other = await signed_in(server, signer, "8")
    presence_member = await server.connect()  # user_id 7 in presence only: not signed in, not terminated
    auth_reply = signer.authenticate(
        channel="presence-x", socket_id=presence_member.socket_id, custom_data={"user_id": "7"}
    )
    await presence_member.subscribed("presence-x", auth_reply["auth"], auth_reply["channel_data"])
    anonymous = await server.connect()
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    # The Python SDK's own route: POST /users/<id>/terminate_connections (no /apps/<id>, §9.16).
    assert await asyncio.to_thread(sdk.terminate_user_connections, "7") == {}
    for tab in tabs:
        await assert_terminated(tab)
    await wait_until(lambda: (APP.id, "7") not in server.node.users)
    for client in (other, presence_member, anonymous):
        await client.expect_silence()
    assert server.node.users == {(APP.id, "8"): {other.socket_id}}


async def test_terminate_through_the_apps_route(server: RelayServer, signer: Any, api: Api) -> None:
    client = await signed_in(server, signer, "7")
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    response = await api.send(build_request(sdk, "POST", f"/apps/{APP.id}/users/7/terminate_connections", {}))
    assert response.status == 200 and response.body == {}
    await assert_terminated(client)


async def test_terminate_unknown_user_is_harmless(server: RelayServer, signer: Any, api: Api) -> None:
    client = await signed_in(server, signer, "7")
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    assert await asyncio.to_thread(sdk.terminate_user_connections, "nobody") == {}
    await client.expect_silence()


# Sign-in required ---------------------------------------------------------------------------------


async def test_required_signin_closes_unsigned_connections_with_4009(relay_server: RelayServerFactory) -> None:
    timeout = 1.0
    server = await relay_server(replace(APP, user_authentication_timeout=timeout))
    signer = auth_sdk(APP.id, APP.key, APP.secret)
    started = time.monotonic()
    lazy = await server.connect()
    public_only = await server.connect()
    await public_only.subscribed("news")
    diligent = await signed_in(server, signer, "1")
    # Pusher's authorized connections: a private subscription in time counts like a sign-in (docs/protocol.md §2.6).
    authorized = await server.connect()
    await authorized.subscribed("private-orders", private_auth(signer, authorized.socket_id, "private-orders"))
    for client in (lazy, public_only):
        async with asyncio.timeout(scaled(timeout + 4)):
            data = await error_data(client)
        assert data["code"] == 4009
        close_code, _ = await client.closed()
        assert close_code == 4009
    assert time.monotonic() - started >= timeout * 0.9  # not closed before the deadline
    await diligent.expect_silence()  # signed in: kept
    await authorized.expect_silence()  # subscribed to a private channel in time: kept
    await wait_until(lambda: len(server.node.connections) == 2)
    assert set(server.node.connections) == {diligent.socket_id, authorized.socket_id}


async def test_signin_not_required_by_default(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, activity_timeout=60))
    assert APP.user_authentication_timeout == 0 and not APP.enable_user_authentication
    client = await server.connect()
    deadline = time.monotonic() + 1.5  # the sweeper ticks every second
    while time.monotonic() < deadline:
        await client.expect_silence()
        await asyncio.sleep(0.1)
    assert client.socket_id in server.node.connections
