"""pusher-js and Laravel Echo authorising through relay's JWT endpoints, with no app backend at all: one
token opens a private and a presence channel, is refused a channel its `allow` claim does not name, signs the
user in, and on the WebSocket URL (`?token=`) makes server-to-user events arrive at once. Tokens are made
by the npm `jose` library and by PyJWT."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Final

import pytest

from tests.clients.harness import APP_ID, APP_KEY, JS, Clients, app_config, python_sdk
from tests.jwt.tokens import JWT_SECRET, claims, jose_token, pyjwt_token
from tests.support import NodeClient, RelayProcess, scaled
from tests.support.fixtures import RelayFactory

pytestmark = pytest.mark.timeout(scaled(60))

JWT_CLIENT: Final[Path] = JS / "jwt_client.mjs"


@pytest.fixture
def relay(relay_factory: RelayFactory) -> RelayProcess:
    """relay with the test app authorising HS256 tokens (lean transport, as `relay serve` runs)."""
    return relay_factory(app_config(jwt={"secret": JWT_SECRET}))


async def jwt_client(clients: Clients, relay: RelayProcess, token: str, **params: Any) -> NodeClient:
    settings = {"ws_host": "127.0.0.1", "ws_port": relay.port, "app_id": APP_ID, "key": APP_KEY, "token": token}
    return await clients.start(JWT_CLIENT, {**settings, **params}, str(params.get("library", "pusher-js")))


def error_data(line: dict[str, Any]) -> dict[str, Any]:
    """The `{code, message}` of a pusher-js connection error line, {} for errors without one. A refusal
    during the handshake comes as a WebSocketError wrapping the PusherError."""
    error = line["error"]
    while isinstance(error, dict):
        if isinstance(error.get("data"), dict):
            return dict(error["data"])
        error = error.get("error")
    return {}


async def connected(client: NodeClient) -> None:
    await client.expect(type="connected", claim=False)


async def test_pusher_js_joins_private_and_presence_with_one_token_and_is_refused_others(
    relay: RelayProcess, clients: Clients
) -> None:
    client = await jwt_client(clients, relay, jose_token(claims()))
    await connected(client)
    await client.send({"op": "subscribe", "channel": "private-user.42"})
    await client.expect(type="subscribed", channel="private-user.42")
    await client.send({"op": "subscribe", "channel": "presence-room.7"})
    joined = await client.expect(type="subscribed", channel="presence-room.7")
    assert joined["members"] == {"my_id": "42", "me": {"id": "42", "info": {"name": "Ada"}}}
    await client.send({"op": "subscribe", "channel": "private-user.43"})
    refused = await client.expect(type="subscription_error", channel="private-user.43")
    assert refused["error"]["status"] == 403
    await client.send({"op": "state"})
    assert (await client.expect(type="state_report"))["state"] == "connected"


async def test_pusher_js_with_an_expired_token_is_refused_401(relay: RelayProcess, clients: Clients) -> None:
    client = await jwt_client(clients, relay, pyjwt_token(claims(exp=int(time.time()) - 60)))
    await connected(client)
    await client.send({"op": "subscribe", "channel": "private-user.42"})
    refused = await client.expect(type="subscription_error", channel="private-user.42")
    assert refused["error"]["status"] == 401


async def test_echo_with_bearer_token_joins_private_and_presence_and_signs_in(
    relay: RelayProcess, clients: Clients
) -> None:
    client = await jwt_client(clients, relay, pyjwt_token(claims()), library="echo")
    await connected(client)
    await client.send({"op": "echo", "kind": "private", "name": "user.42"})
    await client.expect(type="subscribed", channel="user.42")
    await client.send({"op": "echo", "kind": "presence", "name": "room.1"})
    here = await client.expect(type="here", channel="room.1")
    assert here["members"] == [{"name": "Ada"}]
    await client.send({"op": "echo", "kind": "private", "name": "user.43"})
    refused = await client.expect(type="subscription_error", channel="user.43")
    assert refused["error"]["status"] == 403
    await client.send({"op": "signin"})  # Echo's userAuthentication, with the bearer token Echo added
    success = await client.expect(type="message", event="pusher:signin_success")
    assert success["data"] == {"user_data": '{"id":"42","user_info":{"name":"Ada"}}'}


async def test_pusher_js_signin_through_relay_user_auth(relay: RelayProcess, clients: Clients) -> None:
    client = await jwt_client(clients, relay, jose_token(claims()))
    await connected(client)
    await client.send({"op": "signin"})
    success = await client.expect(type="message", event="pusher:signin_success")
    assert success["data"] == {"user_data": '{"id":"42","user_info":{"name":"Ada"}}'}
    await client.expect(type="message", event="pusher_internal:subscription_succeeded", channel="#server-to-user-42")
    await asyncio.to_thread(python_sdk(relay.port).send_to_user, "42", "greet", {"hi": 1})
    assert (await client.expect(type="user_event", event="greet"))["data"] == {"hi": 1}


async def test_token_in_url_receives_send_to_user_without_signin(relay: RelayProcess, clients: Clients) -> None:
    client = await jwt_client(clients, relay, pyjwt_token(claims()), token_in_url=True)
    await connected(client)
    await client.expect(type="message", event="pusher_internal:subscription_succeeded", channel="#server-to-user-42")
    await asyncio.to_thread(python_sdk(relay.port).send_to_user, "42", "notice", {"n": 1})
    assert (await client.expect(type="global_event", event="notice"))["data"] == {"n": 1}
    # pusher.signin() on top works as usual (relay's /user-auth), and pusher.user gets the events.
    await client.send({"op": "signin"})
    await client.expect(type="message", event="pusher:signin_success")
    await client.expect(type="message", event="pusher_internal:subscription_succeeded", channel="#server-to-user-42")
    await asyncio.to_thread(python_sdk(relay.port).send_to_user, "42", "again", {"n": 2})
    assert (await client.expect(type="user_event", event="again"))["data"] == {"n": 2}
    # The same connection authorises channels through the endpoint with its token.
    await client.send({"op": "subscribe", "channel": "presence-room.7"})
    joined = await client.expect(type="subscribed", channel="presence-room.7")
    assert not [line for line in client.seen_before(joined) if line["type"] == "fatal"]


async def test_expired_token_in_url_is_refused_4009_and_pusher_js_does_not_loop(
    relay: RelayProcess, clients: Clients
) -> None:
    client = await jwt_client(clients, relay, jose_token(claims(exp=int(time.time()) - 60)), token_in_url=True)
    error = await client.expect(lambda line: error_data(line).get("code") == 4009, type="error")
    assert "expired" in error_data(error)["message"]
    await client.expect(type="state", current="disconnected")
    await client.send({"op": "state"})
    report = await client.expect(type="state_report")
    assert (report["state"], report["retry_scheduled"]) == ("disconnected", False)
    assert not client.seen_before(report) or all(line.get("type") != "connected" for line in client.seen_before(report))
