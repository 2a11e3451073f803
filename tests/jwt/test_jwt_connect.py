"""A token on the WebSocket URL (`?token=`) signs the connection in at connect: the subscription to the user's
own server-to-user channel follows `connection_established` at once, so `send_to_user` reaches it with no
client round trip. No `signin_success` is sent (pusher-js fails on one it did not ask for); a client that
signs in afterwards as the same user is answered as usual. A bad token is refused with `pusher:error` 4009
and close 4009 (pusher-js does not retry those); JWKS trouble is 4100 (pusher-js backs off and retries)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from tests.integration.wire import PUSHER_JS_QUERY, Client, connect, inner, open_socket
from tests.jwt.conftest import JWT_APP, AuthClient, metric_samples, server_sdk, with_jwt
from tests.jwt.tokens import JWT_SECRET, claims, jose_token, jwks_server, pyjwt_token, rsa_pair
from tests.support.inprocess import APP, RelayServer, RelayServerFactory

pytestmark = pytest.mark.timeout(30)


async def connect_with_token(server: RelayServer, token: str, name: str = "token") -> Client:
    return await open_socket(server.ws_url(query=f"{PUSHER_JS_QUERY}&{name}={token}"))


async def expect_signed_in(client: Client, user_id: str = "42") -> None:
    established = await client.expect("pusher:connection_established")
    client.socket_id = inner(established)["socket_id"]
    await client.expect("pusher_internal:subscription_succeeded", f"#server-to-user-{user_id}")


async def expect_refused(client: Client, code: int, check_text: str) -> None:
    frame = await client.expect("pusher:error")
    data = frame["data"]
    assert data["code"] == code
    assert check_text in data["message"]
    assert await client.closed() == (code, data["message"])


@pytest.mark.parametrize("make", [pyjwt_token, jose_token], ids=["pyjwt", "jose"])
async def test_token_at_connect_receives_send_to_user_at_once(server: RelayServer, make: Any) -> None:
    client = await connect_with_token(server, make(claims()))
    await expect_signed_in(client)
    sdk = server_sdk(server)
    await asyncio.to_thread(sdk.send_to_user, "42", "notice", {"n": 1})
    frame = await client.expect("notice", "#server-to-user-42")
    assert inner(frame) == {"n": 1}


async def test_signin_as_the_same_user_afterwards_is_answered_as_usual(
    server: RelayServer, http: aiohttp.ClientSession
) -> None:
    # pusher.signin() on a token connection: relay's user-auth answer, signin_success, then pusher-js
    # subscribes to #server-to-user-<id> itself, which must just succeed again.
    client = await connect_with_token(server, pyjwt_token(claims()))
    await expect_signed_in(client)
    status, answer = await AuthClient(http, server.port).user(pyjwt_token(claims()), client.socket_id)
    assert status == 200
    await client.send({"event": "pusher:signin", "data": answer})
    assert inner(await client.expect("pusher:signin_success")) == {"user_data": answer["user_data"]}
    await client.subscribed("#server-to-user-42")
    await client.expect_silence()


async def test_signin_as_another_user_afterwards_is_refused(server: RelayServer, http: aiohttp.ClientSession) -> None:
    client = await connect_with_token(server, pyjwt_token(claims()))
    await expect_signed_in(client)
    status, answer = await AuthClient(http, server.port).user(pyjwt_token(claims(sub="43")), client.socket_id)
    assert status == 200
    await client.send({"event": "pusher:signin", "data": answer})
    frame = await client.expect("pusher:error")
    assert frame["data"]["code"] == 4009


async def test_terminate_user_closes_the_token_connection(server: RelayServer) -> None:
    client = await connect_with_token(server, pyjwt_token(claims()))
    await expect_signed_in(client)
    sdk = server_sdk(server)
    await asyncio.to_thread(sdk.terminate_user_connections, "42")
    await expect_refused(client, 4009, "disconnected")


@pytest.mark.parametrize(
    ("make_token", "text"),
    [  # made when the test runs: made at collection, they would have expired before a long suite got here
        (lambda: pyjwt_token(claims(exp=int(time.time()) - 60)), "expired"),
        (lambda: pyjwt_token(claims(), key="a-different-secret-of-32-bytes-or-more"), "signature"),
        (lambda: "not-a-token", "well-formed"),
        (lambda: pyjwt_token(claims(sub=None)), "sub"),
    ],
    ids=["expired", "wrong_secret", "malformed", "missing_sub"],
)
async def test_bad_token_at_connect_is_refused_with_4009(
    server: RelayServer, make_token: Callable[[], str], text: str
) -> None:
    client = await connect_with_token(server, make_token())
    await expect_refused(client, 4009, text)
    failures = metric_samples(server, "relay_jwt_auth_failures_total")
    assert sum(failures.values()) == 1
    refused = metric_samples(server, "relay_connections_refused_total")
    assert refused == {(("app_id", APP.id), ("reason", "token")): 1.0}
    assert not server.node.connections


async def test_connection_without_token_is_not_signed_in(server: RelayServer) -> None:
    client = await connect(server.ws_url())
    await client.expect_silence()


async def test_app_without_jwt_ignores_the_parameter(relay_server: RelayServerFactory) -> None:
    server = await relay_server(APP)
    client = await connect(server.ws_url(query=f"{PUSHER_JS_QUERY}&token=whatever"))
    await client.expect_silence()


async def test_query_parameter_name_is_configurable(relay_server: RelayServerFactory) -> None:
    server = await relay_server(with_jwt(secret=JWT_SECRET, query_parameter="jwt"))
    client = await connect_with_token(server, pyjwt_token(claims()), name="jwt")
    await expect_signed_in(client)
    ignored = await connect(server.ws_url(query=f"{PUSHER_JS_QUERY}&token=not-a-token"))
    await ignored.expect_silence()


async def test_jwks_unavailable_at_connect_is_4100(relay_server: RelayServerFactory) -> None:
    pair = rsa_pair()
    async with jwks_server({**pair.jwk, "kid": "k1"}) as jwks:
        jwks.mode = "error"
        server = await relay_server(with_jwt(jwks_url=jwks.url))
        client = await connect_with_token(server, pyjwt_token(claims(), pair.private_pem, "RS256", kid="k1"))
        await expect_refused(client, 4100, "JWKS")


async def test_user_id_too_long_for_the_protocol_is_refused(server: RelayServer) -> None:
    client = await connect_with_token(server, pyjwt_token(claims(sub="7" * 129)))
    await expect_refused(client, 4009, "sub")


async def test_required_sign_in_is_met_by_the_token(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(JWT_APP, user_authentication_timeout=1.0))
    client = await connect_with_token(server, pyjwt_token(claims()))
    await expect_signed_in(client)
    await asyncio.sleep(2.2)  # past the deadline: a connection that had not signed in would be closed by now
    await client.expect_silence()
